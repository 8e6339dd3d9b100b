"""Alembic environment: the service passes its SQLAlchemy engine in ``config.attributes["engine"]``."""

from __future__ import annotations

from alembic import context

from maskwatch.service.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=connection.dialect.name == "sqlite"
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `maskwatch serve` to migrate")
run_migrations_online()
