"""Health, readiness, Prometheus metrics, the dashboard's overview tiles, and the live event stream."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import func, select

from maskwatch import __version__
from maskwatch.service.deps import ServiceDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.metrics import CONTENT_TYPE
from maskwatch.service.storage.models import StatsRollup

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness (no token needed)")
def healthz() -> dict:
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    summary="Readiness: database reachable, engine running, ingest not behind",
    responses={503: {"description": "not ready, with the reasons"}},
)
def readyz(service: ServiceDep, _: Viewer) -> JSONResponse:
    checks = {"database": service.database_ok(), "engine": service.engine.running, "ingest": service.ingestor.healthy}
    ok = all(checks.values())
    body = {"status": "ready" if ok else "not ready", "checks": checks, "ingest_backlog": service.ingestor.backlog}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}
)
def metrics(service: ServiceDep, _: Viewer) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/overview", summary="Dashboard tiles: people now and today, compliance today, alerts, cameras")
def overview(service: ServiceDep, _: Viewer) -> dict:
    snapshot = service.now_snapshot()
    day = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    try:
        with service.sessions() as s:
            people, compliant = s.execute(
                select(
                    func.coalesce(func.sum(StatsRollup.n_people), 0),
                    func.coalesce(func.sum(StatsRollup.compliant_people), 0),
                ).where(StatsRollup.grain == 86400, StatsRollup.start_ts == day)
            ).one()
    except Exception as exc:
        raise ApiError(503, "database_unavailable", "the database is unreachable") from exc
    return {
        "people_now": sum(c["present"] for c in snapshot["cameras"].values()),
        "people_today": int(people),
        "compliance_today": None if not people else round(int(compliant) / int(people), 4),
        "alerts_firing": snapshot["alerts_firing"],
        "cameras": snapshot["cameras"],
        "database_ok": snapshot["database_ok"],
        "ingest_backlog": snapshot["ingest_backlog"],
        "time": time.time(),
    }


@router.get(
    "/stream",
    summary="Server-sent events: track_started, track_ended, stats, source_status, alert, live",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    service: ServiceDep,
    principal: Viewer,
    limit: int | None = Query(None, ge=0, description="end after this many messages"),
) -> StreamingResponse:
    hello = {"user": principal.name, "role": principal.role, "time": time.time()}
    return StreamingResponse(
        service.hub.stream(hello, stopped=service.stopping.is_set, limit=limit),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
