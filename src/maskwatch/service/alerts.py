"""Alert rules evaluated on the live event flow, with hysteresis, cooldown and active hours; alerts go to
the database, the dashboard (SSE), the log and webhooks (HMAC-SHA256 signed, retried with backoff, every
attempt recorded).

Rule kinds (``AlertRule.kind``):

* ``compliance_below``: over the last ``window_s`` seconds, at least ``min_people`` people ended on the
  camera and the share of compliant ones is below ``threshold`` (0..1). Resolves once it is at least
  ``threshold + hysteresis``, or fewer than ``min_people`` people remain in the window.
* ``unmasked_person`` (opt-in per camera): a person without a mask ended in the last ``window_s`` seconds.
* ``camera_offline``: the camera has been lost, reconnecting or failed for ``for_s`` seconds; resolves
  when it is live again.
* ``camera_lagging``: stats buckets report a p95 lag above ``threshold`` seconds for ``for_s`` seconds;
  resolves when it is below ``threshold * (1 - hysteresis)``.
* ``node_offline`` (the fleet; ``camera`` names a node, or None for every node): the node's status (its last
  will) has been ``offline`` for ``for_s`` seconds; resolves when the node is back online. A control room
  with MQTT ingest creates :data:`NODE_OFFLINE_RULE` unless a rule of this kind exists. Held (neither fired
  nor resolved) while this control room has lost its broker: then nobody can tell whether a node is gone.
* ``outbox_dropped`` (the fleet; ``camera`` names a node, or None): the node's outbox budget dropped messages
  (a drop episode is open, or one began in the last ``window_s`` seconds); resolves once the episode is over
  and that long has passed. The message says how many events and stats buckets, made between when and when
  (the node's ``outbox.db`` holds the exact record). Created as :data:`OUTBOX_DROPPED_RULE`.
* ``broker_lost`` (the control room's own; ``camera`` is this worker's MQTT client id): this worker has had
  no connection to its MQTT broker for ``for_s`` seconds (killed, hung, refusing its login); resolves when it
  is connected again. Created as :data:`BROKER_LOST_RULE`.

After an alert resolves, the same rule and camera cannot fire again for ``cooldown_s`` seconds; outside
``active_hours`` (server local time, ``HH:MM-HH:MM``, may wrap midnight) rules do not fire.

Several control-room workers on one database evaluate the same rules (every worker sees every node's
status): the database holds at most one firing alert per rule and camera (a partial unique index), so the
first worker to fire stores and announces it and the others adopt it silently; resolving is a conditional
update, so only one worker announces that too, and a cooldown counts alerts resolved by any worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from maskwatch.core.backoff import Backoff
from maskwatch.core.redaction import redact
from maskwatch.core.timeutil import iso
from maskwatch.fleet.ingest import OutboxReport
from maskwatch.service.settings import AlertRuleConfig
from maskwatch.service.storage.alerts import AlertRepository, Delivery
from maskwatch.service.storage.models import Alert, AlertRule

__all__ = [
    "BROKER_LOST_RULE",
    "FLEET_RULES",
    "NODE_OFFLINE_RULE",
    "OUTBOX_DROPPED_RULE",
    "SIGNATURE_HEADER",
    "AlertEngine",
    "AlertOut",
    "AlertTransition",
    "WebhookSender",
    "in_active_hours",
    "sign",
]

log = logging.getLogger("maskwatch.service")

BAD_STATES = ("lost", "reconnecting", "failed")
SIGNATURE_HEADER = "X-Maskwatch-Signature"
NODE_KINDS = ("node_offline", "outbox_dropped")  # rules about fleet nodes rather than cameras
BROKER_KINDS = ("broker_lost",)  # rules about this control room's own MQTT connection
RULES_CHECK_S = 5.0  # how often a worker looks for rules changed through another worker

#: the fleet's built-in rule: 30 s rides out an agent restart; silence it by disabling it
NODE_OFFLINE_RULE = AlertRuleConfig(
    name="node offline", kind="node_offline", for_s=30.0, hysteresis=0.0, cooldown_s=60.0
)
#: a node's outbox dropped messages: fires at once, stays at least 10 min (the record is on the node)
OUTBOX_DROPPED_RULE = AlertRuleConfig(
    name="node outbox dropped", kind="outbox_dropped", for_s=0.0, window_s=600.0, hysteresis=0.0, cooldown_s=0.0
)
#: the control room lost its broker: 15 s rides out a broker restart (a hung one is noticed in about as long)
BROKER_LOST_RULE = AlertRuleConfig(name="broker lost", kind="broker_lost", for_s=15.0, hysteresis=0.0, cooldown_s=60.0)
#: the built-in rules of a control room with MQTT ingest
FLEET_RULES = (NODE_OFFLINE_RULE, OUTBOX_DROPPED_RULE, BROKER_LOST_RULE)


def sign(secret: str, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=`` + HMAC-SHA256 of the raw body with the secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def in_active_hours(spec: str | None, when: datetime) -> bool:
    if not spec:
        return True
    start, end = spec.split("-")
    minute = when.hour * 60 + when.minute
    a = int(start[:2]) * 60 + int(start[3:])
    b = int(end[:2]) * 60 + int(end[3:])
    return a <= minute < b if a <= b else (minute >= a or minute < b)


class AlertOut(BaseModel):
    """An alert as the API, the live stream and webhooks show it."""

    id: int | None
    rule_id: int | None
    rule: str
    kind: str
    camera: str
    state: Literal["firing", "resolved"]
    message: str
    value: float | None
    started: float
    resolved: float | None
    acknowledged_by: str | None
    acknowledged: float | None

    @classmethod
    def of(cls, row: Alert) -> AlertOut:
        return cls(
            id=row.id,
            rule_id=row.rule_id,
            rule=row.rule_name,
            kind=row.kind,
            camera=row.camera,
            state="resolved" if row.state == "resolved" else "firing",
            message=row.message,
            value=row.value,
            started=row.started_ts,
            resolved=row.resolved_ts,
            acknowledged_by=row.acknowledged_by,
            acknowledged=row.acknowledged_ts,
        )


class AlertTransition(BaseModel):
    """The ``alert`` message of the live stream and the body of a webhook delivery."""

    transition: Literal["firing", "resolved", "acknowledged"]
    alert: AlertOut


@dataclass
class _Camera:
    people: deque[tuple[float, bool]] = field(default_factory=deque)  # (arrival, compliant)
    state: str | None = None
    bad_since: float | None = None
    lag_bad_since: float | None = None
    lag: float | None = None


@dataclass
class _Node:
    state: str | None = None  # online | offline
    offline_since: float | None = None
    reason: str | None = None
    dropping: bool = False  # its outbox is in a drop episode now
    drop_episodes: int | None = None  # episodes its status reported last (None: no report yet)
    drop_seen: float | None = None  # when this worker last saw a new episode or an open one
    dropped: tuple[int, int] = (0, 0)  # events, stats: the node's counters
    drop_span: tuple[int | None, int | None] = (None, None)  # creation times of the last episode's messages


@dataclass
class _Broker:
    lost_since: float | None = None
    detail: str | None = None


class WebhookSender:
    """Deliveries, in order, on one thread: ``attempts`` tries with doubling, jittered waits from ``backoff``
    seconds (:class:`~maskwatch.core.backoff.Backoff`), each attempt recorded (a receiver sees ``firing``
    before ``resolved`` even when the first attempt had to be retried)."""

    def __init__(
        self,
        alerts: AlertRepository,
        *,
        timeout: float,
        attempts: int,
        backoff: float,
        on_attempt: Callable[[bool], None] | None = None,
    ) -> None:
        self.alerts = alerts
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff
        self.on_attempt = on_attempt
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="maskwatch-webhook")
        self._stop = threading.Event()

    def schedule(self) -> Backoff:
        """The waits between one delivery's attempts: ``backoff``, doubling, up to the last one."""
        last = self.backoff * 2 ** max(0, self.attempts - 2)
        return Backoff(self.backoff, max(self.backoff, last), jitter=0.1)

    def send(
        self,
        url: str,
        secret: str | None,
        payload: AlertTransition,
        *,
        alert_id: int | None,
        rule_id: int | None,
    ) -> Future[bool]:
        return self._pool.submit(self._deliver, url, secret, payload, alert_id, rule_id)

    def _deliver(
        self, url: str, secret: str | None, payload: AlertTransition, alert_id: int | None, rule_id: int | None
    ) -> bool:
        import httpx

        body = json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "maskwatch-webhook/1",
            "X-Maskwatch-Delivery": uuid.uuid4().hex,
            "X-Maskwatch-Event": payload.transition,
        }
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        waits = self.schedule()
        for attempt in range(1, self.attempts + 1):
            began = time.monotonic()
            status, error, ok = None, None, False
            try:
                with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                    response = client.post(url, content=body, headers=headers)
                status, ok = response.status_code, 200 <= response.status_code < 300
                if not ok:
                    error = f"HTTP {status}"
            except Exception as exc:
                error = redact(f"{type(exc).__name__}: {exc}")[:500]
            self._record(
                Delivery(
                    alert_id=alert_id,
                    rule_id=rule_id,
                    url=url,
                    transition=payload.transition,
                    attempt=attempt,
                    ok=ok,
                    status_code=status,
                    error=error,
                    ts=time.time(),
                    duration_ms=round((time.monotonic() - began) * 1000, 1),
                )
            )
            if self.on_attempt is not None:
                self.on_attempt(ok)
            if ok:
                return True
            log.warning("webhook delivery %d/%d for alert %s failed: %s", attempt, self.attempts, alert_id, error)
            if attempt < self.attempts and self._stop.wait(waits.next()):
                break
        return False

    def _record(self, delivery: Delivery) -> None:
        try:
            self.alerts.record_delivery(delivery)
        except Exception:
            log.exception("webhook delivery not recorded")

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class AlertEngine:
    """Observes events (:meth:`observe`, from the event thread) and evaluates the rules every
    ``evaluate_every`` seconds on its own thread (:meth:`evaluate` can be called directly in tests)."""

    def __init__(
        self,
        alerts: AlertRepository,
        *,
        publish: Callable[[str, Any], None],
        sender: WebhookSender | None,
        evaluate_every: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.alerts = alerts
        self.publish = publish
        self.sender = sender
        self.evaluate_every = evaluate_every
        self.clock = clock
        self.on_change = on_change
        self.rules: list[AlertRule] = []
        self._cameras: dict[str, _Camera] = {}
        self._nodes: dict[str, _Node] = {}
        self._brokers: dict[str, _Broker] = {}  # this worker's MQTT client id -> its connection
        self._active: dict[tuple[int, str], int | None] = {}  # (rule, camera) -> alert id
        self._rules_seen: tuple[int, float | None] | None = None  # (count, last change): reload when it moves
        self._resolved_at: dict[tuple[int, str], float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- inputs ----------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read the rules again (after a change through the API); alerts of deleted or disabled rules resolve."""
        seen = self.alerts.rules_version()
        rules = self.alerts.rules()
        firing = self.alerts.firing()
        with self._lock:
            self._rules_seen = seen
            self.rules = rules
            known = {r.id for r in rules if r.enabled}
            for row in firing:  # alerts left firing by a previous run or a removed rule
                if row.rule_id in known and (row.rule_id, row.camera) not in self._active:
                    self._active[(row.rule_id, row.camera)] = row.id
            for key, alert_id in list(self._active.items()):
                if key[0] not in known:
                    self._resolve(key, alert_id, "rule removed or disabled", None)

    def observe(self, event: Any) -> None:
        now = self.clock()
        with self._lock:
            cam = self._cameras.setdefault(event.source, _Camera())
            if event.type == "track_ended":
                cam.people.append((now, bool(event.compliant)))
                while cam.people and now - cam.people[0][0] > 86400:
                    cam.people.popleft()
            elif event.type == "source_status":
                if event.state in BAD_STATES:
                    if cam.state not in BAD_STATES:
                        cam.bad_since = now
                else:
                    cam.bad_since = None
                cam.state = event.state
            elif event.type == "stats" and event.lag.p95 is not None:
                cam.lag = event.lag.p95
                for rule in self.rules:
                    if rule.kind == "camera_lagging" and rule.threshold is not None:
                        if event.lag.p95 > rule.threshold:
                            cam.lag_bad_since = cam.lag_bad_since or now
                        elif event.lag.p95 < rule.threshold * (1 - rule.hysteresis):
                            cam.lag_bad_since = None

    def reload_if_changed(self) -> bool:
        """Reload when the rules changed in the database (through another worker's API); True if it did."""
        if self.alerts.rules_version() == self._rules_seen:
            return False
        self.reload()
        return True

    def ensure_rule(self, config: AlertRuleConfig) -> bool:
        """Create a built-in rule unless one of its kind (or its name) exists; True when created. Disabled, it
        stays disabled; deleted, it comes back at the next start."""
        if not self.alerts.ensure_rule(config.model_dump(), time.time()):
            return False
        log.info("alert rule %r (%s) created", config.name, config.kind)
        self.reload()
        return True

    def observe_node(self, node: str, state: str, reason: str | None = None) -> None:
        """A fleet node's status (``online`` / ``offline``, from MQTT ingest) for ``node_offline`` rules."""
        now = self.clock()
        with self._lock:
            n = self._nodes.setdefault(node, _Node())
            if state == "offline":
                if n.state != "offline":
                    n.offline_since = now
            else:
                n.offline_since = None
            n.state, n.reason = state, reason

    def observe_outbox(self, node: str, report: OutboxReport) -> None:
        """A fleet node's outbox report (from its status) for ``outbox_dropped`` rules. The first report a
        worker sees sets its baseline: older episodes are history, an open one counts."""
        now = self.clock()
        with self._lock:
            n = self._nodes.setdefault(node, _Node())
            new_episode = n.drop_episodes is not None and report.drop_episodes > n.drop_episodes
            if report.dropping or new_episode:
                n.drop_seen = now
            n.dropping, n.drop_episodes = report.dropping, report.drop_episodes
            n.dropped = (report.dropped_events, report.dropped_stats)
            n.drop_span = (report.last_drop_first, report.last_drop_last)

    def observe_broker(self, worker: str, connected: bool, detail: str | None = None) -> None:
        """This worker's own MQTT connection (``worker``: its client id) for ``broker_lost`` rules; while it is
        lost, node rules are held."""
        now = self.clock()
        with self._lock:
            b = self._brokers.setdefault(worker, _Broker())
            if connected:
                b.lost_since, b.detail = None, None
            else:
                b.lost_since = b.lost_since or now
                b.detail = detail or b.detail

    def forget_camera(self, name: str) -> None:
        with self._lock:
            self._cameras.pop(name, None)

    # -- evaluation ------------------------------------------------------------------------------------

    def _node_condition(self, rule: AlertRule, name: str, node: _Node, now: float) -> tuple[str, float | None, str]:
        if rule.kind == "outbox_dropped":
            events, stats = node.dropped
            first, last = (iso(t) if t is not None else "?" for t in node.drop_span)
            message = (
                f"node {name}'s outbox was full and dropped messages: {events} event(s) and {stats} stats "
                f"bucket(s) so far, the last episode's made between {first} and {last} (the node's outbox.db "
                "records each one)"
            )
            if node.dropping or (node.drop_seen is not None and now - node.drop_seen < rule.window_s):
                return "bad", float(events), message
            return "good", float(events), f"node {name}'s outbox has room again"
        if any(b.lost_since is not None for b in self._brokers.values()):
            return "hold", None, "this control room has lost its broker: node states unknown"
        if node.offline_since is None:
            return "good", None, f"node {name} online"
        down = now - node.offline_since
        why = f": {node.reason}" if node.reason else ""
        return ("bad" if down >= rule.for_s else "hold"), down, f"node {name} offline for {down:.0f} s{why}"

    @staticmethod
    def _broker_condition(rule: AlertRule, name: str, broker: _Broker, now: float) -> tuple[str, float | None, str]:
        if broker.lost_since is None:
            return "good", None, f"control room {name} connected to its broker"
        down = now - broker.lost_since
        why = f" ({broker.detail})" if broker.detail else ""
        message = (
            f"control room {name} has had no MQTT broker for {down:.0f} s{why}: nothing arrives from the "
            "fleet (the nodes keep their events in their outboxes)"
        )
        return ("bad" if down >= rule.for_s else "hold"), down, message

    def _condition(self, rule: AlertRule, cam: _Camera, now: float) -> tuple[str, float | None, str]:
        """('bad' | 'good' | 'hold', value, message)."""
        if rule.kind in ("compliance_below", "unmasked_person"):
            window = [c for t, c in cam.people if now - t <= rule.window_s]
            if rule.kind == "unmasked_person":
                unmasked = sum(not c for c in window)
                return (
                    "bad" if unmasked else "good",
                    float(unmasked),
                    f"{unmasked} person(s) without a mask in the last {rule.window_s:g} s",
                )
            n = len(window)
            if n < rule.min_people:
                return "good", None, f"only {n} people in the window"
            rate = sum(window) / n
            threshold = rule.threshold if rule.threshold is not None else 0.8
            message = f"compliance {rate:.0%} over the last {n} people ({rule.window_s:g} s), below {threshold:.0%}"
            if rate < threshold:
                return "bad", rate, message
            return ("good" if rate >= threshold + rule.hysteresis else "hold"), rate, message
        if rule.kind == "camera_offline":
            if cam.bad_since is None:
                return "good", None, "camera live"
            down = now - cam.bad_since
            return ("bad" if down >= rule.for_s else "hold"), down, f"camera {cam.state} for {down:.0f} s"
        if rule.kind == "camera_lagging":
            if cam.lag_bad_since is None:
                return "good", cam.lag, "lag back to normal"
            held = now - cam.lag_bad_since
            return (
                ("bad" if held >= rule.for_s else "hold"),
                cam.lag,
                (f"lag p95 {cam.lag:.2f} s above {rule.threshold:g} s for {held:.0f} s"),
            )
        return "good", None, ""

    def evaluate(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        local = datetime.fromtimestamp(now)
        with self._lock:
            for rule in self.rules:
                if not rule.enabled:
                    continue
                targets: dict[str, Any] = (
                    self._nodes
                    if rule.kind in NODE_KINDS
                    else self._brokers
                    if rule.kind in BROKER_KINDS
                    else self._cameras
                )
                names = [rule.camera] if rule.camera else list(targets)
                for name in names:
                    target = targets.get(name)
                    if target is None:
                        continue
                    if rule.kind in NODE_KINDS:
                        verdict, value, message = self._node_condition(rule, name, target, now)
                    elif rule.kind in BROKER_KINDS:
                        verdict, value, message = self._broker_condition(rule, name, target, now)
                    else:
                        verdict, value, message = self._condition(rule, target, now)
                    key = (rule.id, name)
                    if key in self._active:
                        if verdict == "good":
                            self._resolve(key, self._active[key], message, value)
                        continue
                    if verdict != "bad" or not in_active_hours(rule.active_hours, local):
                        continue
                    if now - self._resolved_at.get(key, -1e18) < rule.cooldown_s:
                        continue
                    self._fire(rule, name, message, value, now)
        if self.on_change is not None:
            self.on_change(len(self._active))

    def _fire(self, rule: AlertRule, camera: str, message: str, value: float | None, now: float) -> None:
        """Store and announce a new alert, unless another worker has one firing (adopted, not announced) or
        resolved one within the cooldown."""
        key = (rule.id, camera)
        row = Alert(
            rule_id=rule.id,
            rule_name=rule.name,
            kind=rule.kind,
            camera=camera,
            state="firing",
            message=message,
            value=value,
            started_ts=now,
        )
        try:
            fired = self.alerts.fire(row, cooldown_s=rule.cooldown_s, now=now)
        except Exception:
            log.exception("alert not stored (database unreachable?)")
        else:
            if fired.outcome == "cooldown":
                if fired.resolved_at is not None:
                    self._resolved_at[key] = fired.resolved_at
                return
            if fired.outcome == "firing":  # another worker's
                if fired.alert_id is not None:
                    self._active[key] = fired.alert_id
                return
        self._active[key] = row.id
        log.warning("ALERT %s on %s: %s", rule.name, camera, message)
        self._announce(rule, row, "firing")

    def _resolve(self, key: tuple[int, str], alert_id: int | None, message: str, value: float | None) -> None:
        """Resolve in the database; announced only by the worker whose update did it."""
        now = self.clock()
        self._active.pop(key, None)
        self._resolved_at[key] = now
        row = None
        if alert_id is not None:
            try:
                row = self.alerts.resolve(alert_id, now)
            except Exception:
                log.exception("alert resolution not stored")
        if row is None:
            return
        log.warning("RESOLVED %s on %s: %s", row.rule_name, row.camera, message)
        rule = next((r for r in self.rules if r.id == key[0]), None)
        self._announce(rule, row, "resolved")

    def _announce(self, rule: AlertRule | None, row: Alert, transition: Literal["firing", "resolved"]) -> None:
        payload = AlertTransition(transition=transition, alert=AlertOut.of(row))
        self.publish("alert", payload.model_dump(mode="json"))
        if self.sender is not None and rule is not None and rule.webhook_url:
            self.sender.send(rule.webhook_url, rule.webhook_secret, payload, alert_id=row.id, rule_id=rule.id)

    @property
    def firing(self) -> int:
        return len(self._active)

    # -- thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.reload()
        self._thread = threading.Thread(target=self._run, name="maskwatch-alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        checked = time.monotonic()
        while not self._stop.wait(self.evaluate_every):
            try:
                if time.monotonic() - checked >= RULES_CHECK_S:
                    checked = time.monotonic()
                    self.reload_if_changed()
                self.evaluate()
            except Exception:
                log.exception("alert evaluation failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self.sender is not None:
            self.sender.close()
