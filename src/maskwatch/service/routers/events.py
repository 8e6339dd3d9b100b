"""Person events (the engine's ``track_ended``), newest first with cursor paging; the same filters (camera,
verdict, time range, false positives) for a CSV export of the filtered list; false-positive marks; their
snapshots."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from maskwatch.core.timeutil import iso
from maskwatch.service.deps import AuditDep, ClassesDep, MediaDep, Operator, StorageDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.media import pixelate_whole
from maskwatch.service.routers.common import binary, to_ts
from maskwatch.service.storage import Storage
from maskwatch.service.storage.events import EventFilter, row_id
from maskwatch.service.storage.models import PersonEvent

__all__ = ["EventOut", "EventPage", "router"]

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
    event: dict[str, JsonValue] = Field(description="the engine's track_ended event as published (maskwatch.event/1)")


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


VERDICTS = ("compliant", "noncompliant")


def event_filter(
    classes: ClassesDep,
    camera: str | None = Query(None, max_length=200, description="a camera (local, or node:camera)"),
    verdict: str | None = Query(None, description="compliant, noncompliant, or a class of the model (with_mask, ...)"),
    from_: datetime | None = Query(None, alias="from", description="events from this time on (ISO 8601)"),
    to: datetime | None = Query(None, description="events before this time (ISO 8601)"),
    false_positive: bool | None = None,
) -> EventFilter:
    """The filters of the event list and of its CSV export, checked the same way for both."""
    if verdict is not None and verdict not in (*VERDICTS, *classes):
        raise ApiError(422, "invalid", f"verdict must be one of {', '.join((*VERDICTS, *classes))}; got {verdict!r}")
    start, end = to_ts(from_), to_ts(to)
    if start is not None and end is not None and start >= end:
        raise ApiError(422, "invalid", "'from' must be before 'to'")
    return EventFilter(camera, verdict, start, end, false_positive)


EventFilterDep = Annotated[EventFilter, Depends(event_filter)]


@router.get("", summary="Person events with filters, newest first, cursor paging")
def list_events(
    storage: StorageDep,
    _: Viewer,
    where: EventFilterDep,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> EventPage:
    before = None
    if cursor:
        before = row_id(cursor)
        if before is None:
            raise ApiError(422, "invalid", "cursor must be a next_cursor value from a previous page")
    rows = storage.events.page(where, before=before, limit=limit)
    return EventPage(items=[event_out(r) for r in rows], next_cursor=str(rows[-1].id) if len(rows) == limit else None)


CSV_COLUMNS = ("id", "event_id", "time", "camera", "label", "compliant", "probability", "n_frames",
               "false_positive", "has_snapshot")  # fmt: skip


@router.get(
    "/export.csv",
    summary="The filtered list of events as CSV (the same filters as GET /events), newest first",
    response_class=Response,
    responses=binary("text/csv", f"one row per event: {', '.join(CSV_COLUMNS)}"),
)
def export_events(
    storage: StorageDep,
    _: Viewer,
    where: EventFilterDep,
    limit: int = Query(10_000, ge=1, le=100_000, description="at most this many events (the newest)"),
) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    before = None
    left = limit
    while left > 0:  # in pages: the id index, newest first
        rows = storage.events.page(where, before=before, limit=min(left, 1000))
        for r in rows:
            writer.writerow([r.id, r.event_id, iso(r.ts), r.camera, r.label, r.compliant, round(r.probability, 4),
                             r.n_frames, r.false_positive, r.snapshot is not None])  # fmt: skip
        if len(rows) < min(left, 1000):
            break
        left -= len(rows)
        before = rows[-1].id
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="maskwatch-events.csv"', "Cache-Control": "no-store"},
    )


def _find(storage: Storage, key: str) -> PersonEvent:
    row = storage.events.find(key)
    if row is None:
        raise ApiError(404, "not_found", f"no event {key!r}")
    return row


@router.get("/{key}", summary="One event (by id or event id)")
def get_event(key: str, storage: StorageDep, _: Viewer) -> EventOut:
    return event_out(_find(storage, key))


class Mark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    false_positive: bool = True


@router.post("/{key}/false-positive", summary="Mark (or unmark) as a false positive")
def mark_false_positive(
    key: str, storage: StorageDep, audit: AuditDep, principal: Operator, body: Mark | None = None
) -> EventOut:
    value = True if body is None else body.false_positive
    row = storage.events.mark_false_positive(key, value)
    if row is None:
        raise ApiError(404, "not_found", f"no event {key!r}")
    audit.record(principal, "event.false_positive", row.event_id, {"value": value})
    return event_out(row)


@router.get(
    "/{key}/snapshot",
    summary="The event's snapshot (when privacy.snapshots is on): the person's best view, faces blurred",
    response_class=Response,
    responses=binary("image/jpeg", "a JPEG"),
)
def snapshot(
    key: str, request: Request, storage: StorageDep, media: MediaDep, audit: AuditDep, principal: Viewer
) -> Response:
    row = _find(storage, key)
    if row.snapshot is None:
        raise ApiError(404, "no_snapshot", "this event has no snapshot (privacy.snapshots is off by default)")
    stored = media.read(row.snapshot)
    if stored is None:
        raise ApiError(404, "no_snapshot", "the snapshot file is gone (retention)")
    headers = {"Cache-Control": "private, no-store"}
    if stored.unblurred:
        # stored unblurred (an admin turned blurring off): admins see it while blurring stays off, and each
        # view is audited; everyone else (or everyone once blurring is back on) gets it pixelated whole
        if media.must_blur(admin=principal.allows("admin")):
            pixelated = pixelate_whole(stored.data)
            if pixelated is None:
                raise ApiError(404, "no_snapshot", "the snapshot file is unreadable")
            return Response(pixelated, media_type="image/jpeg", headers=headers)
        audit.record(principal, "media.unblurred_view", row.event_id, {"path": request.url.path})
    return Response(stored.data, media_type="image/jpeg", headers=headers)
