"""Batch jobs' records (``POST /jobs``): state, progress and summary, kept across restarts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, update

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import JobRecord

__all__ = ["JobRepository"]


class JobRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def save(self, values: dict[str, Any]) -> None:
        """Insert or overwrite a job's record (``values``: its columns)."""
        with self.sessions() as s, s.begin():
            s.merge(JobRecord(**values))

    def unfinished_of(self, owners: Iterable[str]) -> set[str]:
        """Ids of the jobs queued or running on the workers ``owners``."""
        query = select(JobRecord.id).where(
            JobRecord.state.in_(("queued", "running")), JobRecord.owner.in_(list(owners))
        )
        with self.sessions() as s:
            return set(s.scalars(query))

    def get(self, job_id: str) -> JobRecord | None:
        with self.sessions() as s:
            return s.get(JobRecord, job_id)

    def newest(self, limit: int) -> list[JobRecord]:
        with self.sessions() as s:
            return list(s.scalars(select(JobRecord).order_by(JobRecord.created_ts.desc()).limit(limit)))

    def interrupt_unfinished(self, error: str, now: float, *, alive: Iterable[str] = ()) -> list[str]:
        """Mark every job left queued or running by a worker that is not ``alive`` (stopped, crashed, or a
        record without an owner) interrupted; their ids. Jobs of live workers are theirs."""
        alive = list(alive)
        query = select(JobRecord.id).where(JobRecord.state.in_(("queued", "running")))
        if alive:
            query = query.where(JobRecord.owner.is_(None) | JobRecord.owner.not_in(alive))
        with self.sessions() as s, s.begin():
            ids = list(s.scalars(query))
            if ids:
                s.execute(
                    update(JobRecord)
                    .where(JobRecord.id.in_(ids))
                    .values(state="interrupted", error=error, finished_ts=now)
                )
        return ids

    def delete_finished_before(self, states: Iterable[str], before: float) -> list[tuple[str, str | None]]:
        """Delete finished jobs created before ``before``; their (id, events file)."""
        with self.sessions() as s, s.begin():
            rows = s.execute(
                select(JobRecord.id, JobRecord.events_file).where(
                    JobRecord.state.in_(tuple(states)), JobRecord.created_ts < before
                )
            ).all()
            for i in range(0, len(rows), 500):
                s.execute(delete(JobRecord).where(JobRecord.id.in_([r.id for r in rows[i : i + 500]])))
        return [(row.id, row.events_file) for row in rows]
