"""Health, readiness, Prometheus metrics, the dashboard's overview tiles, and the live event stream."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from maskwatch import __version__
from maskwatch.service.deps import IngestorDep, LiveDep, MetricsDep, StorageDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.live import CameraNow, released_after
from maskwatch.service.metrics import CONTENT_TYPE
from maskwatch.service.routers.common import binary, stream_slot

__all__ = ["Health", "Overview", "Readiness", "healthz", "router"]

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class ReadyChecks(BaseModel):
    database: bool = Field(description="answers SELECT 1")
    engine: bool = Field(description="the stream engine runs")
    ingest: bool = Field(description="events are being stored (False while the database is away)")


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: ReadyChecks
    ingest_backlog: int = Field(description="events waiting to be stored")


class Overview(BaseModel):
    people_now: int
    people_today: int = Field(description="people counted since 00:00 UTC")
    compliance_today: float | None
    alerts_firing: int
    cameras: dict[str, CameraNow]
    database_ok: bool
    ingest_backlog: int
    time: float


@router.get("/healthz", summary="Liveness (no token needed)")
def healthz() -> Health:
    return Health(version=__version__)


@router.get(
    "/readyz",
    summary="Readiness: database reachable, engine running, ingest not behind",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready, with the reasons"}},
)
def readyz(storage: StorageDep, live: LiveDep, ingestor: IngestorDep, _: Viewer) -> Response:
    checks = ReadyChecks(database=storage.ping(), engine=live.engine.running, ingest=ingestor.healthy)
    ok = checks.database and checks.engine and checks.ingest
    body = Readiness(status="ready" if ok else "not ready", checks=checks, ingest_backlog=ingestor.backlog)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses=binary("text/plain", "Prometheus text exposition format"),
)
def metrics(registry: MetricsDep, _: Viewer) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE)


@router.get("/overview", summary="Dashboard tiles: people now and today, compliance today, alerts, cameras")
def overview(live: LiveDep, storage: StorageDep, _: Viewer) -> Overview:
    snapshot = live.snapshot()
    day = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    try:
        people, compliant = storage.stats.day_totals(day)
    except Exception as exc:
        raise ApiError(503, "database_unavailable", "the database is unreachable") from exc
    return Overview(
        people_now=sum(c.present for c in snapshot.cameras.values()),
        people_today=people,
        compliance_today=None if not people else round(compliant / people, 4),
        alerts_firing=snapshot.alerts_firing,
        cameras=snapshot.cameras,
        database_ok=snapshot.database_ok,
        ingest_backlog=snapshot.ingest_backlog,
        time=time.time(),
    )


@router.get(
    "/stream",
    summary="Server-sent events: track_started, track_ended, stats, source_status, alert, live",
    description="A `text/event-stream` that stays open: `hello` first, then `track_started`, `track_ended`, "
    "`stats`, `source_status` (the engine's events, `maskwatch.event/1`), `alert` (`AlertTransition`), `live` "
    "(`LiveSnapshot`, every second while someone listens), and a keep-alive comment when quiet.",
    response_class=StreamingResponse,
    responses=binary("text/event-stream", "server-sent events (streamed; ends when the service stops)"),
)
async def stream(
    live: LiveDep,
    principal: Viewer,
    limit: int | None = Query(None, ge=0, description="end after this many messages"),
) -> StreamingResponse:
    release = stream_slot(live, principal)
    hello = {"user": principal.name, "role": principal.role, "time": time.time()}
    return StreamingResponse(
        await released_after(live.hub.stream(hello, stopped=live.closing.is_set, limit=limit), release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
