"""Health, readiness, Prometheus metrics, the dashboard's overview tiles, and the live event stream."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from maskwatch import __version__
from maskwatch.core.timeutil import local_day_start
from maskwatch.service.deps import (
    CoordinatorDep,
    FleetDep,
    IngestorDep,
    LiveDep,
    MetricsDep,
    SiteZone,
    SpoolDep,
    StorageDep,
    Viewer,
)
from maskwatch.service.errors import ApiError
from maskwatch.service.live import CameraNow
from maskwatch.service.metrics import CONTENT_TYPE
from maskwatch.service.routers.common import binary

__all__ = ["Health", "Overview", "Readiness", "Site", "healthz", "router"]

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class ReadyChecks(BaseModel):
    database: bool = Field(description="the database answers SELECT 1 now (5 s timeout)")
    engine: bool = Field(description="this worker's stream engine runs")
    ingest: bool = Field(description="the writer's last write succeeded (False while the database is away)")
    broker: bool | None = Field(
        None,
        description="with --mqtt: connected to the broker and subscribed (False while it is unreachable or "
        "refuses this worker's login); null without MQTT ingest",
    )


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: ReadyChecks
    ingest_backlog: int = Field(description="events waiting in memory to be stored")
    spool_backlog: int = Field(description="this worker's cameras' events on disk not yet stored")
    broker_error: str | None = Field(None, description="why the broker connection is down, when it is")
    worker: str = Field(description="this worker's id (leases, jobs)")
    alerts_leader: bool = Field(description="this worker evaluates the alert rules")


class Site(BaseModel):
    """The site's clock: what "today", daily points and alert active hours mean (``site.timezone``)."""

    timezone: str = Field(description="IANA name, e.g. Europe/Paris (the dashboard shows times in it)")
    utc_offset_s: float = Field(description="the zone's offset from UTC now, seconds")
    day_start: float = Field(description="epoch seconds of today's local midnight")
    time: float


class Overview(BaseModel):
    people_now: int
    people_today: int = Field(description="people counted since 00:00 in the site's time zone")
    compliance_today: float | None
    alerts_firing: int
    cameras: dict[str, CameraNow]
    database_ok: bool
    ingest_backlog: int
    time: float
    timezone: str = Field(description="the site's time zone (IANA name)")


@router.get("/healthz", summary="Liveness (no token needed)")
def healthz() -> Health:
    return Health(version=__version__)


@router.get(
    "/readyz",
    summary="Readiness: database reachable, engine running, ingest not behind, broker connected (--mqtt)",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready, with the reasons"}},
)
def readyz(
    storage: StorageDep,
    live: LiveDep,
    ingestor: IngestorDep,
    fleet: FleetDep,
    spool: SpoolDep,
    coordinator: CoordinatorDep,
    _: Viewer,
) -> Response:
    checks = ReadyChecks(
        database=storage.ping(),
        engine=live.engine.running,
        ingest=ingestor.healthy,
        broker=None if fleet is None else fleet.connected,
    )
    ok = checks.database and checks.engine and checks.ingest and checks.broker is not False
    body = Readiness(
        status="ready" if ok else "not ready",
        checks=checks,
        ingest_backlog=ingestor.backlog,
        spool_backlog=0 if spool is None else spool.backlog,
        broker_error=None if fleet is None or fleet.connected else fleet.last_error or "not connected",
        worker=coordinator.worker,
        alerts_leader=coordinator.leader,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/site", summary="The site's time zone: what today, daily points and active hours mean")
def site(zone: SiteZone, _: Viewer) -> Site:
    now = time.time()
    offset = datetime.fromtimestamp(now, zone).utcoffset()
    return Site(
        timezone=str(zone),
        utc_offset_s=0.0 if offset is None else offset.total_seconds(),
        day_start=float(local_day_start(now, zone)),
        time=now,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses=binary("text/plain", "Prometheus text exposition format"),
)
def metrics(registry: MetricsDep, _: Viewer) -> Response:
    return Response(registry.render(), media_type=CONTENT_TYPE)


@router.get("/overview", summary="Dashboard tiles: people now and today, compliance today, alerts, cameras")
def overview(live: LiveDep, storage: StorageDep, zone: SiteZone, _: Viewer) -> Overview:
    snapshot = live.snapshot()
    day = local_day_start(time.time(), zone)
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
        timezone=str(zone),
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
    hello = {"user": principal.name, "role": principal.role, "time": time.time()}
    return StreamingResponse(
        live.hub.stream(hello, stopped=live.closing.is_set, limit=limit),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
