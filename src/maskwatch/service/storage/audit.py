"""The audit log: who did what, when, from where."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from sqlalchemy import select

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import AuditEntry

__all__ = ["AuditLog"]

log = logging.getLogger("maskwatch.service")


class AuditLog:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def record(
        self,
        actor: str,
        role: str,
        action: str,
        target: str | None = None,
        detail: Mapping[str, object] | None = None,
        ip: str | None = None,
    ) -> None:
        """Best effort: an unreachable database must not fail the action itself (logged instead)."""
        try:
            with self.sessions() as s, s.begin():
                s.add(
                    AuditEntry(
                        ts=time.time(),
                        actor=actor,
                        role=role,
                        action=action,
                        target=target,
                        detail=None if detail is None else dict(detail),
                        ip=ip,
                    )
                )
        except Exception:
            log.exception("audit entry not written: %s %s", action, target)

    def page(self, *, before: int | None, limit: int) -> list[AuditEntry]:
        """Newest first: up to ``limit`` entries with an id below ``before``."""
        q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if before is not None:
            q = q.where(AuditEntry.id < before)
        with self.sessions() as s:
            return list(s.scalars(q))
