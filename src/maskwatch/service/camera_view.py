"""One view of every camera: the cameras this server runs (``local``: in its database and its engine) and
the fleet's (``remote``: ``node:camera``, run by an edge agent and seen through MQTT ingest), with the same
fields and the same routes (``GET /cameras``, ``GET /cameras/{name}``, its latest frame, its chart, events
and alerts). A remote camera is known from this worker's ingest (each node's retained status lists its
cameras), from the events it has received, and from today's stored buckets (so every worker of a shared
ingest, and a restarted one, lists it).

People are counted one way everywhere: **people today** = people whose track ended since 00:00 in the
site's time zone (``site.timezone``, :func:`day_start`), each person once, from the stored stats buckets
(the daily rollups). A camera's ``people_today`` and the overview's tile are the same sum over the same rows,
so they always agree.

With several workers, a local camera runs on the worker holding its lease: the others show its stored state
(as that worker reported it) and ``worker`` names it.

A remote camera's latest frame is asked from its node on demand (the agent's ``snapshot`` command): every
face is blurred on the node, and nothing leaves a node that runs without ``--snapshots``; each refusal is
an error with its reason (:meth:`CameraView.remote_frame`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from maskwatch.core.names import NODE_SEPARATOR, qualified, split_qualified
from maskwatch.core.timeutil import iso, local_day_start
from maskwatch.service.errors import ApiError
from maskwatch.service.storage.cameras import zones_json

if TYPE_CHECKING:
    from maskwatch.fleet.commands import FleetCommander
    from maskwatch.fleet.ingest import FleetState
    from maskwatch.service.cameras import CameraManager
    from maskwatch.service.live import CameraNow, Live
    from maskwatch.service.storage.cameras import StoredStatus
    from maskwatch.service.storage.models import Camera
    from maskwatch.service.storage.stats import StatsRepository

__all__ = ["PEOPLE_TODAY", "CameraKind", "CameraOut", "CameraView", "day_start"]

CameraKind = Literal["local", "remote"]

#: what "people today" means, said once (the API's descriptions and the dashboard's captions)
PEOPLE_TODAY = (
    "people whose track ended since 00:00 today in the site's time zone (site.timezone), each person counted "
    "once (stored stats buckets)"
)


def day_start(now: float | None = None, zone: tzinfo = UTC) -> int:
    """The start of today, 00:00 in the site's time zone, in epoch seconds: the one day boundary of "people
    today" (and of the daily rollups it reads)."""
    return local_day_start(time.time() if now is None else now, zone)


class CameraOut(BaseModel):
    """A camera, local or remote, as every route shows it."""

    name: str = Field(description="local: its name; remote: node:camera")
    kind: CameraKind = Field(description="local: run by this server; remote: run by an edge node (maskwatch agent)")
    node: str | None = Field(description="the edge node of a remote camera; None for a local one")
    node_state: str | None = Field(None, description="a remote camera's node: online, offline or unknown")
    url: str | None = Field(None, description="admins only (it may hold credentials); None for a remote camera")
    enabled: bool
    preset: str | None
    target_fps: float | None
    realtime: bool
    loop: bool
    privacy_zones: list[list[list[float]]] | None = Field(
        None,
        description="a local camera's own privacy zones ([x, y] in fractions of the frame); null: the engine's "
        "camera_defaults (and for a remote camera: set on its node)",
    )
    state: str = Field(description="connecting, live, lost, reconnecting, ended, failed, disabled or unknown")
    reason: str | None
    next_attempt: float | None = Field(
        None, description="when a camera that is down (reconnecting, failed) tries again, epoch seconds"
    )
    fps: float | None = Field(description="analysed frames per second; None unless the camera is live")
    lag_p95: float | None = Field(description="capture-to-result lag p95 (s); None unless the camera is live")
    frames_dropped: int
    present: int = Field(description="people in view now")
    people_today: int = Field(description=PEOPLE_TODAY)
    compliant_today: int = Field(description="of people_today, those wearing a mask")
    compliance_today: float | None = Field(description="share of people_today wearing a mask; None without people")
    people_since_start: int = Field(description="tracks ended since this server started (not a people count)")
    created: float | None = Field(description="when it was added here; None for a remote camera")
    updated: float | None
    worker: str | None = Field(None, description="a local camera: the serve worker that runs it (its lease)")


@dataclass(frozen=True)
class _Remote:
    node: str
    camera: str
    node_state: str  # online | offline | unknown
    node_reason: str | None
    node_since: float | None
    seen_state: str | None  # the camera's state as this worker's ingest last saw it


def _share(ok: int, n: int) -> float | None:
    return None if n == 0 else round(ok / n, 4)


class CameraView:
    """Every camera, local and remote, built from the components that know each part.

    Args:
        cameras: the local cameras (database and engine).
        live: live state of every camera that sends events (local and remote).
        stats: stored buckets (people today).
        fleet: this worker's MQTT ingest state now (None without ``serve --mqtt``).
        commander: asks nodes for frames (None without ``serve --mqtt``).
        frame_timeout: seconds to wait for a node's frame.
        zone: the site's time zone ("today").
        owners: camera -> the worker running it (the leases as of the last round); None: this one.
    """

    def __init__(
        self,
        cameras: CameraManager,
        live: Live,
        stats: StatsRepository,
        *,
        fleet: Callable[[], FleetState | None],
        commander: FleetCommander | None = None,
        frame_timeout: float = 5.0,
        zone: tzinfo = UTC,
        owners: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.zone = zone
        self.owners = owners
        self.cameras = cameras
        self.live = live
        self.stats = stats
        self.fleet = fleet
        self.commander = commander
        self.frame_timeout = frame_timeout

    # -- listing -----------------------------------------------------------------------------------------

    def every(self, *, admin: bool, node: str | None = None, kind: CameraKind | None = None) -> list[CameraOut]:
        """Local cameras (by name), then remote ones (by node, then camera); ``node`` keeps one node's,
        ``kind`` one kind."""
        now = self.live.snapshot().cameras
        today = self.stats.day_totals_by_camera(day_start(zone=self.zone))
        out: list[CameraOut] = []
        if kind in (None, "local") and node is None:
            rows = self.cameras.list()
            stored = self._stored(rows)
            out.extend(self._local(camera, now.get(camera.name), today, admin, stored) for camera in rows)
        if kind in (None, "remote"):
            remotes = self._remotes(now, today)
            out.extend(
                self._remote(name, info, now.get(name), today)
                for name, info in sorted(remotes.items())
                if node is None or info.node == node
            )
        return out

    def get(self, name: str, *, admin: bool) -> CameraOut:
        """One camera, local or remote; 404 when neither."""
        now = self.live.snapshot().cameras
        today = self.stats.day_totals_by_camera(day_start(zone=self.zone))
        if NODE_SEPARATOR not in name:
            camera = self.cameras.get(name)
            return self._local(camera, now.get(name), today, admin, self._stored([camera]))
        info = self._remotes(now, today).get(name)
        if info is None:
            raise ApiError(404, "not_found", f"no camera named {name!r} (a remote camera is NODE:CAMERA)")
        return self._remote(name, info, now.get(name), today)

    def known(self, name: str) -> bool:
        """A camera of this server or of a node this server knows."""
        if NODE_SEPARATOR not in name:
            return any(camera.name == name for camera in self.cameras.list())
        return name in self._remotes(list(self.live.state.cameras), {})

    def nodes(self) -> list[str]:
        """Every node this server knows (its ingest's, and those of the remote cameras it has seen)."""
        return sorted(
            {info.node for info in self._remotes(list(self.live.state.cameras), {}).values()} | self._fleet_nodes()
        )

    def require_local(self, name: str) -> None:
        """Changes (edit, enable, delete, live stream) are for local cameras: a known remote one is a 409
        saying where it is managed, an unknown one a 404."""
        if NODE_SEPARATOR not in name:
            return
        node, _ = split_qualified(name)
        if not self.known(name):
            raise ApiError(404, "not_found", f"no camera named {name!r}")
        raise ApiError(
            409,
            "remote_camera",
            f"{name} runs on node {node}: manage it there (maskwatch agent), not on this server",
        )

    # -- a remote camera's frame ---------------------------------------------------------------------------

    def remote_frame(self, name: str) -> bytes:
        """The latest frame of a remote camera, asked from its node now (faces blurred on the node); an
        ApiError with the reason when it cannot come: no MQTT ingest here (503 ``fleet_unavailable``), the
        node offline (503 ``node_offline``), not answering (504 ``node_timeout``), running without
        ``--snapshots`` (409 ``snapshots_disabled``), no frame yet (404 ``no_frame``)."""
        from maskwatch.fleet.commands import CommandTimeoutError, CommandUnavailableError
        from maskwatch.fleet.topics import NO_FRAME, SNAPSHOTS_DISABLED

        node, camera = split_qualified(name)
        assert node is not None
        info = self._remotes(list(self.live.state.cameras), {}).get(name)
        if info is None:
            raise ApiError(404, "not_found", f"no camera named {name!r}")
        if self.commander is None:
            raise ApiError(
                503,
                "fleet_unavailable",
                f"this server does not ingest the fleet (maskwatch serve --mqtt), so it cannot ask node {node}",
            )
        if info.node_state == "offline":
            since = f" since {iso(info.node_since)}" if info.node_since else ""
            why = f" ({info.node_reason})" if info.node_reason else ""
            raise ApiError(503, "node_offline", f"node {node} is offline{why}{since}: it cannot send a frame")
        try:
            answer = self.commander.request(node, "snapshot", {"name": camera}, timeout=self.frame_timeout)
        except CommandUnavailableError as exc:
            raise ApiError(503, "broker_unavailable", f"the MQTT broker is unreachable: {exc}") from exc
        except CommandTimeoutError as exc:
            raise ApiError(504, "node_timeout", f"{exc} (offline, cut off or busy)") from exc
        if not answer.ok:
            if answer.code == SNAPSHOTS_DISABLED:
                raise ApiError(
                    409,
                    "snapshots_disabled",
                    f"node {node} runs without --snapshots: no image leaves it (privacy by default); "
                    "start its agent with --snapshots to allow blurred frames",
                )
            if answer.code == NO_FRAME:
                raise ApiError(404, "no_frame", f"camera {name!r} has no analysed frame yet")
            raise ApiError(502, "node_error", f"node {node} refused: {answer.error}")
        try:
            return base64.b64decode(str((answer.result or {}).get("jpeg_base64", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(502, "node_error", f"node {node} sent an unreadable frame") from exc

    # -- building --------------------------------------------------------------------------------------------

    def _fleet_nodes(self) -> set[str]:
        fleet = self.fleet()
        return set() if fleet is None else set(fleet.nodes)

    def _remotes(self, *known: Iterable[str]) -> dict[str, _Remote]:
        """Remote cameras by ``node:camera``: this worker's ingest state, plus the names in ``known``
        (mappings or sets of camera names: live state, today's stored totals)."""
        fleet = self.fleet()
        nodes = {} if fleet is None else fleet.nodes
        out: dict[str, _Remote] = {}

        def add(node: str, camera: str) -> None:
            info = nodes.get(node)
            seen = info.cameras.get(camera) if info is not None else None
            out[qualified(node, camera)] = _Remote(
                node=node,
                camera=camera,
                node_state=info.state if info is not None else "unknown",
                node_reason=info.reason if info is not None else None,
                node_since=info.since if info is not None else None,
                seen_state=seen.state if seen is not None else None,
            )

        for node, info in nodes.items():
            for camera in info.cameras:
                add(node, camera)
        for names in known:
            for name in names:
                host, camera = split_qualified(name)
                if host is not None and name not in out:
                    try:
                        add(host, camera)
                    except ValueError:  # not a valid node:camera (never stored by ingest)
                        continue
        return out

    @staticmethod
    def _today(name: str, today: dict[str, tuple[int, int]]) -> tuple[int, int]:
        return today.get(name, (0, 0))

    def _stored(self, rows: list[Camera]) -> dict[str, StoredStatus]:
        """The stored states of the cameras in ``rows`` that another worker runs (read only when needed)."""
        if all(self.cameras.runs(c.name) or not c.enabled for c in rows):
            return {}
        return self.cameras.cameras.statuses()

    def _local(
        self,
        camera: Camera,
        now: CameraNow | None,
        today: dict[str, tuple[int, int]],
        admin: bool,
        stored: Mapping[str, StoredStatus],
    ) -> CameraOut:
        """A local camera: live figures when this worker runs it, else the state its worker stored."""
        reason = now.reason if now is not None else None
        state = now.state if now is not None else "connecting"
        if not self.cameras.runs(camera.name):
            now = None
            status = stored.get(camera.name)
            state, reason = (status.state, status.reason) if status is not None else ("connecting", None)
        state = state if camera.enabled else "disabled"
        live = state == "live" and now is not None
        owners = self.owners() if self.owners is not None else None
        worker = owners.get(camera.name) if owners is not None and camera.enabled else None
        people, compliant = self._today(camera.name, today)
        return CameraOut(
            name=camera.name,
            kind="local",
            node=None,
            url=camera.url if admin else None,
            enabled=camera.enabled,
            preset=camera.preset,
            target_fps=camera.target_fps,
            realtime=camera.realtime,
            loop=camera.loop,
            privacy_zones=zones_json(camera.privacy_zones),
            state=state,
            reason=reason,
            next_attempt=now.next_attempt if now is not None and camera.enabled else None,
            fps=now.fps if live and now is not None else None,
            lag_p95=now.lag_p95 if live and now is not None else None,
            frames_dropped=now.frames_dropped if now is not None else 0,
            present=now.present if now is not None else 0,
            people_today=people,
            compliant_today=compliant,
            compliance_today=_share(compliant, people),
            people_since_start=now.people_since_start if now is not None else 0,
            created=camera.created_ts,
            updated=camera.updated_ts,
            worker=worker,
        )

    def _remote(self, name: str, info: _Remote, now: CameraNow | None, today: dict[str, tuple[int, int]]) -> CameraOut:
        state = now.state if now is not None else (info.seen_state or "unknown")
        reason = now.reason if now is not None else None
        if info.node_state == "offline" and state in ("live", "connecting", "unknown"):
            state = "lost"  # ingest turns them lost when the node's last will arrives; this covers the rest
            reason = reason or f"node {info.node} offline"
        live = state == "live" and now is not None
        people, compliant = self._today(name, today)
        return CameraOut(
            name=name,
            kind="remote",
            node=info.node,
            node_state=info.node_state,
            url=None,
            enabled=True,
            preset=None,
            target_fps=None,
            realtime=False,
            loop=False,
            state=state,
            reason=reason,
            fps=now.fps if live and now is not None else None,
            lag_p95=now.lag_p95 if live and now is not None else None,
            frames_dropped=now.frames_dropped if now is not None else 0,
            present=now.present if live and now is not None else 0,
            people_today=people,
            compliant_today=compliant,
            compliance_today=_share(compliant, people),
            people_since_start=now.people_since_start if now is not None else 0,
            created=None,
            updated=None,
        )
