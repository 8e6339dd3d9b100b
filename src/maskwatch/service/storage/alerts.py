"""Alert rules, alerts and webhook deliveries.

Several control-room workers share one database: at most one alert per rule and camera is firing (a partial
unique index), so :meth:`AlertRepository.fire` tells the caller whether it stored a new alert, found
another worker's, or is inside a cooldown; :meth:`AlertRepository.resolve` is a conditional update, so one
worker resolves each alert. ``announced`` records the last transition announced (log, webhook), so one
that was stored but not announced (a worker died) is announced by the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import Alert, AlertRule, WebhookDelivery

__all__ = ["AlertFilter", "AlertRepository", "Delivery", "Fired", "RuleValues"]

#: a rule's settings as stored (``AlertRuleConfig.model_dump()``)
RuleValues = Mapping[str, Any]


@dataclass(frozen=True)
class AlertFilter:
    state: Literal["firing", "resolved"] | None = None
    camera: str | None = None
    acknowledged: bool | None = None


@dataclass(frozen=True)
class Fired:
    """What :meth:`AlertRepository.fire` did: ``stored`` a new alert (``alert``), found one ``firing`` from
    another worker (``alert_id``), or found one resolved within the cooldown (``resolved_at``)."""

    outcome: Literal["stored", "firing", "cooldown", "covered"]
    alert: Alert | None = None
    alert_id: int | None = None
    resolved_at: float | None = None


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery attempt, as recorded."""

    alert_id: int | None
    rule_id: int | None
    url: str
    transition: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    ts: float
    duration_ms: float


class AlertRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    # -- rules -------------------------------------------------------------------------------------------

    def rules(self) -> list[AlertRule]:
        with self.sessions() as s:
            return list(s.scalars(select(AlertRule).order_by(AlertRule.id)))

    def rule(self, rule_id: int) -> AlertRule | None:
        with self.sessions() as s:
            return s.get(AlertRule, rule_id)

    def rules_version(self) -> tuple[int, float | None]:
        """(number of rules, last change): rules are read again when it moves (another worker's change)."""
        with self.sessions() as s:
            count, changed = s.execute(select(func.count(AlertRule.id), func.max(AlertRule.updated_ts))).one()
        return int(count), changed

    def add_missing_rules(self, rules: Iterable[RuleValues], now: float) -> None:
        """Create the rules whose names the table does not have yet (the config file's, at start)."""
        with self.sessions() as s, s.begin():
            have = set(s.scalars(select(AlertRule.name)))
            for rule in rules:
                if rule["name"] not in have:
                    s.add(AlertRule(**rule, created_ts=now, updated_ts=now))

    def ensure_rule(self, rule: RuleValues, now: float) -> bool:
        """Create a built-in rule unless a rule of its kind (or its name) exists; True when created."""
        try:
            with self.sessions() as s, s.begin():
                exists = select(AlertRule.id).where((AlertRule.kind == rule["kind"]) | (AlertRule.name == rule["name"]))
                if s.scalars(exists.limit(1)).first() is not None:
                    return False
                s.add(AlertRule(**rule, created_ts=now, updated_ts=now))
        except IntegrityError:
            return False  # another worker created it at the same moment
        return True

    def create_rule(self, rule: RuleValues, now: float) -> AlertRule | None:
        """The new rule; None when a rule of that name exists."""
        with self.sessions() as s, s.begin():
            if s.scalars(select(AlertRule.id).where(AlertRule.name == rule["name"])).first() is not None:
                return None
            row = AlertRule(**rule, created_ts=now, updated_ts=now)
            s.add(row)
        return row

    def replace_rule(self, rule_id: int, rule: RuleValues, now: float) -> AlertRule | None:
        """Write every setting of a rule; None when it does not exist."""
        with self.sessions() as s, s.begin():
            row = s.get(AlertRule, rule_id)
            if row is None:
                return None
            for key, value in rule.items():
                setattr(row, key, value)
            row.updated_ts = now
        return row

    def delete_rule(self, rule_id: int) -> bool:
        with self.sessions() as s, s.begin():
            row = s.get(AlertRule, rule_id)
            if row is None:
                return False
            s.delete(row)
        return True

    # -- alerts ------------------------------------------------------------------------------------------

    def firing(self) -> list[Alert]:
        with self.sessions() as s:
            return list(s.scalars(select(Alert).where(Alert.state == "firing")))

    def get(self, alert_id: int) -> Alert | None:
        with self.sessions() as s:
            return s.get(Alert, alert_id)

    def unannounced(self) -> list[Alert]:
        """Alerts whose latest transition has not been announced yet (oldest first)."""
        with self.sessions() as s:
            query = select(Alert).where((Alert.announced.is_(None)) | (Alert.announced != Alert.state))
            return list(s.scalars(query.order_by(Alert.id)))

    def mark_announced(self, alert_id: int, transition: str) -> None:
        """``transition`` of the alert has been announced (log, webhook)."""
        with self.sessions() as s, s.begin():
            s.execute(update(Alert).where(Alert.id == alert_id).values(announced=transition))

    def fire(self, row: Alert, *, cooldown_s: float, now: float, cause_at: float | None = None) -> Fired:
        """Store a new firing alert unless one of its rule and camera resolved within ``cooldown_s`` (by any
        worker), or resolved at or after ``cause_at`` (the newest cause's time: an alert that was firing then
        covered it; a late-arriving event is not a new alert), or another worker's is firing."""
        assert row.rule_id is not None
        mine = (Alert.rule_id == row.rule_id, Alert.camera == row.camera)
        try:
            with self.sessions() as s, s.begin():
                if cause_at is not None:
                    covering = s.scalars(
                        select(func.max(Alert.resolved_ts)).where(*mine, Alert.resolved_ts >= cause_at)
                    ).first()
                    if covering is not None:
                        return Fired("covered", resolved_at=covering)
                if cooldown_s > 0:
                    recent = s.scalars(
                        select(func.max(Alert.resolved_ts)).where(*mine, Alert.resolved_ts >= now - cooldown_s)
                    ).first()
                    if recent is not None:
                        return Fired("cooldown", resolved_at=recent)
                s.add(row)
        except IntegrityError:  # the one firing alert of this rule and camera exists (another worker's)
            with self.sessions() as s:
                existing = s.scalars(select(Alert.id).where(*mine, Alert.state == "firing")).first()
            return Fired("firing", alert_id=existing)
        return Fired("stored", alert=row, alert_id=row.id)

    def resolve(self, alert_id: int, now: float) -> Alert | None:
        """Resolve a firing alert; the alert when this call resolved it, None when it was not firing."""
        with self.sessions() as s, s.begin():
            done = s.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.state == "firing")
                .values(state="resolved", resolved_ts=now)
                .returning(Alert.id)
            ).first()
            return s.get(Alert, alert_id) if done is not None else None

    def page(self, where: AlertFilter, *, before: int | None, limit: int) -> list[Alert]:
        """Newest first: up to ``limit`` alerts with an id below ``before``."""
        q = select(Alert).order_by(Alert.id.desc()).limit(limit)
        if where.state:
            q = q.where(Alert.state == where.state)
        if where.camera:
            q = q.where(Alert.camera == where.camera)
        if where.acknowledged is not None:
            acknowledged = Alert.acknowledged_ts.is_not(None) if where.acknowledged else Alert.acknowledged_ts.is_(None)
            q = q.where(acknowledged)
        if before is not None:
            q = q.where(Alert.id < before)
        with self.sessions() as s:
            return list(s.scalars(q))

    def acknowledge(self, alert_id: int, by: str, now: float) -> Alert | None:
        """Acknowledge (once: the first acknowledgement stays); None when there is no such alert."""
        with self.sessions() as s, s.begin():
            row = s.get(Alert, alert_id)
            if row is not None and row.acknowledged_ts is None:
                row.acknowledged_by, row.acknowledged_ts = by, now
        return row

    # -- webhook deliveries ------------------------------------------------------------------------------

    def record_delivery(self, delivery: Delivery) -> None:
        with self.sessions() as s, s.begin():
            s.add(
                WebhookDelivery(
                    alert_id=delivery.alert_id,
                    rule_id=delivery.rule_id,
                    url=delivery.url,
                    transition=delivery.transition,
                    attempt=delivery.attempt,
                    ok=delivery.ok,
                    status_code=delivery.status_code,
                    error=delivery.error,
                    ts=delivery.ts,
                    duration_ms=delivery.duration_ms,
                )
            )

    def deliveries(self, alert_id: int) -> list[WebhookDelivery]:
        with self.sessions() as s:
            query = select(WebhookDelivery).where(WebhookDelivery.alert_id == alert_id).order_by(WebhookDelivery.id)
            return list(s.scalars(query))
