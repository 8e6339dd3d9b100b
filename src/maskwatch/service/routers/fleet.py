"""The fleet as the control room sees it (``maskwatch serve --mqtt``): nodes online/offline with last seen,
each camera's FPS and lag from its latest stats bucket, compliance by node and camera over a window, and
the MQTT ingest counters.

Two sources, each for what it knows best: node state comes from this worker's MQTT ingest (every worker
subscribes to every node's status); FPS, lag, people and compliance come from the stored stats buckets, so
every worker answers the same when several share the load (each receives only part of the stats). A
camera's state is the newer of what this worker saw and what is stored (each worker of a shared
subscription receives only some of a node's status events). While
the database is unreachable the view answers from memory alone (``database_ok`` false: FPS and lag from the
latest buckets this worker received, no people counts), and the log says so once per outage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from maskwatch.core.names import qualified, split_qualified
from maskwatch.fleet.ingest import CameraState, FleetState, NodeState
from maskwatch.service.deps import FleetDep, StorageDep, Viewer
from maskwatch.service.storage.cameras import StoredStatus
from maskwatch.service.storage.db import OutageLog
from maskwatch.service.storage.stats import FleetCameraStats

__all__ = ["FleetCamera", "FleetNode", "FleetView", "fleet_view", "router"]

router = APIRouter(tags=["fleet"])


class FleetCamera(BaseModel):
    name: str  # on its node
    camera: str  # as stored and shown elsewhere: NODE:CAMERA
    state: str | None  # its latest source status, seen by this worker or stored (lost when its node went offline)
    last_seen: float | None  # epoch seconds
    fps: float | None  # analysed frames per second, latest stats bucket; None while its node is offline
    lag_p50: float | None  # seconds, latest stats bucket; None while its node is offline
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
    database_ok: bool = Field(True, description="False: the database is unreachable, figures from memory only")


def _share(ok: int, n: int) -> float | None:
    return None if n == 0 else round(ok / n, 4)


def _camera(
    node: str,
    name: str,
    seen: CameraState | None,
    stored: FleetCameraStats | None,
    statuses: Mapping[str, StoredStatus],
    *,
    offline: bool,
) -> FleetCamera:
    """One camera from what this worker saw (state, last seen) and what is stored (FPS, lag, people; its
    state when newer). A camera of an offline node has no FPS or lag: its last bucket's figures are not what
    it does now."""
    seen = seen or CameraState()
    full = qualified(node, name)
    status = statuses.get(full)
    state = status.state if status is not None and status.ts > seen.state_ts else seen.state
    times = [t for t in (seen.last_seen, stored.end if stored else None) if t is not None]
    figures = None if offline else (stored or seen)
    return FleetCamera(
        name=name,
        camera=full,
        state=state,
        last_seen=max(times) if times else None,
        fps=figures.fps if figures else None,
        lag_p50=figures.lag_p50 if figures else None,
        lag_p95=figures.lag_p95 if figures else None,
        people=stored.people if stored else 0,
        compliance=_share(stored.compliant, stored.people) if stored else None,
    )


def fleet_view(
    fleet: FleetState | None,
    stored: dict[str, FleetCameraStats],
    window_s: float,
    *,
    statuses: Mapping[str, StoredStatus] | None = None,
    database_ok: bool = True,
) -> FleetView:
    """The fleet from this worker's MQTT ingest (``fleet``; None without), the stored buckets of the window
    (``stored``: per ``node:camera``) and the cameras' stored states (``statuses``); the stored parts are
    empty while the database is unreachable (``database_ok``)."""
    statuses = statuses or {}
    live: dict[str, NodeState] = {} if fleet is None else fleet.nodes
    by_node: dict[str, dict[str, FleetCameraStats]] = {}
    for full, figures in stored.items():
        node, camera = split_qualified(full)
        if node is not None:
            by_node.setdefault(node, {})[camera] = figures
    nodes = []
    for name in sorted(set(live) | set(by_node)):
        info = live.get(name) or NodeState()
        kept = by_node.get(name, {})
        offline = info.state == "offline"
        cameras = [
            _camera(name, cam, info.cameras.get(cam), kept.get(cam), statuses, offline=offline)
            for cam in sorted(set(info.cameras) | set(kept))
        ]
        seen = [t for t in (info.last_seen, *(c.last_seen for c in cameras)) if t is not None]
        people = sum(c.people for c in cameras)
        ok = sum(kept[c.name].compliant for c in cameras if c.name in kept)
        nodes.append(
            FleetNode(
                name=name,
                state=info.state,
                since=info.since,
                last_seen=max(seen) if seen else None,
                reason=info.reason if info.state == "offline" else None,
                outbox=info.outbox,
                people=people,
                compliance=_share(ok, people),
                cameras=cameras,
            )
        )
    counters = None
    if fleet is not None:
        counters = IngestCounters(
            connected=fleet.connected,
            accepted=fleet.accepted,
            rejected=fleet.rejected,
            pending_acks=fleet.pending_acks,
        )
    people = sum(n.people for n in nodes)
    ok = sum(figures.compliant for figures in stored.values())
    return FleetView(
        enabled=fleet is not None,
        time=time.time(),
        window_s=window_s,
        nodes=nodes,
        online=sum(n.state == "online" for n in nodes),
        offline=sum(n.state == "offline" for n in nodes),
        people=people,
        compliance=_share(ok, people),
        ingest=counters,
        database_ok=database_ok,
    )


_OUTAGE = OutageLog("fleet view", "answering from memory (logged once per outage)")


@router.get("/fleet", summary="Edge nodes and their cameras: state, last seen, FPS, lag, compliance (MQTT ingest)")
def get_fleet(
    fleet: FleetDep,
    storage: StorageDep,
    _: Viewer,
    window_s: float = Query(3600.0, ge=60, le=7 * 86400, description="people and compliance over this many seconds"),
) -> FleetView:
    try:
        stored = storage.stats.fleet_cameras(time.time() - window_s)
        statuses = storage.cameras.statuses()
    except SQLAlchemyError as exc:
        _OUTAGE.failed(exc)
        return fleet_view(fleet, {}, window_s, database_ok=False)
    return fleet_view(fleet, stored, window_s, statuses=statuses)
