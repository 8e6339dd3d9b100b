"""Cameras: CRUD while running, enable/disable, privacy zones, live MJPEG and latest JPEG with faces blurred
and privacy zones black."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from maskwatch.core.names import NAME_PATTERN
from maskwatch.service.auth import Principal
from maskwatch.service.deps import Admin, AuditDep, Auditor, CamerasDep, LiveDep, MediaDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.live import LiveState
from maskwatch.service.media import Media, render_jpeg
from maskwatch.service.routers.common import binary
from maskwatch.service.settings import CameraConfig
from maskwatch.service.storage.cameras import zones_json
from maskwatch.service.storage.models import Camera
from maskwatch.stream.config import PrivacyZones

__all__ = ["CameraIn", "CameraOut", "CameraPatch", "router"]

router = APIRouter(prefix="/cameras", tags=["cameras"])

Preset = Literal["fast", "balanced", "accurate"]
ZONES_HELP = (
    "privacy zones: polygons of [x, y] corners in fractions of the frame (0..1 from the top left; 3-64 corners, "
    "at most 16 zones), blacked out before the frame is analysed, streamed or stored; unset: "
    "engine.camera_defaults"
)


class CameraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(min_length=1, max_length=2000, description="rtsp://, http(s)://, webcam:N, a video or a folder")
    enabled: bool = True
    preset: Preset | None = None
    target_fps: float | None = Field(None, gt=0, le=120, description="unset: engine.camera_defaults")
    realtime: bool | None = Field(None, description="unset: engine.camera_defaults (fixed at creation)")
    loop: bool | None = Field(None, description="unset: engine.camera_defaults (fixed at creation)")
    privacy_zones: PrivacyZones | None = Field(None, description=ZONES_HELP)


class CameraPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, min_length=1, max_length=2000)
    enabled: bool | None = None
    preset: Preset | None = None
    target_fps: float | None = Field(None, gt=0, le=120)
    realtime: bool | None = None
    loop: bool | None = None
    privacy_zones: PrivacyZones | None = Field(None, description=ZONES_HELP + " (null: back to the default)")


class CameraOut(BaseModel):
    name: str
    url: str | None = Field(None, description="admins only (it may hold credentials)")
    enabled: bool
    preset: str | None
    target_fps: float | None
    realtime: bool
    loop: bool
    privacy_zones: list[list[list[float]]] | None = Field(
        description="the camera's own privacy zones ([x, y] in fractions of the frame); null: engine.camera_defaults"
    )
    state: str
    reason: str | None
    fps: float | None
    lag_p95: float | None
    frames_dropped: int
    people_since_start: int
    created: float
    updated: float


def camera_out(live: LiveState, camera: Camera, principal: Principal) -> CameraOut:
    now = live.get(camera.name)
    return CameraOut(
        name=camera.name,
        url=camera.url if principal.allows("admin") else None,
        enabled=camera.enabled,
        preset=camera.preset,
        target_fps=camera.target_fps,
        realtime=camera.realtime,
        loop=camera.loop,
        privacy_zones=zones_json(camera.privacy_zones),
        state=now.state if camera.enabled else "disabled",
        reason=now.reason,
        fps=now.fps,
        lag_p95=now.lag_p95,
        frames_dropped=now.dropped,
        people_since_start=now.people,
        created=camera.created_ts,
        updated=camera.updated_ts,
    )


@router.get("", summary="Every camera with its state")
def list_cameras(cameras: CamerasDep, live: LiveDep, principal: Viewer) -> list[CameraOut]:
    return [camera_out(live.state, c, principal) for c in cameras.list()]


@router.post("", status_code=201, summary="Add a camera (starts at once when enabled)")
def create_camera(body: CameraIn, cameras: CamerasDep, live: LiveDep, audit: AuditDep, principal: Admin) -> CameraOut:
    camera = cameras.create(CameraConfig(**body.model_dump()))
    audit.record(principal, "camera.create", camera.name, {"enabled": camera.enabled})
    return camera_out(live.state, camera, principal)


@router.get("/{name}", summary="One camera")
def get_camera(name: str, cameras: CamerasDep, live: LiveDep, principal: Viewer) -> CameraOut:
    return camera_out(live.state, cameras.get(name), principal)


@router.patch("/{name}", summary="Change a camera (restarts its source)")
def update_camera(
    name: str, body: CameraPatch, cameras: CamerasDep, live: LiveDep, audit: AuditDep, principal: Admin
) -> CameraOut:
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "enabled", "realtime", "loop"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "invalid", f"{key} cannot be null")
    if "privacy_zones" in changes:
        changes["privacy_zones"] = zones_json(body.privacy_zones)  # as the table holds them (restart on change)
    camera = cameras.update(name, changes)
    audit.record(principal, "camera.update", name, {k: v for k, v in changes.items() if k != "url"})
    return camera_out(live.state, camera, principal)


@router.post("/{name}/enable", summary="Enable (start) a camera")
def enable_camera(name: str, cameras: CamerasDep, live: LiveDep, audit: AuditDep, principal: Admin) -> CameraOut:
    camera = cameras.update(name, {"enabled": True})
    audit.record(principal, "camera.enable", name)
    return camera_out(live.state, camera, principal)


@router.post("/{name}/disable", summary="Disable (stop) a camera; kept in the list")
def disable_camera(name: str, cameras: CamerasDep, live: LiveDep, audit: AuditDep, principal: Admin) -> CameraOut:
    camera = cameras.update(name, {"enabled": False})
    audit.record(principal, "camera.disable", name)
    return camera_out(live.state, camera, principal)


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
    cameras.get(name)
    frame = live.latest(name)
    if frame is None:
        raise ApiError(404, "no_frame", f"camera {name!r} has no analysed frame yet")
    blur = _blur_for(media, audit, principal, request, name)
    data = await asyncio.to_thread(render_jpeg, frame.frame.image, frame.result, blur=blur)
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
    cameras.get(name)
    if not 0 < fps <= 15:
        raise ApiError(422, "invalid", "fps must be in (0, 15]")
    blur = _blur_for(media, audit, principal, request, name)

    async def parts() -> AsyncIterator[bytes]:
        last, sent = None, 0
        while not live.closing.is_set() and (frames is None or sent < frames):
            frame = live.latest(name)
            if frame is not None and frame is not last:
                last = frame
                data = await asyncio.to_thread(render_jpeg, frame.frame.image, frame.result, blur=blur)
                yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode() + b"\r\n\r\n"
                yield data + b"\r\n"
                sent += 1
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(
        parts(), media_type="multipart/x-mixed-replace; boundary=frame", headers={"Cache-Control": "no-store"}
    )
