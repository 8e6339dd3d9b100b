"""Storage: SQLAlchemy 2 models, Alembic migrations, idempotent ingest of engine events, queries."""

from maskwatch.service.storage.db import migrate, open_db, session_factory

__all__ = ["migrate", "open_db", "session_factory"]
