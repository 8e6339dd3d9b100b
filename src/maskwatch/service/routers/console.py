"""What the dashboard needs to know about the caller and the server before it draws a page: which actions the
caller's role allows (each with the role it needs and, when refused, the reason shown beside the disabled
button), whether snapshots are kept, whether this server ingests the fleet, and what "people today" means.

:data:`ACTIONS` is the one table of the dashboard's actions and their roles; ``tests/test_console_api.py``
checks it against the routes' own role checks."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from maskwatch.service.camera_view import PEOPLE_TODAY, day_start
from maskwatch.service.deps import CameraViewDep, SettingsDep, Viewer

__all__ = ["ACTIONS", "Action", "ConsoleInfo", "router"]

router = APIRouter(tags=["console"])

RoleName = Literal["viewer", "operator", "admin"]

#: every action of the dashboard: (least role, what it is, the API route it calls)
ACTIONS: dict[str, tuple[RoleName, str, str]] = {
    "upload": ("operator", "analysing an uploaded image", "POST /infer"),
    "jobs": ("operator", "starting or cancelling a batch job", "POST /jobs"),
    "acknowledge": ("operator", "acknowledging an alert", "POST /alerts/{alert_id}/ack"),
    "false_positive": ("operator", "marking an event as a false positive", "POST /events/{key}/false-positive"),
    "cameras": ("admin", "adding, changing, enabling or removing cameras", "POST /cameras"),
    "rules": ("admin", "adding, editing, enabling or test-firing alert rules", "POST /alert-rules"),
    "tokens": ("admin", "making and revoking API tokens", "POST /tokens"),
    "audit": ("admin", "reading the audit log", "GET /audit"),
}


class Action(BaseModel):
    allowed: bool
    needs: RoleName = Field(description="the least role that may do it")
    reason: str | None = Field(description="why not, when not allowed (shown beside the disabled control)")


class ConsoleInfo(BaseModel):
    user: str
    role: str
    actions: dict[str, Action] = Field(description="upload, jobs, acknowledge, false_positive, cameras, rules, ...")
    snapshots: bool = Field(description="snapshots of people are kept (privacy.snapshots; faces blurred)")
    blur_faces: bool
    fleet: bool = Field(description="this server ingests edge nodes (serve --mqtt): remote cameras, frames on demand")
    nodes: list[str] = Field(description="edge nodes this server knows (for the camera filter)")
    people_today: str = Field(description="what 'people today' counts")
    day_start: float = Field(description="the start of today (epoch seconds)")


@router.get("/console", summary="The dashboard's view of the caller and the server: allowed actions, snapshots, fleet")
def console(principal: Viewer, settings: SettingsDep, view: CameraViewDep) -> ConsoleInfo:
    actions = {}
    for name, (role, what, _route) in ACTIONS.items():
        allowed = principal.allows(role)
        you = principal.role
        reason = None if allowed else f"{what.capitalize()} needs the {role} role; you are signed in as {you}"
        actions[name] = Action(allowed=allowed, needs=role, reason=reason)
    return ConsoleInfo(
        user=principal.name,
        role=principal.role,
        actions=actions,
        snapshots=settings.privacy.snapshots,
        blur_faces=settings.privacy.blur_faces,
        fleet=view.commander is not None,
        nodes=view.nodes(),
        people_today=PEOPLE_TODAY,
        day_start=day_start(zone=view.zone),
    )
