"""Person events (the engine's ``track_ended``, stored by the ingestor): pages with filters, one event by
row id or event id, false-positive marks, erasure by filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, delete, func, select
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

    def apply(self, q: Select[Any]) -> Select[Any]:
        """``q`` restricted to the events this filter selects."""
        if self.camera:
            q = q.where(PersonEvent.camera == self.camera)
        if self.verdict == "compliant":
            q = q.where(PersonEvent.compliant.is_(True))
        elif self.verdict == "noncompliant":
            q = q.where(PersonEvent.compliant.is_(False))
        elif self.verdict:
            q = q.where(PersonEvent.label == self.verdict)
        if self.start is not None:
            q = q.where(PersonEvent.ts >= self.start)
        if self.end is not None:
            q = q.where(PersonEvent.ts < self.end)
        if self.false_positive is not None:
            q = q.where(PersonEvent.false_positive.is_(self.false_positive))
        return q


@dataclass(frozen=True)
class WindowCount:
    """People whose track ended on a camera within a window, and how many of them were compliant."""

    people: int
    compliant: int
    last_unmasked: float | None = None  # the latest last-seen time of a person without a mask in the window


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
                func.max(case((PersonEvent.compliant, None), else_=PersonEvent.ts)),
            )
            .where(PersonEvent.ts >= since)
            .group_by(PersonEvent.camera)
        )
        with self.sessions() as s:
            return {
                camera: WindowCount(int(n), int(ok or 0), None if last is None else float(last))
                for camera, n, ok, last in s.execute(query)
            }

    def page(self, where: EventFilter, *, before: int | None, limit: int) -> list[PersonEvent]:
        """Newest first: up to ``limit`` events with a row id below ``before``."""
        q = where.apply(select(PersonEvent).order_by(PersonEvent.id.desc()).limit(limit))
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

    def erase(self, where: EventFilter) -> tuple[int, list[str]]:
        """Delete the events ``where`` selects, in one transaction; returns how many, and their snapshots'
        references (the caller deletes the files)."""
        with self.sessions() as s, s.begin():
            rows = list(s.scalars(where.apply(select(PersonEvent))))
            ids = [row.id for row in rows]
            refs = [row.snapshot for row in rows if row.snapshot is not None]
            for start in range(0, len(ids), 500):
                s.execute(delete(PersonEvent).where(PersonEvent.id.in_(ids[start : start + 500])))
        return len(ids), refs
