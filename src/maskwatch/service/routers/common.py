"""Small helpers shared by the routers: time parameters and database errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy.exc import InterfaceError, OperationalError

from maskwatch.service.errors import ApiError


def to_ts(value: datetime | None) -> float | None:
    """A query datetime (ISO 8601 or epoch seconds; naive means UTC) as epoch seconds."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.timestamp()
    except (OverflowError, OSError, ValueError) as exc:
        raise ApiError(422, "invalid", f"time out of range: {value}") from exc


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def db_errors() -> Iterator[None]:
    """A database outage is a 503 with a reason, not a 500."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise ApiError(503, "database_unavailable", "the database is unreachable; try again shortly") from exc
