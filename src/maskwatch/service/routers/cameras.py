"""Cameras: CRUD while running, enable/disable, live MJPEG and latest JPEG with faces blurred (the database
lookups, audits and JPEG encoding of the live views run on worker threads, never on the event loop). With
several workers, a camera's state comes from the worker that runs it (stored), and ``worker`` says which."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from maskwatch.core.names import NAME_PATTERN
from maskwatch.service.auth import Principal
from maskwatch.service.cameras import CameraManager
from maskwatch.service.deps import Admin, AuditDep, Auditor, CamerasDep, CoordinatorDep, LiveDep, MediaDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.live import LiveState
from maskwatch.service.media import Media, render_jpeg
from maskwatch.service.routers.common import binary
from maskwatch.service.settings import CameraConfig
from maskwatch.service.storage.cameras import StoredStatus
from maskwatch.service.storage.models import Camera
from maskwatch.service.workers import Coordinator

__all__ = ["CameraIn", "CameraOut", "CameraPatch", "router"]

router = APIRouter(prefix="/cameras", tags=["cameras"])

Preset = Literal["fast", "balanced", "accurate"]


class CameraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(min_length=1, max_length=2000, description="rtsp://, http(s)://, webcam:N, a video or a folder")
    enabled: bool = True
    preset: Preset | None = None
    target_fps: float | None = Field(None, gt=0, le=120)
    realtime: bool = False
    loop: bool = False


class CameraPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, min_length=1, max_length=2000)
    enabled: bool | None = None
    preset: Preset | None = None
    target_fps: float | None = Field(None, gt=0, le=120)
    realtime: bool | None = None
    loop: bool | None = None


class CameraOut(BaseModel):
    name: str
    url: str | None = Field(None, description="admins only (it may hold credentials)")
    enabled: bool
    preset: str | None
    target_fps: float | None
    realtime: bool
    loop: bool
    state: str
    reason: str | None
    fps: float | None
    lag_p95: float | None
    frames_dropped: int
    people_since_start: int
    created: float
    updated: float
    worker: str | None = Field(None, description="the worker that runs it (its lease), None when none does")


def camera_out(
    live: LiveState,
    camera: Camera,
    principal: Principal,
    *,
    here: bool = True,
    stored: StoredStatus | None = None,
    worker: str | None = None,
) -> CameraOut:
    """A camera as the API shows it: live figures when this worker runs it (``here``), else its stored
    state (``stored``, as the worker running it reported it)."""
    now = live.get(camera.name) if here else None
    state, reason = (now.state, now.reason) if now is not None else ("connecting", None)
    if now is None and stored is not None:
        state, reason = stored.state, stored.reason
    return CameraOut(
        name=camera.name,
        url=camera.url if principal.allows("admin") else None,
        enabled=camera.enabled,
        preset=camera.preset,
        target_fps=camera.target_fps,
        realtime=camera.realtime,
        loop=camera.loop,
        state=state if camera.enabled else "disabled",
        reason=reason,
        fps=None if now is None else now.fps,
        lag_p95=None if now is None else now.lag_p95,
        frames_dropped=0 if now is None else now.dropped,
        people_since_start=0 if now is None else now.people,
        created=camera.created_ts,
        updated=camera.updated_ts,
        worker=worker,
    )


def _out(
    cameras: CameraManager, coordinator: Coordinator, live: LiveState, rows: list[Camera], principal: Principal
) -> list[CameraOut]:
    elsewhere = [c.name for c in rows if not cameras.runs(c.name)]
    stored = cameras.cameras.statuses() if elsewhere else {}
    return [
        camera_out(
            live,
            c,
            principal,
            here=cameras.runs(c.name),
            stored=stored.get(c.name),
            worker=coordinator.owners.get(c.name) if c.enabled else None,
        )
        for c in rows
    ]


@router.get("", summary="Every camera with its state")
def list_cameras(cameras: CamerasDep, coordinator: CoordinatorDep, live: LiveDep, principal: Viewer) -> list[CameraOut]:
    return _out(cameras, coordinator, live.state, cameras.list(), principal)


@router.post("", status_code=201, summary="Add a camera (starts at once when enabled)")
def create_camera(
    body: CameraIn, cameras: CamerasDep, coordinator: CoordinatorDep, live: LiveDep, audit: AuditDep, principal: Admin
) -> CameraOut:
    camera = cameras.create(CameraConfig(**body.model_dump()))
    audit.record(principal, "camera.create", camera.name, {"enabled": camera.enabled})
    return _out(cameras, coordinator, live.state, [camera], principal)[0]


@router.get("/{name}", summary="One camera")
def get_camera(
    name: str, cameras: CamerasDep, coordinator: CoordinatorDep, live: LiveDep, principal: Viewer
) -> CameraOut:
    return _out(cameras, coordinator, live.state, [cameras.get(name)], principal)[0]


@router.patch("/{name}", summary="Change a camera (restarts its source)")
def update_camera(
    name: str,
    body: CameraPatch,
    cameras: CamerasDep,
    coordinator: CoordinatorDep,
    live: LiveDep,
    audit: AuditDep,
    principal: Admin,
) -> CameraOut:
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "enabled", "realtime", "loop"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "invalid", f"{key} cannot be null")
    camera = cameras.update(name, changes)
    audit.record(principal, "camera.update", name, {k: v for k, v in changes.items() if k != "url"})
    return _out(cameras, coordinator, live.state, [camera], principal)[0]


@router.post("/{name}/enable", summary="Enable (start) a camera")
def enable_camera(
    name: str, cameras: CamerasDep, coordinator: CoordinatorDep, live: LiveDep, audit: AuditDep, principal: Admin
) -> CameraOut:
    camera = cameras.update(name, {"enabled": True})
    audit.record(principal, "camera.enable", name)
    return _out(cameras, coordinator, live.state, [camera], principal)[0]


@router.post("/{name}/disable", summary="Disable (stop) a camera; kept in the list")
def disable_camera(
    name: str, cameras: CamerasDep, coordinator: CoordinatorDep, live: LiveDep, audit: AuditDep, principal: Admin
) -> CameraOut:
    camera = cameras.update(name, {"enabled": False})
    audit.record(principal, "camera.disable", name)
    return _out(cameras, coordinator, live.state, [camera], principal)[0]


@router.delete("/{name}", status_code=204, summary="Remove a camera (its events and stats are kept)")
def delete_camera(name: str, cameras: CamerasDep, audit: AuditDep, principal: Admin) -> Response:
    cameras.delete(name)
    audit.record(principal, "camera.delete", name)
    return Response(status_code=204)


def _blur_for(media: Media, audit: Auditor, principal: Principal, request: Request, name: str) -> bool:
    """Faces are blurred unless an admin turned blurring off in the settings and an admin is looking;
    every unblurred view is audited."""
    if media.must_blur(admin=principal.allows("admin")):
        return True
    audit.record(principal, "media.unblurred_view", name, {"path": request.url.path})
    return False


@router.get(
    "/{name}/latest.jpg",
    summary="The latest analysed frame, annotated, faces blurred",
    response_class=Response,
    responses=binary("image/jpeg", "a JPEG"),
)
async def latest_jpeg(
    name: str, request: Request, cameras: CamerasDep, live: LiveDep, media: MediaDep, audit: AuditDep, principal: Viewer
) -> Response:
    await run_in_threadpool(cameras.get, name)
    frame = live.latest(name)
    if frame is None:
        raise ApiError(404, "no_frame", f"camera {name!r} has no analysed frame yet")
    blur = await run_in_threadpool(_blur_for, media, audit, principal, request, name)
    data = await run_in_threadpool(render_jpeg, frame.frame.image, frame.result, blur=blur)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/{name}/live.mjpeg",
    summary="Live annotated view (MJPEG), faces blurred",
    response_class=StreamingResponse,
    responses=binary("multipart/x-mixed-replace; boundary=frame", "JPEG frames, streamed until the client leaves"),
)
async def live_mjpeg(
    name: str,
    request: Request,
    cameras: CamerasDep,
    live: LiveDep,
    media: MediaDep,
    audit: AuditDep,
    principal: Viewer,
    fps: float = 4.0,
    frames: int | None = None,
) -> StreamingResponse:
    await run_in_threadpool(cameras.get, name)
    if not 0 < fps <= 15:
        raise ApiError(422, "invalid", "fps must be in (0, 15]")
    blur = await run_in_threadpool(_blur_for, media, audit, principal, request, name)

    async def parts() -> AsyncIterator[bytes]:
        last, sent = None, 0
        while not live.closing.is_set() and (frames is None or sent < frames):
            frame = live.latest(name)
            if frame is not None and frame is not last:
                last = frame
                data = await run_in_threadpool(render_jpeg, frame.frame.image, frame.result, blur=blur)
                yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n"
                yield data + b"\r\n"
                sent += 1
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(
        parts(), media_type="multipart/x-mixed-replace; boundary=frame", headers={"Cache-Control": "no-store"}
    )
