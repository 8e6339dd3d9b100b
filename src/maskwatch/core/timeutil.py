"""Time in one place: aware UTC datetimes, ISO-8601 text with ``Z``, and compact stamps for file names."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["day_stamp", "iso", "now_iso", "parse_time", "run_stamp", "utc"]


def utc(seconds: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def iso(seconds: float | None) -> str | None:
    """``2026-12-07T03:11:09.5Z`` (UTC, ``Z``), or None."""
    return None if seconds is None else utc(seconds).isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    """Now, in UTC, to the second: ``2026-12-07T03:11:09Z`` (metadata of checkpoints, exports, calibration)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def day_stamp(seconds: float | None = None) -> str:
    """``20261207`` (UTC): folders of stored media."""
    return time.strftime("%Y%m%d", time.gmtime(seconds))


def run_stamp(seconds: float | None = None) -> str:
    """``20261207-031109`` (local time, as people name runs): default run folders."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(seconds))


def parse_time(value: str | float | datetime) -> datetime:
    """An aware datetime from ISO text, epoch seconds or a datetime. A naive value is UTC, never the
    server's local zone (a node's clock and the control room's zone may differ)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float):
        return utc(float(value))
    else:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
