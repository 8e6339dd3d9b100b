"""Cameras: CRUD while running, enable/disable, live MJPEG and latest JPEG with faces blurred."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from maskwatch.service.auth import Principal, audit
from maskwatch.service.deps import Admin, ServiceDep, Viewer, client_ip
from maskwatch.service.errors import ApiError
from maskwatch.service.live import render_jpeg
from maskwatch.service.storage.models import Camera

router = APIRouter(prefix="/cameras", tags=["cameras"])

Preset = Literal["fast", "balanced", "accurate"]


class CameraIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
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


def camera_out(service: Any, camera: Camera, principal: Principal) -> CameraOut:
    live = service.live.get(camera.name)
    return CameraOut(
        name=camera.name,
        url=camera.url if principal.allows("admin") else None,
        enabled=camera.enabled,
        preset=camera.preset,
        target_fps=camera.target_fps,
        realtime=camera.realtime,
        loop=camera.loop,
        state=live.state if camera.enabled else "disabled",
        reason=live.reason,
        fps=live.fps,
        lag_p95=live.lag_p95,
        frames_dropped=live.dropped,
        people_since_start=live.people,
        created=camera.created_ts,
        updated=camera.updated_ts,
    )


@router.get("", response_model=list[CameraOut], summary="Every camera with its state")
def list_cameras(service: ServiceDep, principal: Viewer) -> list[CameraOut]:
    return [camera_out(service, c, principal) for c in service.cameras.list()]


@router.post("", response_model=CameraOut, status_code=201, summary="Add a camera (starts at once when enabled)")
def create_camera(body: CameraIn, request: Request, service: ServiceDep, principal: Admin) -> CameraOut:
    camera = service.cameras.create(body.model_dump())
    audit(service.sessions, principal, "camera.create", camera.name, {"enabled": camera.enabled}, client_ip(request))
    return camera_out(service, camera, principal)


@router.get("/{name}", response_model=CameraOut, summary="One camera")
def get_camera(name: str, service: ServiceDep, principal: Viewer) -> CameraOut:
    return camera_out(service, service.cameras.get(name), principal)


@router.patch("/{name}", response_model=CameraOut, summary="Change a camera (restarts its source)")
def update_camera(name: str, body: CameraPatch, request: Request, service: ServiceDep, principal: Admin) -> CameraOut:
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "enabled", "realtime", "loop"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "invalid", f"{key} cannot be null")
    camera = service.cameras.update(name, changes)
    audit(
        service.sessions,
        principal,
        "camera.update",
        name,
        {k: v for k, v in changes.items() if k != "url"},
        client_ip(request),
    )
    return camera_out(service, camera, principal)


@router.post("/{name}/enable", response_model=CameraOut, summary="Enable (start) a camera")
def enable_camera(name: str, request: Request, service: ServiceDep, principal: Admin) -> CameraOut:
    camera = service.cameras.update(name, {"enabled": True})
    audit(service.sessions, principal, "camera.enable", name, None, client_ip(request))
    return camera_out(service, camera, principal)


@router.post("/{name}/disable", response_model=CameraOut, summary="Disable (stop) a camera; kept in the list")
def disable_camera(name: str, request: Request, service: ServiceDep, principal: Admin) -> CameraOut:
    camera = service.cameras.update(name, {"enabled": False})
    audit(service.sessions, principal, "camera.disable", name, None, client_ip(request))
    return camera_out(service, camera, principal)


@router.delete("/{name}", status_code=204, summary="Remove a camera (its events and stats are kept)")
def delete_camera(name: str, request: Request, service: ServiceDep, principal: Admin) -> Response:
    service.cameras.delete(name)
    audit(service.sessions, principal, "camera.delete", name, None, client_ip(request))
    return Response(status_code=204)


def _blur_for(service: Any, principal: Principal, request: Request, name: str) -> bool:
    """Faces are blurred unless an admin turned blurring off in the settings and an admin is looking;
    every unblurred view is audited."""
    if service.settings.privacy.blur_faces or not principal.allows("admin"):
        return True
    audit(service.sessions, principal, "media.unblurred_view", name, {"path": request.url.path}, client_ip(request))
    return False


@router.get(
    "/{name}/latest.jpg",
    summary="The latest analysed frame, annotated, faces blurred",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def latest_jpeg(name: str, request: Request, service: ServiceDep, principal: Viewer) -> Response:
    service.cameras.get(name)
    frame = service.engine.latest(name)
    if frame is None:
        raise ApiError(404, "no_frame", f"camera {name!r} has no analysed frame yet")
    blur = _blur_for(service, principal, request, name)
    data = await asyncio.to_thread(render_jpeg, frame.frame.image, frame.result, blur=blur)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get(
    "/{name}/live.mjpeg",
    summary="Live annotated view (MJPEG), faces blurred",
    response_class=StreamingResponse,
    responses={200: {"content": {"multipart/x-mixed-replace; boundary=frame": {}}}},
)
async def live_mjpeg(
    name: str, request: Request, service: ServiceDep, principal: Viewer, fps: float = 4.0, frames: int | None = None
) -> StreamingResponse:
    service.cameras.get(name)
    if not 0 < fps <= 15:
        raise ApiError(422, "invalid", "fps must be in (0, 15]")
    blur = _blur_for(service, principal, request, name)

    async def parts() -> AsyncIterator[bytes]:
        last, sent = None, 0
        while not service.stopping.is_set() and (frames is None or sent < frames):
            frame = service.engine.latest(name)
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
