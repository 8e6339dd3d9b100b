"""The fleet as the control room sees it (``maskwatch serve --mqtt``): nodes online/offline with last seen,
each camera's FPS and lag from its latest stats bucket, compliance by node and camera over a window, and
the MQTT ingest counters.

Two sources, each for what it knows best: node state comes from this worker's MQTT ingest (every worker
subscribes to every node's status); FPS, lag, people and compliance come from the stored stats buckets, so
every worker answers the same when several share the load (each receives only part of the stats).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import and_, func, select

from maskwatch.service.deps import ServiceDep, Viewer
from maskwatch.service.routers.common import db_errors
from maskwatch.service.storage.models import StatsBucket

router = APIRouter(tags=["fleet"])

SEP = ":"  # fleet cameras are stored as NODE:CAMERA (local camera names cannot hold a colon)


class FleetCamera(BaseModel):
    name: str  # on its node
    camera: str  # as stored and shown elsewhere: NODE:CAMERA
    state: str | None  # the camera's last source status seen by this worker (lost when its node went offline)
    last_seen: float | None  # epoch seconds
    fps: float | None  # analysed frames per second, latest stats bucket
    lag_p50: float | None  # seconds, latest stats bucket
    lag_p95: float | None
    people: int  # people counted in the window
    compliance: float | None  # share of them wearing a mask; None without people


class FleetNode(BaseModel):
    name: str
    state: Literal["online", "offline", "unknown"]  # unknown: stats stored, no status received yet
    since: float | None  # when it entered that state (as this worker saw it)
    last_seen: float | None
    reason: str | None  # why it is offline (its last will says "connection lost")
    outbox: dict[str, int] | None  # the node's own counters (dropped_stats, dropped_events)
    people: int
    compliance: float | None
    cameras: list[FleetCamera]


class IngestCounters(BaseModel):
    connected: bool
    accepted: int
    rejected: dict[str, int]  # by reason: oversized, topic, json, schema, invalid, mismatch
    pending_acks: int


class FleetView(BaseModel):
    enabled: bool  # this worker runs MQTT ingest (serve --mqtt)
    time: float
    window_s: float
    nodes: list[FleetNode]
    online: int
    offline: int
    people: int
    compliance: float | None
    ingest: IngestCounters | None


def _share(ok: int, n: int) -> float | None:
    return None if n == 0 else round(ok / n, 4)


def _stored(service: Any, since: float) -> dict[str, dict[str, Any]]:
    """Per fleet camera over the window: people, compliant, and the latest bucket's FPS, lag and end."""
    fleet_camera = StatsBucket.camera.contains(SEP)
    window = [StatsBucket.start_ts >= since, fleet_camera]
    totals = (
        select(
            StatsBucket.camera,
            func.sum(StatsBucket.n_people).label("people"),
            func.sum(StatsBucket.compliant_people).label("ok"),
            func.max(StatsBucket.start_ts).label("latest"),
        )
        .where(*window)
        .group_by(StatsBucket.camera)
        .subquery()
    )
    latest = select(
        totals.c.camera,
        totals.c.people,
        totals.c.ok,
        StatsBucket.analysed_fps,
        StatsBucket.lag_p50,
        StatsBucket.lag_p95,
        StatsBucket.end_ts,
    ).join(StatsBucket, and_(StatsBucket.camera == totals.c.camera, StatsBucket.start_ts == totals.c.latest))
    with db_errors(), service.sessions() as s:
        rows = s.execute(latest).all()
    return {
        camera: {"people": int(n or 0), "ok": int(ok or 0), "fps": fps, "p50": p50, "p95": p95, "end": end}
        for camera, n, ok, fps, p50, p95, end in rows
    }


def fleet_view(service: Any, window_s: float) -> FleetView:
    now = time.time()
    ingest = service.fleet
    raw = ingest.fleet() if ingest is not None else {"nodes": {}}
    live: dict[str, dict[str, Any]] = raw["nodes"]
    stored = _stored(service, now - window_s)
    names = set(live) | {camera.split(SEP, 1)[0] for camera in stored}
    nodes = []
    for name in sorted(names):
        info = live.get(name, {})
        state = info.get("state") if info.get("state") in ("online", "offline") else "unknown"
        cameras = set(info.get("cameras", {})) | {c.split(SEP, 1)[1] for c in stored if c.split(SEP, 1)[0] == name}
        rows = []
        for cam in sorted(cameras):
            full = f"{name}{SEP}{cam}"
            mem = info.get("cameras", {}).get(cam, {})
            db = stored.get(full, {})
            seen = [t for t in (mem.get("last_seen"), db.get("end")) if t is not None]
            rows.append(
                FleetCamera(
                    name=cam,
                    camera=full,
                    state=mem.get("state"),
                    last_seen=max(seen) if seen else None,
                    fps=db.get("fps", mem.get("fps")),
                    lag_p50=db.get("p50", mem.get("lag_p50")),
                    lag_p95=db.get("p95", mem.get("lag_p95")),
                    people=db.get("people", 0),
                    compliance=_share(db.get("ok", 0), db.get("people", 0)),
                )
            )
        seen = [t for t in (info.get("last_seen"), *(c.last_seen for c in rows)) if t is not None]
        people = sum(c.people for c in rows)
        ok = sum(stored.get(c.camera, {}).get("ok", 0) for c in rows)
        nodes.append(
            FleetNode(
                name=name,
                state=state,
                since=info.get("since"),
                last_seen=max(seen) if seen else None,
                reason=info.get("reason") if state == "offline" else None,
                outbox=info.get("outbox"),
                people=people,
                compliance=_share(ok, people),
                cameras=rows,
            )
        )
    counters = None
    if ingest is not None:
        counters = IngestCounters(
            connected=raw["connected"],
            accepted=raw["accepted"],
            rejected=raw["rejected"],
            pending_acks=raw["pending_acks"],
        )
    people = sum(n.people for n in nodes)
    ok = sum(v["ok"] for v in stored.values())
    return FleetView(
        enabled=ingest is not None,
        time=now,
        window_s=window_s,
        nodes=nodes,
        online=sum(n.state == "online" for n in nodes),
        offline=sum(n.state == "offline" for n in nodes),
        people=people,
        compliance=_share(ok, people),
        ingest=counters,
    )


@router.get("/fleet", summary="Edge nodes and their cameras: state, last seen, FPS, lag, compliance (MQTT ingest)")
def fleet(
    service: ServiceDep,
    _: Viewer,
    window_s: float = Query(3600.0, ge=60, le=7 * 86400, description="people and compliance over this many seconds"),
) -> FleetView:
    return fleet_view(service, window_s)
