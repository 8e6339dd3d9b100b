"""Alerts (list, acknowledge, webhook deliveries) and alert rules (CRUD, test-fire). A rule names a camera
(local or ``node:camera``) or, for ``node_offline``, a node that this server knows; a webhook URL is shown to
admins only (it may hold a credential): everyone else sees whether a rule has one."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maskwatch.core.netpolicy import RefusedError, check_url
from maskwatch.core.settings import describe
from maskwatch.service.alerts import NODE_KINDS, AlertOut, AlertTransition
from maskwatch.service.camera_view import CameraView
from maskwatch.service.deps import (
    MAX_ID,
    Admin,
    AlertsDep,
    AuditDep,
    CameraViewDep,
    IdPath,
    LiveDep,
    Operator,
    SettingsDep,
    StorageDep,
    Viewer,
)
from maskwatch.service.errors import ApiError, errors
from maskwatch.service.settings import AlertRuleConfig, ServiceSettings
from maskwatch.service.storage.alerts import AlertFilter
from maskwatch.service.storage.models import AlertRule

__all__ = ["AlertPage", "DeliveryOut", "RuleIn", "RuleOut", "RulePatch", "TestDelivery", "router"]

router = APIRouter(tags=["alerts"])


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: int | None = Field(description="`cursor` of the next page; None on the last page")


@router.get("/alerts", summary="Alerts, newest first")
def list_alerts(
    storage: StorageDep,
    _: Viewer,
    state: Literal["firing", "resolved"] | None = None,
    camera: str | None = None,
    acknowledged: bool | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: int | None = Query(None, ge=0, le=MAX_ID),
) -> AlertPage:
    rows = storage.alerts.page(AlertFilter(state, camera, acknowledged), before=cursor, limit=limit)
    return AlertPage(items=[AlertOut.of(r) for r in rows], next_cursor=rows[-1].id if len(rows) == limit else None)


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge an alert")
def acknowledge(alert_id: IdPath, storage: StorageDep, live: LiveDep, audit: AuditDep, principal: Operator) -> AlertOut:
    row = storage.alerts.acknowledge(alert_id, principal.name, time.time())
    if row is None:
        raise ApiError(404, "not_found", f"no alert {alert_id}")
    out = AlertOut.of(row)
    live.hub.publish("alert", AlertTransition(transition="acknowledged", alert=out).model_dump(mode="json"))
    audit.record(principal, "alert.ack", f"alert:{alert_id}")
    return out


class DeliveryOut(BaseModel):
    id: int
    transition: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    time: float
    duration_ms: float


@router.get("/alerts/{alert_id}/deliveries", summary="Webhook delivery attempts of an alert")
def deliveries(alert_id: IdPath, storage: StorageDep, _: Admin) -> list[DeliveryOut]:
    return [
        DeliveryOut(
            id=r.id,
            transition=r.transition,
            attempt=r.attempt,
            ok=r.ok,
            status_code=r.status_code,
            error=r.error,
            time=r.ts,
            duration_ms=r.duration_ms,
        )
        for r in storage.alerts.deliveries(alert_id)
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


class RuleOut(BaseModel):
    """A rule as stored. Its webhook secret is never shown (``has_webhook_secret`` says whether it has one);
    its webhook URL only to admins (it may hold a credential; ``has_webhook`` says whether it has one): for
    everyone else both are write-only."""

    id: int
    name: str
    kind: str
    camera: str | None
    threshold: float | None
    window_s: float
    min_people: int
    for_s: float
    hysteresis: float
    cooldown_s: float
    active_hours: str | None
    enabled: bool
    webhook_url: str | None = Field(description="admins only; None for everyone else")
    has_webhook: bool
    has_webhook_secret: bool

    @classmethod
    def of(cls, row: AlertRule, *, admin: bool) -> RuleOut:
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            camera=row.camera,
            threshold=row.threshold,
            window_s=row.window_s,
            min_people=row.min_people,
            for_s=row.for_s,
            hysteresis=row.hysteresis,
            cooldown_s=row.cooldown_s,
            active_hours=row.active_hours,
            enabled=row.enabled,
            webhook_url=row.webhook_url if admin else None,
            has_webhook=bool(row.webhook_url),
            has_webhook_secret=bool(row.webhook_secret),
        )


def _check_target(rule: AlertRuleConfig, view: CameraView) -> None:
    """A rule on a camera (or node) this server does not know is refused: it would never fire."""
    if rule.camera is None:
        return
    if rule.kind in NODE_KINDS:
        nodes = view.nodes()
        if rule.camera not in nodes:
            known = ", ".join(nodes) or "none yet"
            raise ApiError(422, "unknown_node", f"no node named {rule.camera!r} (known nodes: {known})")
    elif not view.known(rule.camera):
        names = [c.name for c in view.every(admin=False)]
        known = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "") if names else "none"
        raise ApiError(
            422,
            "unknown_camera",
            f"no camera named {rule.camera!r} (known: {known}); a rule names a camera of GET /cameras, "
            "or none for every camera",
        )


def _check(rule: AlertRuleConfig, settings: ServiceSettings) -> None:
    if rule.kind == "compliance_below" and (rule.threshold is None or not 0 <= rule.threshold <= 1):
        raise ApiError(422, "invalid", "compliance_below needs a threshold between 0 and 1")
    if rule.kind == "camera_lagging" and (rule.threshold is None or rule.threshold <= 0):
        raise ApiError(422, "invalid", "camera_lagging needs a threshold in seconds (> 0)")
    if rule.kind == "unmasked_person" and not rule.camera:
        raise ApiError(422, "invalid", "unmasked_person is opt-in per camera: give a camera")
    if rule.webhook_url:
        try:  # checked again at every send (the name may point elsewhere by then)
            check_url(rule.webhook_url, settings.security.webhooks.policy())
        except RefusedError as exc:
            raise ApiError(422, "invalid", f"webhook_url refused: {exc}") from exc


@router.get("/alert-rules", summary="Alert rules (webhook secrets never shown, webhook URLs to admins only)")
def list_rules(storage: StorageDep, principal: Viewer) -> list[RuleOut]:
    admin = principal.allows("admin")
    return [RuleOut.of(r, admin=admin) for r in storage.alerts.rules()]


@router.post("/alert-rules", status_code=201, summary="Add an alert rule (on a camera or node that exists)")
def create_rule(
    body: RuleIn,
    storage: StorageDep,
    alerts: AlertsDep,
    view: CameraViewDep,
    settings: SettingsDep,
    audit: AuditDep,
    principal: Admin,
) -> RuleOut:
    _check(body, settings)
    _check_target(body, view)
    row = storage.alerts.create_rule(body.model_dump(), time.time())
    if row is None:
        raise ApiError(409, "conflict", f"a rule named {body.name!r} exists")
    alerts.reload()
    audit.record(principal, "rule.create", f"rule:{row.id}", {"name": row.name, "kind": row.kind})
    return RuleOut.of(row, admin=True)


@router.patch("/alert-rules/{rule_id}", summary='Change an alert rule (enable/disable: {"enabled": ...})')
def update_rule(
    rule_id: IdPath,
    body: RulePatch,
    storage: StorageDep,
    alerts: AlertsDep,
    view: CameraViewDep,
    settings: SettingsDep,
    audit: AuditDep,
    principal: Admin,
) -> RuleOut:
    changes = body.model_dump(exclude_unset=True)
    old = storage.alerts.rule(rule_id)
    if old is None:
        raise ApiError(404, "not_found", f"no rule {rule_id}")
    merged = {c: getattr(old, c) for c in AlertRuleConfig.model_fields} | changes
    try:
        checked = AlertRuleConfig.model_validate(merged)
    except ValidationError as exc:
        raise ApiError(422, "invalid", describe(exc)) from exc
    _check(checked, settings)
    if "camera" in changes or "kind" in changes:
        _check_target(checked, view)
    row = storage.alerts.replace_rule(rule_id, checked.model_dump(), time.time())
    if row is None:
        raise ApiError(404, "not_found", f"no rule {rule_id}")
    alerts.reload()
    audit.record(
        principal,
        "rule.update",
        f"rule:{rule_id}",
        {k: v for k, v in changes.items() if k not in ("webhook_secret", "webhook_url")},
    )
    return RuleOut.of(row, admin=True)


class TestDelivery(BaseModel):
    """The outcome of a test-fire: one signed sample delivery to the rule's webhook (recorded, not retried)."""

    ok: bool
    status_code: int | None = Field(description="the receiver's HTTP status; None when it could not be reached")
    error: str | None
    duration_ms: float
    signed: bool = Field(description="sent with X-Maskwatch-Signature (the rule has a webhook secret)")


@router.post(
    "/alert-rules/{rule_id}/test",
    summary="Test-fire: send a signed sample delivery to the rule's webhook now",
    responses=errors(e422="the rule has no webhook URL"),
)
def test_rule(
    rule_id: IdPath, storage: StorageDep, alerts: AlertsDep, audit: AuditDep, principal: Admin
) -> TestDelivery:
    rule = storage.alerts.rule(rule_id)
    if rule is None:
        raise ApiError(404, "not_found", f"no rule {rule_id}")
    if not rule.webhook_url:
        raise ApiError(422, "no_webhook", f"rule {rule.name!r} has no webhook URL: set webhook_url first")
    delivery = alerts.test_fire(rule)
    audit.record(principal, "rule.test", f"rule:{rule_id}", {"ok": delivery.ok, "status": delivery.status_code})
    return TestDelivery(
        ok=delivery.ok,
        status_code=delivery.status_code,
        error=delivery.error,
        duration_ms=delivery.duration_ms,
        signed=bool(rule.webhook_secret),
    )


@router.delete("/alert-rules/{rule_id}", status_code=204, summary="Delete an alert rule (its alerts resolve)")
def delete_rule(rule_id: IdPath, storage: StorageDep, alerts: AlertsDep, audit: AuditDep, principal: Admin) -> Response:
    if not storage.alerts.delete_rule(rule_id):
        raise ApiError(404, "not_found", f"no rule {rule_id}")
    alerts.reload()
    audit.record(principal, "rule.delete", f"rule:{rule_id}")
    return Response(status_code=204)
