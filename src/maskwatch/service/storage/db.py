"""Opening the database and migrating it (Alembic, scripts shipped inside the package).

SQLite (the default, a file in the data dir) runs in WAL mode, so the API reads while ingest writes;
PostgreSQL comes by URL (``postgresql://user@host:port/db``, driven by psycopg 3).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "MIGRATIONS",
    "OutageLog",
    "Sessions",
    "alembic_config",
    "commit_durably",
    "current_revision",
    "dialect_insert",
    "migrate",
    "normalise_url",
    "open_db",
    "session_factory",
]

log = logging.getLogger("maskwatch.service")

MIGRATIONS = Path(__file__).with_name("migrations")

#: what every repository holds: a factory of sessions bound to the service's database
Sessions = sessionmaker[Session]


class OutageLog:
    """One log line per database outage for a place that keeps failing while the database is away (a page
    polled every few seconds): the first failure is logged, the next ones only after ``quiet`` seconds
    without any failure (a new outage)."""

    def __init__(self, where: str, then: str, quiet: float = 60.0) -> None:
        self.where = where
        self.then = then
        self.quiet = quiet
        self._last: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            new = self._last is None or now - self._last > self.quiet
            self._last = now
        if new:
            log.warning("%s: the database is unreachable (%s); %s", self.where, type(exc).__name__, self.then)


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` use psycopg 3 (the only PostgreSQL driver installed)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def open_db(url: str) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 5})


def dialect_insert(session: Session, model: type) -> Any:
    """``INSERT`` with the dialect's ``ON CONFLICT`` clauses (SQLite and PostgreSQL spell them alike)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(model)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(model)


def commit_durably(session: Session) -> None:
    """Make the session's transaction commit only once it is on disk, whatever the server's
    ``synchronous_commit``: a PostgreSQL set to ``off`` for speed answers a commit it can still lose in a
    crash, and what this transaction stores is then acknowledged to a node or forgotten by the spool (the
    chaos soak lost six acknowledged person events that way when PostgreSQL was killed right after their
    commit). One statement per transaction. SQLite needs nothing: WAL with ``synchronous=NORMAL`` keeps a
    commit through a killed process."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO on"))


def session_factory(engine: Engine) -> Sessions:
    """Sessions whose objects stay readable after commit (repositories hand rows to their callers)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (run at every start; a no-op when up to date)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
