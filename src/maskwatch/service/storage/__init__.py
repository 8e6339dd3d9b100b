"""Storage: the database (SQLAlchemy 2, Alembic migrations) and one repository per aggregate. Every SQL
statement of the service lives under this package; the rest of the service calls repository methods.

:class:`Storage` is the component: it opens the database in its constructor (no connection yet), migrates
it in :meth:`Storage.start` and closes its pool in :meth:`Storage.stop`. Repositories are plain attributes:

=================  ========================================================================================
``cameras``        the cameras the service runs (:class:`CameraRepository`)
``events``         person events, the engine's ``track_ended`` (:class:`EventRepository`)
``stats``          stats buckets and their rollups, read for charts and the fleet view (:class:`StatsRepository`)
``alerts``         alert rules, alerts, webhook deliveries (:class:`AlertRepository`)
``tokens``         API tokens and browser sessions (:class:`TokenRepository`)
``audit``          who did what (:class:`AuditLog`)
``jobs``           batch jobs' records (:class:`JobRepository`)
``retention``      deleting what is older than its period (:class:`RetentionRepository`)
``leases``         who runs which camera, who evaluates the alerts, which workers live (:class:`LeaseRepository`)
``dead_letters``   what could not be stored, with the reason (:class:`DeadLetterRepository`)
=================  ========================================================================================

Event *writes* go through :class:`~maskwatch.service.storage.ingest.Ingestor` (buffered, batched, idempotent).
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text

from maskwatch.core.redaction import redact
from maskwatch.service.storage.alerts import AlertRepository
from maskwatch.service.storage.audit import AuditLog
from maskwatch.service.storage.cameras import CameraRepository
from maskwatch.service.storage.db import Sessions, migrate, open_db, session_factory
from maskwatch.service.storage.dead_letters import DeadLetterRepository
from maskwatch.service.storage.events import EventRepository
from maskwatch.service.storage.jobs import JobRepository
from maskwatch.service.storage.leases import LeaseRepository
from maskwatch.service.storage.retention import RetentionRepository
from maskwatch.service.storage.stats import StatsRepository
from maskwatch.service.storage.tokens import TokenRepository

__all__ = ["Sessions", "Storage", "migrate", "open_db", "session_factory"]

log = logging.getLogger("maskwatch.service")


class Storage:
    """The service's database and its repositories. ``url``: a SQLAlchemy URL (SQLite or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = open_db(url)
        self.sessions: Sessions = session_factory(self.engine)
        self.cameras = CameraRepository(self.sessions)
        self.events = EventRepository(self.sessions)
        self.stats = StatsRepository(self.sessions)
        self.alerts = AlertRepository(self.sessions)
        self.tokens = TokenRepository(self.sessions)
        self.audit = AuditLog(self.sessions)
        self.jobs = JobRepository(self.sessions)
        self.retention = RetentionRepository(self.sessions)
        self.leases = LeaseRepository(self.sessions)
        self.dead_letters = DeadLetterRepository(self.sessions)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden (for logs)."""
        return redact(self.url)

    def start(self) -> None:
        """Bring the schema up to date (a no-op when it is)."""
        migrate(self.engine)

    def stop(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers ``SELECT 1``."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False
