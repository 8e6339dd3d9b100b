"""Small pieces shared by the routers: time parameters, and the answers several routes give."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from maskwatch.service.errors import ApiError

__all__ = ["BINARY", "Ok", "binary", "to_ts"]

#: an OpenAPI schema for bytes (images, CSV, Prometheus text, streams)
BINARY: dict[str, object] = {"type": "string", "format": "binary"}


def binary(media_type: str, description: str) -> dict[int | str, dict[str, object]]:
    """The ``responses`` of a route answering ``media_type`` bytes (its errors stay JSON)."""
    return {200: {"description": description, "content": {media_type: {"schema": BINARY}}}}


class Ok(BaseModel):
    """An action done, nothing more to say."""

    ok: bool = True


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
