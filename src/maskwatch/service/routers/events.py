"""Person events (the engine's ``track_ended``), newest first with cursor paging; false-positive marks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from maskwatch.service.auth import audit
from maskwatch.service.deps import Operator, ServiceDep, Viewer, client_ip
from maskwatch.service.errors import ApiError
from maskwatch.service.routers.common import db_errors, iso, to_ts
from maskwatch.service.storage.models import PersonEvent

router = APIRouter(prefix="/events", tags=["events"])


class EventOut(BaseModel):
    id: int
    event_id: str
    type: str
    camera: str
    time: str | None
    label: str
    compliant: bool
    probability: float
    n_frames: int
    false_positive: bool
    has_snapshot: bool
    event: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


def event_out(row: PersonEvent) -> EventOut:
    return EventOut(
        id=row.id,
        event_id=row.event_id,
        type=row.type,
        camera=row.camera,
        time=iso(row.ts),
        label=row.label,
        compliant=row.compliant,
        probability=row.probability,
        n_frames=row.n_frames,
        false_positive=row.false_positive,
        has_snapshot=row.snapshot is not None,
        event=row.data,
    )


@router.get("", response_model=EventPage, summary="Person events with filters, newest first, cursor paging")
def list_events(
    service: ServiceDep,
    _: Viewer,
    camera: str | None = None,
    verdict: str | None = Query(None, description="a class name (with_mask, ...), or compliant / noncompliant"),
    from_: datetime | None = Query(None, alias="from"),
    to: datetime | None = None,
    false_positive: bool | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> EventPage:
    q = select(PersonEvent).order_by(PersonEvent.id.desc()).limit(limit)
    if camera:
        q = q.where(PersonEvent.camera == camera)
    if verdict == "compliant":
        q = q.where(PersonEvent.compliant.is_(True))
    elif verdict == "noncompliant":
        q = q.where(PersonEvent.compliant.is_(False))
    elif verdict:
        q = q.where(PersonEvent.label == verdict)
    start, end = to_ts(from_), to_ts(to)
    if start is not None:
        q = q.where(PersonEvent.ts >= start)
    if end is not None:
        q = q.where(PersonEvent.ts < end)
    if false_positive is not None:
        q = q.where(PersonEvent.false_positive.is_(false_positive))
    if cursor:
        before = _row_id(cursor)
        if before is None:
            raise ApiError(422, "invalid", "cursor must be a next_cursor value from a previous page")
        q = q.where(PersonEvent.id < before)
    with db_errors(), service.sessions() as s:
        rows = s.scalars(q).all()
    items = [event_out(r) for r in rows]
    return EventPage(items=items, next_cursor=str(rows[-1].id) if len(rows) == limit else None)


def _row_id(text: str) -> int | None:
    """A database row id written in ASCII digits (``'¹'.isdigit()`` is true too), small enough for SQLite."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _find(s: Any, key: str) -> PersonEvent:
    row = None
    row_id = _row_id(key)
    if row_id is not None:
        row = s.get(PersonEvent, row_id)
    if row is None:
        row = s.scalars(select(PersonEvent).where(PersonEvent.event_id == key[:64])).first()
    if row is None:
        raise ApiError(404, "not_found", f"no event {key!r}")
    return row


@router.get("/{key}", response_model=EventOut, summary="One event (by id or event id)")
def get_event(key: str, service: ServiceDep, _: Viewer) -> EventOut:
    with db_errors(), service.sessions() as s:
        return event_out(_find(s, key))


class Mark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    false_positive: bool = True


@router.post("/{key}/false-positive", response_model=EventOut, summary="Mark (or unmark) as a false positive")
def mark_false_positive(
    key: str, request: Request, service: ServiceDep, principal: Operator, body: Mark | None = None
) -> EventOut:
    value = True if body is None else body.false_positive
    with db_errors(), service.sessions() as s, s.begin():
        row = _find(s, key)
        row.false_positive = value
        out = event_out(row)
    audit(service.sessions, principal, "event.false_positive", row.event_id, {"value": value}, client_ip(request))
    return out


@router.get(
    "/{key}/snapshot",
    summary="The event's snapshot (when privacy.snapshots is on): the person's best view, faces blurred",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def snapshot(key: str, request: Request, service: ServiceDep, principal: Viewer) -> Response:
    with db_errors(), service.sessions() as s:
        row = _find(s, key)
    if row.snapshot is None:
        raise ApiError(404, "no_snapshot", "this event has no snapshot (privacy.snapshots is off by default)")
    root = service.snapshots_dir.resolve()
    path = (root / row.snapshot).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ApiError(404, "no_snapshot", "the snapshot file is gone (retention)")
    data = path.read_bytes()
    headers = {"Cache-Control": "private, no-store"}
    if path.name.endswith(".unblurred.jpg"):
        # stored unblurred (an admin turned blurring off): admins see it while blurring stays off, and each
        # view is audited; everyone else (or everyone once blurring is back on) gets it pixelated whole
        if service.settings.privacy.blur_faces or not principal.allows("admin"):
            return Response(_pixelated(data), media_type="image/jpeg", headers=headers)
        details = {"path": request.url.path}
        audit(service.sessions, principal, "media.unblurred_view", row.event_id, details, client_ip(request))
    return Response(data, media_type="image/jpeg", headers=headers)


def _pixelated(jpeg: bytes) -> bytes:
    import cv2
    import numpy as np

    from maskwatch.detection.privacy import pixelate

    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ApiError(404, "no_snapshot", "the snapshot file is unreadable")
    h, w = image.shape[:2]
    ok, out = cv2.imencode(".jpg", pixelate(image, [(0.0, 0.0, float(w), float(h))]))
    if not ok:
        raise ApiError(404, "no_snapshot", "the snapshot could not be encoded")
    return out.tobytes()
