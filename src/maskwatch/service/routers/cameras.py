"""Cameras, local and remote (``node:camera``) in one list with one shape (:class:`CameraOut`): CRUD of local
cameras while running, enable/disable, live MJPEG and latest JPEG with faces blurred; a remote camera's
latest frame is asked from its node. The database lookups, audits and JPEG encoding of the live views run on
worker threads, never on the event loop. With several workers, a camera's state comes from the worker that
runs it (stored), and ``worker`` says which. A camera's privacy zones (its own, else the engine's defaults) are
black in every image served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from maskwatch.core.names import NAME_PATTERN, NODE_SEPARATOR
from maskwatch.service.auth import Principal
from maskwatch.service.camera_view import CameraKind, CameraOut
from maskwatch.service.deps import Admin, AuditDep, Auditor, CamerasDep, CameraViewDep, LiveDep, MediaDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.live import released_after
from maskwatch.service.media import Media
from maskwatch.service.routers.common import binary, stream_slot
from maskwatch.service.settings import CameraConfig
from maskwatch.service.storage.cameras import zones_json
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


@router.get("", summary="Every camera, local and remote (node:camera), with its state and people today")
def list_cameras(
    view: CameraViewDep,
    principal: Viewer,
    node: str | None = Query(None, max_length=64, description="only this edge node's cameras"),
    kind: CameraKind | None = Query(None, description="local: this server's; remote: the fleet's"),
) -> list[CameraOut]:
    return view.every(admin=principal.allows("admin"), node=node, kind=kind)


@router.post("", status_code=201, summary="Add a camera (starts at once when enabled)")
def create_camera(
    body: CameraIn, cameras: CamerasDep, view: CameraViewDep, audit: AuditDep, principal: Admin
) -> CameraOut:
    camera = cameras.create(CameraConfig(**body.model_dump()))
    audit.record(principal, "camera.create", camera.name, {"enabled": camera.enabled})
    return view.get(camera.name, admin=True)


@router.get("/{name}", summary="One camera, local or remote (node:camera)")
def get_camera(name: str, view: CameraViewDep, principal: Viewer) -> CameraOut:
    return view.get(name, admin=principal.allows("admin"))


@router.patch("/{name}", summary="Change a local camera (restarts its source)")
def update_camera(
    name: str, body: CameraPatch, cameras: CamerasDep, view: CameraViewDep, audit: AuditDep, principal: Admin
) -> CameraOut:
    view.require_local(name)
    changes = body.model_dump(exclude_unset=True)
    for key in ("url", "enabled", "realtime", "loop"):
        if key in changes and changes[key] is None:
            raise ApiError(422, "invalid", f"{key} cannot be null")
    if "privacy_zones" in changes:
        changes["privacy_zones"] = zones_json(body.privacy_zones)  # as the table holds them (restart on change)
    cameras.update(name, changes)
    audit.record(principal, "camera.update", name, {k: v for k, v in changes.items() if k != "url"})
    return view.get(name, admin=True)


@router.post("/{name}/enable", summary="Enable (start) a local camera")
def enable_camera(name: str, cameras: CamerasDep, view: CameraViewDep, audit: AuditDep, principal: Admin) -> CameraOut:
    view.require_local(name)
    cameras.update(name, {"enabled": True})
    audit.record(principal, "camera.enable", name)
    return view.get(name, admin=True)


@router.post("/{name}/disable", summary="Disable (stop) a local camera; kept in the list")
def disable_camera(name: str, cameras: CamerasDep, view: CameraViewDep, audit: AuditDep, principal: Admin) -> CameraOut:
    view.require_local(name)
    cameras.update(name, {"enabled": False})
    audit.record(principal, "camera.disable", name)
    return view.get(name, admin=True)


@router.delete("/{name}", status_code=204, summary="Remove a local camera (its events and stats are kept)")
def delete_camera(name: str, cameras: CamerasDep, view: CameraViewDep, audit: AuditDep, principal: Admin) -> Response:
    view.require_local(name)
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
    summary="The latest analysed frame, faces blurred (a remote camera's is asked from its node now)",
    description="A local camera: its latest analysed frame, annotated. A remote camera (`node:camera`): its "
    "node is asked for its latest frame (the agent's `snapshot` command), every face blurred on the node; "
    "refused with the reason when the node runs without `--snapshots` (409 `snapshots_disabled`), is "
    "offline (503 `node_offline`) or does not answer (504 `node_timeout`).",
    response_class=Response,
    responses=binary("image/jpeg", "a JPEG"),
)
async def latest_jpeg(
    name: str,
    request: Request,
    cameras: CamerasDep,
    view: CameraViewDep,
    live: LiveDep,
    media: MediaDep,
    audit: AuditDep,
    principal: Viewer,
) -> Response:
    if NODE_SEPARATOR in name:
        data = await asyncio.to_thread(view.remote_frame, name)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
    await run_in_threadpool(cameras.get, name)
    if live.latest(name) is None:
        raise ApiError(404, "no_frame", f"camera {name!r} has no analysed frame yet")
    blur = await run_in_threadpool(_blur_for, media, audit, principal, request, name)
    found = await asyncio.to_thread(live.jpeg, name, blur=blur)  # the JPEG every viewer shares
    if found is None:
        raise ApiError(404, "no_frame", f"camera {name!r} has no analysed frame yet")
    return Response(found[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})


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
    view: CameraViewDep,
    live: LiveDep,
    media: MediaDep,
    audit: AuditDep,
    principal: Viewer,
    fps: float = Query(4.0, gt=0, le=15, description="frames per second sent"),
    frames: int | None = Query(None, ge=1, description="end after this many frames (default: until closed)"),
) -> StreamingResponse:
    view.require_local(name)  # a remote camera has no live stream here: its latest.jpg asks its node
    await run_in_threadpool(cameras.get, name)
    release = stream_slot(live, principal)
    blur = await run_in_threadpool(_blur_for, media, audit, principal, request, name)

    async def parts() -> AsyncIterator[bytes]:
        last, sent = None, 0
        while not live.closing.is_set() and (frames is None or sent < frames):
            if live.latest(name) is not last:
                found = await asyncio.to_thread(live.jpeg, name, blur=blur)  # encoded once for every viewer
                if found is not None and found[0] is not last:
                    last, data = found
                    yield b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                    yield b"\r\n\r\n" + data + b"\r\n"
                    sent += 1
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(
        await released_after(parts(), release),
        media_type="multipart/x-mixed-replace; boundary=frame",
        headers={"Cache-Control": "no-store"},
    )
