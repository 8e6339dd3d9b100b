"""Compliance and people over time, from stored stats buckets and their rollups only (never a scan of raw
events): 1-minute points from the buckets, hourly and daily ones from the rollups; each person counted
once (in the bucket where their track ended). JSON as points (``format=json``) or as an array per field
(``format=columns``, a fifth of the bytes: the dashboard's), or CSV (``format=csv``).

Kept fast for the dashboard (``benchmarks/bench_compliance.py``: 30 days x 50 cameras): the rows come from
covering indexes in time order (:meth:`StatsRepository.series`), and the points are written straight to JSON
(the answer's schema is :class:`CompliancePoints` or :class:`ComplianceColumns`). A request may ask for at
most :data:`MAX_POINTS_PER_CAMERA` points per camera and :data:`MAX_POINTS` in all; more is a 422 that
says what to change.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, tzinfo
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from maskwatch.core.timeutil import iso
from maskwatch.service.deps import AuditDep, SiteZone, StorageDep, Viewer
from maskwatch.service.errors import ApiError, errors
from maskwatch.service.routers.common import BINARY, to_ts
from maskwatch.service.storage.stats import GRAINS, Point, StatsRepository

__all__ = [
    "GRAINS",
    "MAX_POINTS",
    "MAX_POINTS_PER_CAMERA",
    "ComplianceColumns",
    "CompliancePoints",
    "check_size",
    "router",
    "series_columns",
    "series_json",
]

router = APIRouter(prefix="/stats", tags=["stats"])

#: points per camera in one answer: 1m covers 2 days, 1h 120 days, 1d about 8 years
MAX_POINTS_PER_CAMERA = 2880
#: points in one answer over all cameras: 50 cameras x 12 h at 1m or x 30 days at 1h; about 150 ms on 2 busy
#: cores with format=columns (twice as many took 450 ms: benchmarks/bench_compliance.py)
MAX_POINTS = 40_000


class CompliancePoint(BaseModel):
    start: str = Field(description="slot start, ISO 8601 UTC")
    t: int = Field(description="slot start, epoch seconds")
    n_people: int
    compliant_people: int
    compliance: float | None
    frames_analysed: int
    present_max: int


class CameraPoints(BaseModel):
    camera: str
    points: list[CompliancePoint]


class CameraColumns(BaseModel):
    """One array per field, index by index (compliance is compliant_people / n_people)."""

    camera: str
    t: list[int]
    n_people: list[int]
    compliant_people: list[int]
    frames_analysed: list[int]
    present_max: list[int]


class ComplianceTotal(BaseModel):
    n_people: int
    compliant_people: int
    compliance: float | None


class CompliancePoints(BaseModel):
    """``format=json``."""

    bucket: Literal["1m", "1h", "1d"]
    from_: str = Field(alias="from")
    to: str
    cameras: list[CameraPoints]
    total: ComplianceTotal


class ComplianceColumns(BaseModel):
    """``format=columns``."""

    bucket: Literal["1m", "1h", "1d"]
    from_: str = Field(alias="from")
    to: str
    cameras: list[CameraColumns]
    total: ComplianceTotal


def check_size(
    stats: StatsRepository, *, cameras: list[str] | None, start: float, end: float, bucket: str, zone: tzinfo
) -> None:
    """A 422 with the reason when the answer would hold too many points (before any heavy query)."""
    slots = (end - start) / GRAINS[bucket]
    if slots > MAX_POINTS_PER_CAMERA:
        most = MAX_POINTS_PER_CAMERA * GRAINS[bucket]
        span = f"{most / 86400:g} days" if most >= 86400 * 3 else f"{most / 3600:g} hours"
        raise ApiError(
            422,
            "too_many_points",
            f"bucket={bucket} covers at most {span} per request ({MAX_POINTS_PER_CAMERA} points per camera); "
            "use a larger bucket or a shorter range",
        )
    n_cameras = len(set(cameras)) if cameras else stats.cameras_in_range(start, end, zone)
    if slots * n_cameras > MAX_POINTS:
        raise ApiError(
            422,
            "too_many_points",
            f"{n_cameras} cameras x {slots:.0f} points is over {MAX_POINTS} points per request; "
            "name fewer cameras (camera=...), use a larger bucket or a shorter range",
        )


_POINT = (
    '{"start":"%s","t":%d,"n_people":%d,"compliant_people":%d,"compliance":%s,"frames_analysed":%d,"present_max":%d}'
)


def series_json(series: dict[str, list[Point]]) -> str:
    """``cameras`` of the JSON answer, written directly: the points are plain numbers, and building a dict
    per point then ``json.dumps`` took twice as long (tens of thousands of points per answer)."""
    stamps: dict[int, str] = {}  # the cameras share their slots: one ISO string per slot
    ratios: dict[tuple[int, int], str] = {}  # and most (compliant, people) pairs
    parts = []
    for camera, rows in series.items():
        points = []
        for slot, n, ok, frames, present in rows:
            stamp = stamps.get(slot)
            if stamp is None:
                stamp = stamps[slot] = iso(slot) or ""
            ratio = ratios.get((ok, n))
            if ratio is None:
                ratio = ratios[(ok, n)] = "null" if n == 0 else repr(round(ok / n, 4))
            points.append(_POINT % (stamp, slot, n, ok, ratio, frames, present))
        parts.append(f'{{"camera":{json.dumps(camera)},"points":[{",".join(points)}]}}')
    return "[" + ",".join(parts) + "]"


def series_columns(series: dict[str, list[Point]]) -> str:
    """``cameras`` of the ``columns`` answer: per camera, one array per field (compliance is
    compliant_people / n_people)."""
    out = []
    for camera, rows in series.items():
        t, n, ok, frames, present = zip(*rows, strict=True) if rows else ((),) * 5
        out.append(
            {"camera": camera, "t": t, "n_people": n, "compliant_people": ok, "frames_analysed": frames,
             "present_max": present}
        )  # fmt: skip
    return json.dumps(out, separators=(",", ":"))


def _csv(series: dict[str, list[Point]], bucket: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["camera", "start", "n_people", "compliant_people", "compliance", "frames_analysed", "present_max"])
    for name, rows in series.items():
        for slot, n, ok, frames, present in rows:
            writer.writerow([name, iso(slot), n, ok, "" if n == 0 else round(ok / n, 4), frames, present])
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="compliance-{bucket}.csv"'},
    )


@router.get(
    "/compliance",
    summary="Compliance and people per camera over time (from stored buckets)",
    response_class=Response,
    responses={
        200: {
            "model": CompliancePoints | ComplianceColumns,
            "description": "format=json: CompliancePoints; format=columns: ComplianceColumns; format=csv: CSV",
            "content": {"text/csv": {"schema": BINARY}},
        },
        **errors(e422="bad range, or more points than one answer holds (the reason says what to change)"),
    },
)
def compliance(
    storage: StorageDep,
    zone: SiteZone,
    audit: AuditDep,
    principal: Viewer,
    camera: list[str] | None = Query(None, description="one or more cameras (repeat the parameter); default all"),
    from_: datetime | None = Query(None, alias="from", description="default: 24 hours before `to`"),
    to: datetime | None = Query(None, description="default: now"),
    bucket: Literal["1m", "1h", "1d"] = Query(
        "1h",
        description="1m: at most 2 days per request; 1h (UTC hours): 120 days; 1d (days of the site's time "
        "zone, from its midnight): about 8 years",
    ),
    format: Literal["json", "columns", "csv"] = Query(
        "json",
        description="json: a list of points per camera; columns: one array per field per camera (t, n_people, "
        "compliant_people, frames_analysed, present_max; a fifth of the bytes, what the dashboard reads); csv",
    ),
) -> Response:
    end = to_ts(to) or time.time()
    start = to_ts(from_) if from_ is not None else end - 86400
    if start is None or start >= end:
        raise ApiError(422, "invalid", "'from' must be before 'to'")
    check_size(storage.stats, cameras=camera, start=start, end=end, bucket=bucket, zone=zone)
    series = storage.stats.series(cameras=camera, start=start, end=end, bucket=bucket, zone=zone)
    if format != "columns":  # csv and json are exports (the dashboard's chart reads columns): audited
        audit.record(principal, "export.stats", None, {"format": format, "bucket": bucket, "cameras": camera,
                                                       "from": iso(start), "to": iso(end)})  # fmt: skip
    if format == "csv":
        return _csv(series, bucket)
    total_n = sum(p[1] for rows in series.values() for p in rows)
    total_ok = sum(p[2] for rows in series.values() for p in rows)
    total = {
        "n_people": total_n,
        "compliant_people": total_ok,
        "compliance": None if total_n == 0 else round(total_ok / total_n, 4),
    }
    head = json.dumps({"bucket": bucket, "from": iso(start), "to": iso(end)})[:-1]
    cameras = series_columns(series) if format == "columns" else series_json(series)
    return Response(f'{head}, "cameras": {cameras}, "total": {json.dumps(total)}}}', media_type="application/json")
