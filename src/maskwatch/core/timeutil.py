"""Time in one place: aware UTC datetimes, ISO-8601 text with ``Z``, compact stamps for file names, and the
site's time zone (an IANA name: what "today", daily rollups and alert active hours mean)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, tzinfo

__all__ = ["day_stamp", "iso", "local_day_start", "now_iso", "parse_time", "run_stamp", "site_zone", "utc"]


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


def site_zone(name: str | None) -> tzinfo:
    """The time zone named ``name`` (IANA, e.g. ``Europe/Paris``; ``UTC`` or None: UTC). ValueError for an
    unknown name."""
    if not name or name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris, or UTC)") from exc


def local_day_start(seconds: float, zone: tzinfo) -> int:
    """Epoch seconds of the midnight in ``zone`` that starts the local day holding ``seconds`` (days are
    23 or 25 hours long across a daylight-saving change)."""
    local = datetime.fromtimestamp(seconds, zone)
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
