"""Compliance and people over time, from stored stats buckets and their rollups only (never a scan of raw
events): 1-minute points from the buckets, hourly and daily ones from the rollups; each person counted
once (in the bucket where their track ended). JSON, or CSV with ``format=csv``."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import BigInteger, cast, func, select

from maskwatch.service.deps import ServiceDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.routers.common import db_errors, iso, to_ts
from maskwatch.service.storage.models import StatsBucket, StatsRollup

router = APIRouter(prefix="/stats", tags=["stats"])

GRAINS = {"1m": 60, "1h": 3600, "1d": 86400}
MAX_POINTS = 200_000


def compliance_series(sessions, *, cameras: list[str] | None, start: float, end: float, bucket: str) -> dict:
    """Points per camera: {camera: [(start_ts, n_people, compliant, frames, present_max)]} (sorted)."""
    grain = GRAINS[bucket]
    if bucket == "1m":
        slot = (cast(StatsBucket.start_ts, BigInteger) // grain) * grain
        q = (
            select(
                StatsBucket.camera,
                slot.label("slot"),
                func.sum(StatsBucket.n_people),
                func.sum(StatsBucket.compliant_people),
                func.sum(StatsBucket.frames_analysed),
                func.max(StatsBucket.present_max),
            )
            .where(StatsBucket.start_ts >= start, StatsBucket.start_ts < end)
            .group_by(StatsBucket.camera, "slot")
            .order_by(StatsBucket.camera, "slot")
        )
        if cameras:
            q = q.where(StatsBucket.camera.in_(cameras))
    else:
        q = (
            select(
                StatsRollup.camera,
                StatsRollup.start_ts,
                StatsRollup.n_people,
                StatsRollup.compliant_people,
                StatsRollup.frames_analysed,
                StatsRollup.present_max,
            )
            .where(
                StatsRollup.grain == grain,
                StatsRollup.start_ts >= int(start // grain * grain),
                StatsRollup.start_ts < end,
            )
            .order_by(StatsRollup.camera, StatsRollup.start_ts)
        )
        if cameras:
            q = q.where(StatsRollup.camera.in_(cameras))
    out: dict[str, list[tuple[int, int, int, int, int]]] = {}
    with sessions() as s:
        for camera, slot, n, ok, frames, present in s.execute(q):
            out.setdefault(camera, []).append(
                (int(slot), int(n or 0), int(ok or 0), int(frames or 0), int(present or 0))
            )
    return out


@router.get(
    "/compliance",
    summary="Compliance and people per camera over time (from stored buckets)",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def compliance(
    service: ServiceDep,
    _: Viewer,
    camera: list[str] | None = Query(None, description="one or more cameras (repeat the parameter); default all"),
    from_: datetime | None = Query(None, alias="from", description="default: 24 hours before `to`"),
    to: datetime | None = Query(None, description="default: now"),
    bucket: Literal["1m", "1h", "1d"] = "1h",
    format: Literal["json", "csv"] = "json",
) -> Response:
    end = to_ts(to) or time.time()
    start = to_ts(from_) if from_ is not None else end - 86400
    if start is None or start >= end:
        raise ApiError(422, "invalid", "'from' must be before 'to'")
    points = (end - start) / GRAINS[bucket]
    if points * max(1, len(camera or [])) > MAX_POINTS:
        raise ApiError(422, "invalid", f"too many points ({points:.0f} per camera); use a larger bucket or range")
    with db_errors():
        series = compliance_series(service.sessions, cameras=camera, start=start, end=end, bucket=bucket)
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["camera", "start", "n_people", "compliant_people", "compliance", "frames_analysed", "present_max"]
        )
        for name, rows in sorted(series.items()):
            for slot, n, ok, frames, present in rows:
                writer.writerow([name, iso(slot), n, ok, "" if n == 0 else round(ok / n, 4), frames, present])
        return Response(
            buffer.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="compliance-{bucket}.csv"'},
        )
    total_n = sum(n for rows in series.values() for _, n, _, _, _ in rows)
    total_ok = sum(ok for rows in series.values() for _, _, ok, _, _ in rows)
    body = {
        "bucket": bucket,
        "from": iso(start),
        "to": iso(end),
        "cameras": [
            {
                "camera": name,
                "points": [
                    {
                        "start": iso(slot),
                        "t": slot,
                        "n_people": n,
                        "compliant_people": ok,
                        "compliance": None if n == 0 else round(ok / n, 4),
                        "frames_analysed": frames,
                        "present_max": present,
                    }
                    for slot, n, ok, frames, present in rows
                ],
            }
            for name, rows in sorted(series.items())
        ],
        "total": {
            "n_people": total_n,
            "compliant_people": total_ok,
            "compliance": None if total_n == 0 else round(total_ok / total_n, 4),
        },
    }
    import json

    return Response(json.dumps(body), media_type="application/json")
