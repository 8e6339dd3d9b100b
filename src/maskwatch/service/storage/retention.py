"""Deleting what is older than its retention period, in one transaction per purge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update

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


class RetentionRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def purge(self, cut: Cutoffs, delete_media: Callable[[list[str]], int]) -> dict[str, int]:
        """Delete old rows; snapshots first (``delete_media`` removes their files; their events keep no
        reference). Returns rows deleted per table (``snapshots``: files)."""
        plan = [
            (PersonEvent, PersonEvent.ts, cut.events),
            (Ingested, Ingested.ts, cut.buckets),
            (StatsBucket, StatsBucket.start_ts, cut.buckets),
            (StatsRollup, StatsRollup.start_ts, cut.rollups),
            (AuditEntry, AuditEntry.ts, cut.audit),
            (WebhookDelivery, WebhookDelivery.ts, cut.audit),
            (DeadLetter, DeadLetter.last_ts, cut.audit),
        ]
        counts: dict[str, int] = {}
        with self.sessions() as s, s.begin():
            rows = s.execute(
                select(PersonEvent.id, PersonEvent.snapshot).where(
                    PersonEvent.snapshot.is_not(None), PersonEvent.ts < cut.media
                )
            ).all()
            counts["snapshots"] = delete_media([ref for _, ref in rows if ref is not None])
            ids = [row_id for row_id, _ in rows]
            for i in range(0, len(ids), 500):
                s.execute(update(PersonEvent).where(PersonEvent.id.in_(ids[i : i + 500])).values(snapshot=None))
            for model, column, cutoff in plan:
                result = cast("CursorResult[Any]", s.execute(delete(model).where(column < cutoff)))
                counts[model.__tablename__] = max(0, result.rowcount or 0)
            s.execute(delete(SessionRow).where(SessionRow.expires_ts < cut.sessions))
        return counts
