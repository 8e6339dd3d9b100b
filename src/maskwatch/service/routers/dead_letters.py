"""Dead letters: what the control room could not store (an MQTT message it cannot read, an event the
database refused), with the reason, newest first. Operators read them; an admin deletes one once it has been
dealt with (the deletion is audited). Retention removes them after ``retention.audit_days``."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from maskwatch.core.timeutil import iso
from maskwatch.service.deps import MAX_ID, Admin, AuditDep, IdPath, Operator, StorageDep
from maskwatch.service.errors import ApiError
from maskwatch.service.storage.models import DeadLetter

__all__ = ["DeadLetterOut", "DeadLetterPage", "DeadLetterReason", "router"]

router = APIRouter(prefix="/dead-letters", tags=["fleet"])

PAYLOAD_SHOWN = 16 * 1024  # bytes of a payload in a listing


class DeadLetterOut(BaseModel):
    id: int
    reason: str = Field(
        description="oversized, topic, json, schema, invalid, mismatch (MQTT ingest) or storage (the database "
        "refused the event)"
    )
    topic: str | None = Field(description="the MQTT topic; None for storage refusals")
    node: str | None
    event_id: str | None
    detail: str = Field(description="why, in words")
    size: int = Field(description="the payload's full size in bytes")
    count: int = Field(description="times the same message arrived (a node resends what is not acknowledged)")
    first_seen: str | None
    last_seen: str | None
    payload: str = Field(description="the payload as text (its first 16 KiB; bytes that are not UTF-8 replaced)")
    payload_base64: str | None = Field(description="the payload's first 16 KiB in base64 when it is not UTF-8")


class DeadLetterReason(BaseModel):
    reason: str
    letters: int
    messages: int


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: int | None = Field(description="`cursor` of the next page; None on the last page")
    reasons: list[DeadLetterReason] = Field(description="every dead letter stored, by reason")


def letter_out(row: DeadLetter) -> DeadLetterOut:
    shown = bytes(row.payload[:PAYLOAD_SHOWN])
    try:
        text, encoded = shown.decode(), None
    except UnicodeDecodeError:
        text, encoded = shown.decode(errors="replace"), base64.b64encode(shown).decode()
    return DeadLetterOut(
        id=row.id,
        reason=row.reason,
        topic=row.topic,
        node=row.node,
        event_id=row.event_id,
        detail=row.detail,
        size=row.size,
        count=row.count,
        first_seen=iso(row.first_ts),
        last_seen=iso(row.last_ts),
        payload=text,
        payload_base64=encoded,
    )


@router.get("", summary="Messages and events the control room could not store, with the reason (newest first)")
def list_dead_letters(
    storage: StorageDep,
    _: Operator,
    reason: str | None = Query(None, max_length=32),
    limit: int = Query(50, ge=1, le=500),
    cursor: int | None = Query(None, ge=0, le=MAX_ID),
) -> DeadLetterPage:
    rows = storage.dead_letters.page(reason=reason, before=cursor, limit=limit)
    reasons = [DeadLetterReason(reason=c.reason, letters=c.letters, messages=c.messages)
               for c in storage.dead_letters.counts()]  # fmt: skip
    return DeadLetterPage(
        items=[letter_out(r) for r in rows], next_cursor=rows[-1].id if len(rows) == limit else None, reasons=reasons
    )


@router.get("/{letter_id}", summary="One dead letter")
def get_dead_letter(letter_id: IdPath, storage: StorageDep, _: Operator) -> DeadLetterOut:
    row = storage.dead_letters.get(letter_id)
    if row is None:
        raise ApiError(404, "not_found", f"no dead letter {letter_id}")
    return letter_out(row)


@router.delete("/{letter_id}", status_code=204, summary="Forget a dead letter that has been dealt with")
def delete_dead_letter(letter_id: IdPath, storage: StorageDep, audit: AuditDep, principal: Admin) -> Response:
    if not storage.dead_letters.delete(letter_id):
        raise ApiError(404, "not_found", f"no dead letter {letter_id}")
    audit.record(principal, "dead_letter.delete", f"dead_letter:{letter_id}")
    return Response(status_code=204)
