"""Health, readiness, Prometheus metrics, the dashboard's overview tiles, and the live event stream.

Probes and scrapers use the root paths (outside the OpenAPI schema): ``/healthz`` and ``/readyz`` need no
token; ``/metrics`` takes the scrape token, an allow-listed address or an API token. The same answers stay
under ``/api/v1`` with an API token."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from maskwatch import __version__
from maskwatch.core.timeutil import local_day_start
from maskwatch.service.camera_view import PEOPLE_TODAY, day_start
from maskwatch.service.deps import (
    AuthDep,
    CameraViewDep,
    CoordinatorDep,
    FleetDep,
    IngestorDep,
    LiveDep,
    MetricsDep,
    SettingsDep,
    SiteZone,
    SpoolDep,
    StorageDep,
    Viewer,
    client_ip,
)
from maskwatch.service.errors import ApiError
from maskwatch.service.live import CameraNow, released_after
from maskwatch.service.metrics import CONTENT_TYPE, scrape_allowed
from maskwatch.service.routers.common import binary, stream_slot

__all__ = ["Health", "Overview", "Readiness", "Site", "healthz", "metrics_scrape", "readyz_probe", "router"]

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
    people_now: int = Field(description="people in view now, over every camera (local and remote)")
    people_today: int = Field(description=f"{PEOPLE_TODAY}: the sum of every camera's people_today")
    compliance_today: float | None
    day_start: float = Field(description="the start of 'today' (epoch seconds, 00:00 in the site's time zone)")
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
    return readyz_probe(storage, live, ingestor, fleet, spool, coordinator)


def readyz_probe(
    storage: StorageDep,
    live: LiveDep,
    ingestor: IngestorDep,
    fleet: FleetDep,
    spool: SpoolDep,
    coordinator: CoordinatorDep,
) -> Response:
    """``GET /readyz`` at the root: the same answer, no token (load balancers and orchestrators probe it)."""
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


def metrics_scrape(request: Request, registry: MetricsDep, settings: SettingsDep, auth: AuthDep) -> Response:
    """``GET /metrics`` at the root, for Prometheus: the scrape token (``auth.scrape_token``), an address in
    ``auth.scrape_allow``, or any API token (viewer and up); else 401."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    if not scrape_allowed(
        token=token,
        address=client_ip(request),
        scrape_token=settings.auth.scrape_token,
        allow=settings.auth.scrape_allow,
    ):
        auth.authenticate(request)  # an API token (401 / 429 with the reason otherwise)
    return Response(registry.render(), media_type=CONTENT_TYPE)


@router.get("/overview", summary="Dashboard tiles: people now and today, compliance today, alerts, cameras")
def overview(live: LiveDep, view: CameraViewDep, zone: SiteZone, _: Viewer) -> Overview:
    snapshot = live.snapshot()
    try:  # the same rows as GET /cameras: the tiles are the sums of the camera table
        cameras = view.every(admin=False)
    except SQLAlchemyError as exc:
        raise ApiError(503, "database_unavailable", "the database is unreachable") from exc
    people = sum(c.people_today for c in cameras)
    compliant = sum(c.compliant_today for c in cameras)
    return Overview(
        people_now=sum(c.present for c in cameras),
        people_today=people,
        compliance_today=None if not people else round(compliant / people, 4),
        day_start=day_start(zone=zone),
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
    release = stream_slot(live, principal)
    hello = {"user": principal.name, "role": principal.role, "time": time.time()}
    return StreamingResponse(
        await released_after(live.hub.stream(hello, stopped=live.closing.is_set, limit=limit), release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
