"""Person events (the engine's ``track_ended``, stored by the ingestor): pages with filters, one event by
row id or event id, false-positive marks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import PersonEvent

__all__ = ["EventFilter", "EventRepository", "WindowCount", "row_id"]


def row_id(text: str) -> int | None:
    """A database row id written in ASCII digits (``'¹'.isdigit()`` is true too), small enough for SQLite."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


@dataclass(frozen=True)
class EventFilter:
    """What a page of events is restricted to; ``verdict``: a class name, ``compliant`` or ``noncompliant``."""

    camera: str | None = None
    verdict: str | None = None
    start: float | None = None
    end: float | None = None
    false_positive: bool | None = None


@dataclass(frozen=True)
class WindowCount:
    """People whose track ended on a camera within a window, and how many of them were compliant."""

    people: int
    compliant: int


class EventRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def people_since(self, since: float) -> dict[str, WindowCount]:
        """Per camera, the people last seen at or after ``since`` (every worker's, as stored): what the
        ``compliance_below`` and ``unmasked_person`` rules read."""
        query = (
            select(
                PersonEvent.camera,
                func.count(PersonEvent.id),
                func.sum(case((PersonEvent.compliant, 1), else_=0)),
            )
            .where(PersonEvent.ts >= since)
            .group_by(PersonEvent.camera)
        )
        with self.sessions() as s:
            return {camera: WindowCount(int(n), int(ok or 0)) for camera, n, ok in s.execute(query)}

    def page(self, where: EventFilter, *, before: int | None, limit: int) -> list[PersonEvent]:
        """Newest first: up to ``limit`` events with a row id below ``before``."""
        q = select(PersonEvent).order_by(PersonEvent.id.desc()).limit(limit)
        if where.camera:
            q = q.where(PersonEvent.camera == where.camera)
        if where.verdict == "compliant":
            q = q.where(PersonEvent.compliant.is_(True))
        elif where.verdict == "noncompliant":
            q = q.where(PersonEvent.compliant.is_(False))
        elif where.verdict:
            q = q.where(PersonEvent.label == where.verdict)
        if where.start is not None:
            q = q.where(PersonEvent.ts >= where.start)
        if where.end is not None:
            q = q.where(PersonEvent.ts < where.end)
        if where.false_positive is not None:
            q = q.where(PersonEvent.false_positive.is_(where.false_positive))
        if before is not None:
            q = q.where(PersonEvent.id < before)
        with self.sessions() as s:
            return list(s.scalars(q))

    @staticmethod
    def _find(s: Session, key: str) -> PersonEvent | None:
        found = None
        number = row_id(key)
        if number is not None:
            found = s.get(PersonEvent, number)
        if found is None:
            found = s.scalars(select(PersonEvent).where(PersonEvent.event_id == key[:64])).first()
        return found

    def find(self, key: str) -> PersonEvent | None:
        """An event by its row id (digits) or its event id."""
        with self.sessions() as s:
            return self._find(s, key)

    def mark_false_positive(self, key: str, value: bool) -> PersonEvent | None:
        with self.sessions() as s, s.begin():
            found = self._find(s, key)
            if found is not None:
                found.false_positive = value
        return found
