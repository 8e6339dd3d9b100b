"""Person events (the engine's ``track_ended``), newest first with cursor paging; false-positive marks;
their snapshots; exports of what the filters select (CSV or JSON Lines, the dashboard's CSV link included)
and erasure by filter, each audited."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from maskwatch.core.timeutil import iso
from maskwatch.service.auth import Principal
from maskwatch.service.deps import Admin, AuditDep, Auditor, ClassesDep, MediaDep, Operator, StorageDep, Viewer
from maskwatch.service.errors import ApiError
from maskwatch.service.media import pixelate_whole
from maskwatch.service.routers.common import BINARY, binary, to_ts
from maskwatch.service.storage import Storage
from maskwatch.service.storage.events import EventFilter, row_id
from maskwatch.service.storage.models import PersonEvent

__all__ = ["EXPORT_PAGE", "Erased", "EventOut", "EventPage", "router"]

EXPORT_PAGE = 1000  # events read from the database per step of an export

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
ExportFormat = Literal["csv", "jsonl"]


def _rows(storage: Storage, where: EventFilter, limit: int) -> Iterator[PersonEvent]:
    """At most ``limit`` events ``where`` selects, newest first, a page at a time (bounded memory)."""
    before, left = None, limit
    while left > 0:
        page = storage.events.page(where, before=before, limit=min(left, EXPORT_PAGE))
        yield from page
        if len(page) < min(left, EXPORT_PAGE):
            return
        left -= len(page)
        before = page[-1].id


def _csv_lines(rows: Iterator[PersonEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        out = event_out(row)
        writer.writerow([getattr(out, column) for column in CSV_COLUMNS])
        if buffer.tell() > 1 << 16:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _export(
    storage: Storage, audit: Auditor, principal: Principal, where: EventFilter, format: ExportFormat, limit: int
) -> StreamingResponse:
    """The one export: audited, streamed a page at a time."""
    audit.record(principal, "export.events", where.camera, {"format": format, "filter": _described(where)})
    if format == "csv":
        body: Iterator[str] = _csv_lines(_rows(storage, where, limit))
        media_type, name = "text/csv", "maskwatch-events.csv"
    else:
        body = (event_out(row).model_dump_json() + "\n" for row in _rows(storage, where, limit))
        media_type, name = "application/x-ndjson", "maskwatch-events.jsonl"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return StreamingResponse(body, media_type=media_type, headers=headers)


EXPORT_LIMIT = Query(10_000, ge=1, le=100_000, description="at most this many events (the newest)")


@router.get(
    "/export",
    summary="Export the events the filters select, newest first (CSV or JSON Lines); every export is audited",
    response_class=StreamingResponse,
    responses={200: {"description": "text/csv or application/x-ndjson", "content": {"text/csv": {"schema": BINARY},
               "application/x-ndjson": {"schema": BINARY}}}},
)  # fmt: skip
def export_events(
    storage: StorageDep,
    audit: AuditDep,
    principal: Viewer,
    where: EventFilterDep,
    format: ExportFormat = Query("csv", description="csv: one row per event; jsonl: EventOut per line"),
    limit: int = EXPORT_LIMIT,
) -> StreamingResponse:
    return _export(storage, audit, principal, where, format, limit)


@router.get(
    "/export.csv",
    summary="The filtered list of events as CSV (the dashboard's link): GET /events/export?format=csv",
    response_class=StreamingResponse,
    responses=binary("text/csv", f"one row per event: {', '.join(CSV_COLUMNS)}"),
)
def export_events_csv(
    storage: StorageDep, audit: AuditDep, principal: Viewer, where: EventFilterDep, limit: int = EXPORT_LIMIT
) -> StreamingResponse:
    return _export(storage, audit, principal, where, "csv", limit)


class Erased(BaseModel):
    events: int = Field(description="events deleted")
    snapshots: int = Field(description="snapshot files deleted with them")


@router.delete("", summary="Erase the events a filter selects, with their snapshots (audited; needs a filter)")
def erase_events(
    storage: StorageDep,
    media: MediaDep,
    audit: AuditDep,
    principal: Admin,
    where: EventFilterDep,
    all: bool = Query(False, description="erase every event (no filter): must be said explicitly"),
) -> Erased:
    if where == EventFilter() and not all:
        raise ApiError(422, "invalid", "say which events to erase (camera, verdict, from, to, false_positive), or all")
    n, refs = storage.events.erase(where)
    files = media.delete(refs)
    audit.record(
        principal, "events.erase", where.camera, {"filter": _described(where), "events": n, "snapshots": files}
    )
    return Erased(events=n, snapshots=files)


def _described(where: EventFilter) -> dict[str, object]:
    """A filter as the audit log records it (only what was set)."""
    return {k: v for k, v in vars(where).items() if v is not None}


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
    if not stored.unblurred or media.must_blur(admin=principal.allows("admin")):
        audit.record(principal, "media.snapshot_view", row.event_id, {"path": request.url.path})
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
