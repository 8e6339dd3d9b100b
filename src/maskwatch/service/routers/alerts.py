"""Alerts (list, acknowledge) and alert rules (CRUD)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from maskwatch.service.alerts import alert_dict
from maskwatch.service.auth import audit
from maskwatch.service.deps import MAX_ID, Admin, IdPath, Operator, ServiceDep, Viewer, client_ip
from maskwatch.service.errors import ApiError
from maskwatch.service.routers.common import db_errors
from maskwatch.service.settings import AlertRuleConfig
from maskwatch.service.storage.models import Alert, AlertRule, WebhookDelivery

router = APIRouter(tags=["alerts"])


@router.get("/alerts", summary="Alerts, newest first")
def list_alerts(
    service: ServiceDep,
    _: Viewer,
    state: Literal["firing", "resolved"] | None = None,
    camera: str | None = None,
    acknowledged: bool | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: int | None = Query(None, ge=0, le=MAX_ID),
) -> dict:
    q = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if state:
        q = q.where(Alert.state == state)
    if camera:
        q = q.where(Alert.camera == camera)
    if acknowledged is not None:
        q = q.where(Alert.acknowledged_ts.is_not(None) if acknowledged else Alert.acknowledged_ts.is_(None))
    if cursor is not None:
        q = q.where(Alert.id < cursor)
    with db_errors(), service.sessions() as s:
        rows = s.scalars(q).all()
    return {"items": [alert_dict(r) for r in rows], "next_cursor": rows[-1].id if len(rows) == limit else None}


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge an alert")
def acknowledge(alert_id: IdPath, request: Request, service: ServiceDep, principal: Operator) -> dict:
    with db_errors(), service.sessions() as s, s.begin():
        row = s.get(Alert, alert_id)
        if row is None:
            raise ApiError(404, "not_found", f"no alert {alert_id}")
        if row.acknowledged_ts is None:
            row.acknowledged_by, row.acknowledged_ts = principal.name, time.time()
        out = alert_dict(row)
    service.hub.publish("alert", {"transition": "acknowledged", "alert": out})
    audit(service.sessions, principal, "alert.ack", f"alert:{alert_id}", None, client_ip(request))
    return out


@router.get("/alerts/{alert_id}/deliveries", summary="Webhook delivery attempts of an alert")
def deliveries(alert_id: IdPath, service: ServiceDep, _: Admin) -> list[dict]:
    with db_errors(), service.sessions() as s:
        rows = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.alert_id == alert_id).order_by(WebhookDelivery.id)
        ).all()
    return [
        {
            "id": r.id,
            "transition": r.transition,
            "attempt": r.attempt,
            "ok": r.ok,
            "status_code": r.status_code,
            "error": r.error,
            "time": r.ts,
            "duration_ms": r.duration_ms,
        }
        for r in rows
    ]


class RuleIn(AlertRuleConfig):
    pass


class RulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=100)
    camera: str | None = None
    threshold: float | None = None
    window_s: float | None = Field(None, gt=0)
    min_people: int | None = Field(None, ge=1)
    for_s: float | None = Field(None, ge=0)
    hysteresis: float | None = Field(None, ge=0)
    cooldown_s: float | None = Field(None, ge=0)
    active_hours: str | None = None
    enabled: bool | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None


def rule_out(row: AlertRule) -> dict:
    out = {
        c: getattr(row, c)
        for c in (
            "id",
            "name",
            "kind",
            "camera",
            "threshold",
            "window_s",
            "min_people",
            "for_s",
            "hysteresis",
            "cooldown_s",
            "active_hours",
            "enabled",
            "webhook_url",
        )
    }
    out["has_webhook_secret"] = bool(row.webhook_secret)
    return out


def _check(rule: AlertRuleConfig) -> None:
    if rule.kind == "compliance_below" and (rule.threshold is None or not 0 <= rule.threshold <= 1):
        raise ApiError(422, "invalid", "compliance_below needs a threshold between 0 and 1")
    if rule.kind == "camera_lagging" and (rule.threshold is None or rule.threshold <= 0):
        raise ApiError(422, "invalid", "camera_lagging needs a threshold in seconds (> 0)")
    if rule.kind == "unmasked_person" and not rule.camera:
        raise ApiError(422, "invalid", "unmasked_person is opt-in per camera: give a camera")


@router.get("/alert-rules", summary="Alert rules (webhook secrets are never shown)")
def list_rules(service: ServiceDep, _: Viewer) -> list[dict]:
    with db_errors(), service.sessions() as s:
        return [rule_out(r) for r in s.scalars(select(AlertRule).order_by(AlertRule.id))]


@router.post("/alert-rules", status_code=201, summary="Add an alert rule")
def create_rule(body: RuleIn, request: Request, service: ServiceDep, principal: Admin) -> dict:
    _check(body)
    now = time.time()
    with db_errors(), service.sessions() as s, s.begin():
        if s.scalars(select(AlertRule).where(AlertRule.name == body.name)).first() is not None:
            raise ApiError(409, "conflict", f"a rule named {body.name!r} exists")
        row = AlertRule(**body.model_dump(), created_ts=now, updated_ts=now)
        s.add(row)
    service.alerts.reload()
    audit(
        service.sessions,
        principal,
        "rule.create",
        f"rule:{row.id}",
        {"name": row.name, "kind": row.kind},
        client_ip(request),
    )
    return rule_out(row)


@router.patch("/alert-rules/{rule_id}", summary="Change an alert rule")
def update_rule(rule_id: IdPath, body: RulePatch, request: Request, service: ServiceDep, principal: Admin) -> dict:
    changes = body.model_dump(exclude_unset=True)
    with db_errors(), service.sessions() as s, s.begin():
        row = s.get(AlertRule, rule_id)
        if row is None:
            raise ApiError(404, "not_found", f"no rule {rule_id}")
        merged = {c: getattr(row, c) for c in AlertRuleConfig.model_fields} | changes
        try:
            checked = AlertRuleConfig.model_validate(merged)
        except Exception as exc:
            raise ApiError(422, "invalid", str(exc).splitlines()[0] if str(exc) else "invalid rule") from exc
        _check(checked)
        for key, value in checked.model_dump().items():
            setattr(row, key, value)
        row.updated_ts = time.time()
    service.alerts.reload()
    audit(
        service.sessions,
        principal,
        "rule.update",
        f"rule:{rule_id}",
        {k: v for k, v in changes.items() if k != "webhook_secret"},
        client_ip(request),
    )
    return rule_out(row)


@router.delete("/alert-rules/{rule_id}", status_code=204, summary="Delete an alert rule (its alerts resolve)")
def delete_rule(rule_id: IdPath, request: Request, service: ServiceDep, principal: Admin) -> Response:
    with db_errors(), service.sessions() as s, s.begin():
        row = s.get(AlertRule, rule_id)
        if row is None:
            raise ApiError(404, "not_found", f"no rule {rule_id}")
        s.delete(row)
    service.alerts.reload()
    audit(service.sessions, principal, "rule.delete", f"rule:{rule_id}", None, client_ip(request))
    return Response(status_code=204)
