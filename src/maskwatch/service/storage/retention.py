"""Deleting what is older than its retention period, in small transactions: each deletes at most
``batch`` rows and a short pause follows, so a purge of months of rows never holds the database's write
lock (SQLite has one for the whole file) for longer than one batch takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import InstrumentedAttribute

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import (
    AuditEntry,
    DeadLetter,
    Ingested,
    PersonEvent,
    StatsBucket,
    StatsRollup,
    WebhookDelivery,
)
from maskwatch.service.storage.models import Session as SessionRow

__all__ = ["Cutoffs", "RetentionRepository"]


@dataclass(frozen=True)
class Cutoffs:
    """Epoch seconds: rows older than these go."""

    events: float  # person events
    media: float  # their snapshots (the events stay until ``events``)
    buckets: float  # raw stats buckets (and the ids of stored stats events)
    rollups: float
    audit: float  # the audit log, webhook deliveries and dead letters
    sessions: float  # browser sessions that expired before this


@dataclass(frozen=True)
class _Step:
    batch: int  # rows per transaction
    pause: float  # seconds between transactions
    stopping: Callable[[], bool]


class RetentionRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def purge(
        self,
        cut: Cutoffs,
        delete_media: Callable[[list[str]], int],
        *,
        batch: int = 2000,
        pause: float = 0.02,
        stopping: Callable[[], bool] = lambda: False,
    ) -> dict[str, int]:
        """Delete old rows; snapshots first (``delete_media`` removes their files; their events keep no
        reference). ``batch``: rows per transaction; ``pause``: seconds between transactions (writers get
        their turn); ``stopping``: a purge in progress ends early when it turns true (the service stops).
        Returns rows deleted per table (``snapshots``: files)."""
        step = _Step(batch, pause, stopping)
        counts: dict[str, int] = {"snapshots": self._snapshots(cut.media, delete_media, step)}
        plan: list[tuple[type[Any], InstrumentedAttribute[Any], ColumnElement[bool]]] = [
            (PersonEvent, PersonEvent.id, PersonEvent.ts < cut.events),
            (Ingested, Ingested.event_id, Ingested.ts < cut.buckets),
            (StatsBucket, StatsBucket.id, StatsBucket.start_ts < cut.buckets),
            (StatsRollup, StatsRollup.id, StatsRollup.start_ts < cut.rollups),
            (AuditEntry, AuditEntry.id, AuditEntry.ts < cut.audit),
            (WebhookDelivery, WebhookDelivery.id, WebhookDelivery.ts < cut.audit),
            (SessionRow, SessionRow.id, SessionRow.expires_ts < cut.sessions),
            (DeadLetter, DeadLetter.id, DeadLetter.last_ts < cut.audit),
        ]
        for model, key, old in plan:
            counts[model.__tablename__] = self._delete(model, key, old, step)
        counts.pop("sessions", None)
        return counts

    def _delete(self, model: type[Any], key: InstrumentedAttribute[Any], old: ColumnElement[bool], step: _Step) -> int:
        """Delete the rows matching ``old``, ``batch`` at a time (by primary key), one transaction each."""
        total = 0
        while not step.stopping():
            with self.sessions() as s, s.begin():
                keys = list(s.scalars(select(key).where(old).limit(step.batch)))
                if keys:
                    s.execute(delete(model).where(key.in_(keys)))
            total += len(keys)
            if len(keys) < step.batch:
                break
            time.sleep(step.pause)
        return total

    def _snapshots(self, before: float, delete_media: Callable[[list[str]], int], step: _Step) -> int:
        """Delete the snapshot files of events older than ``before`` and forget them, a batch at a time."""
        deleted = 0
        while not step.stopping():
            with self.sessions() as s, s.begin():
                rows = s.execute(
                    select(PersonEvent.id, PersonEvent.snapshot)
                    .where(PersonEvent.snapshot.is_not(None), PersonEvent.ts < before)
                    .limit(step.batch)
                ).all()
                deleted += delete_media([ref for _, ref in rows if ref is not None])
                if rows:
                    ids = [row_id for row_id, _ in rows]
                    s.execute(update(PersonEvent).where(PersonEvent.id.in_(ids)).values(snapshot=None))
            if len(rows) < step.batch:
                break
            time.sleep(step.pause)
        return deleted
