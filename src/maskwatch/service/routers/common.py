"""Small pieces shared by the routers: time parameters, and the answers several routes give."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel

from maskwatch.service.auth import Principal
from maskwatch.service.errors import ApiError
from maskwatch.service.live import Live

__all__ = ["BINARY", "Ok", "binary", "stream_slot", "to_ts"]

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


def stream_slot(live: Live, principal: Principal) -> Callable[[], None]:
    """One of the caller's live-stream slots (``limits.streams_per_token``), else 429."""
    release = live.streams.open(principal.token_id)
    if release is None:
        raise ApiError(
            429,
            "too_many_streams",
            f"this token holds {live.streams.per_key} live streams open already (limits.streams_per_token); "
            "close one first",
            headers={"Retry-After": "5"},
        )
    return release
