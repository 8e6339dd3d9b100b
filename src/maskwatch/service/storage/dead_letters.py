"""Dead letters: what the control room could not store (an MQTT message it cannot read, an event the
database refused), kept with the reason so that nothing is acknowledged into nothing. The same message again
(a node resends what was not acknowledged) adds to its row's ``count``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError

from maskwatch.service.storage.db import Sessions, commit_durably
from maskwatch.service.storage.models import DeadLetter

__all__ = ["DeadLetterCount", "DeadLetterRepository", "Letter"]


@dataclass(frozen=True)
class Letter:
    """One message that could not be stored."""

    reason: str
    payload: bytes
    detail: str = ""
    topic: str | None = None  # None: refused by storage, after its topic was read
    node: str | None = None
    event_id: str | None = None
    size: int | None = None  # the payload's full size (default: what is given)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.reason.encode(), (self.topic or "").encode(), self.payload):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()


@dataclass(frozen=True)
class DeadLetterCount:
    reason: str
    letters: int  # rows
    messages: int  # arrivals (rows x their counts)


class DeadLetterRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def record(self, letter: Letter, now: float) -> int:
        """Store ``letter`` (or count it again when the same message is here); returns how many times it
        has arrived (1: a new letter)."""
        try:
            return self._record(letter, now)
        except IntegrityError:  # another worker stored the same message at the same moment: count it there
            return self._record(letter, now)

    def _record(self, letter: Letter, now: float) -> int:
        digest = letter.digest
        with self.sessions() as s, s.begin():
            commit_durably(s)  # the message is acknowledged once its letter is recorded
            row = s.scalars(select(DeadLetter).where(DeadLetter.digest == digest).with_for_update()).first()
            if row is None:
                row = DeadLetter(
                    digest=digest,
                    reason=letter.reason[:32],
                    topic=letter.topic,
                    node=None if letter.node is None else letter.node[:64],
                    event_id=None if letter.event_id is None else letter.event_id[:64],
                    detail=letter.detail,
                    payload=letter.payload,
                    size=len(letter.payload) if letter.size is None else letter.size,
                    count=1,
                    first_ts=now,
                    last_ts=now,
                )
                s.add(row)
            else:
                row.count += 1
                row.last_ts = now
                row.detail = letter.detail
            s.flush()
            return row.count

    def page(self, *, reason: str | None = None, before: int | None = None, limit: int = 50) -> list[DeadLetter]:
        """Newest first: up to ``limit`` letters with a row id below ``before``."""
        q = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if reason:
            q = q.where(DeadLetter.reason == reason)
        if before is not None:
            q = q.where(DeadLetter.id < before)
        with self.sessions() as s:
            return list(s.scalars(q))

    def get(self, letter_id: int) -> DeadLetter | None:
        with self.sessions() as s:
            return s.get(DeadLetter, letter_id)

    def counts(self) -> list[DeadLetterCount]:
        """Per reason: letters and the messages they stand for."""
        q = select(DeadLetter.reason, func.count(), func.sum(DeadLetter.count)).group_by(DeadLetter.reason)
        with self.sessions() as s:
            rows = s.execute(q.order_by(DeadLetter.reason)).all()
        return [DeadLetterCount(reason, int(n), int(total or 0)) for reason, n, total in rows]

    def delete(self, letter_id: int) -> bool:
        """Forget one letter (an operator has dealt with it); False when there is none."""
        with self.sessions() as s, s.begin():
            result = cast("CursorResult[Any]", s.execute(delete(DeadLetter).where(DeadLetter.id == letter_id)))
            return bool(result.rowcount)
