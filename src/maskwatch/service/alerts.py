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
  with MQTT ingest creates :data:`NODE_OFFLINE_RULE` unless a rule of this kind exists.

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
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from maskwatch.service.settings import AlertRuleConfig
from maskwatch.service.storage.models import Alert, AlertRule, WebhookDelivery

log = logging.getLogger("maskwatch.service")

BAD_STATES = ("lost", "reconnecting", "failed")
SIGNATURE_HEADER = "X-Maskwatch-Signature"
NODE_KINDS = ("node_offline",)  # rules about fleet nodes rather than cameras
RULES_CHECK_S = 5.0  # how often a worker looks for rules changed through another worker

#: the fleet's built-in rule: 30 s rides out an agent restart; silence it by disabling it
NODE_OFFLINE_RULE = AlertRuleConfig(
    name="node offline", kind="node_offline", for_s=30.0, hysteresis=0.0, cooldown_s=60.0
)


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


def alert_dict(row: Alert) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule_id": row.rule_id,
        "rule": row.rule_name,
        "kind": row.kind,
        "camera": row.camera,
        "state": row.state,
        "message": row.message,
        "value": row.value,
        "started": row.started_ts,
        "resolved": row.resolved_ts,
        "acknowledged_by": row.acknowledged_by,
        "acknowledged": row.acknowledged_ts,
    }


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


class WebhookSender:
    """Deliveries, in order, on one thread: ``attempts`` tries with doubling backoff, each one recorded (a
    receiver sees ``firing`` before ``resolved`` even when the first attempt had to be retried)."""

    def __init__(
        self,
        sessions: Any,
        *,
        timeout: float,
        attempts: int,
        backoff: float,
        on_attempt: Callable[[bool], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff
        self.on_attempt = on_attempt
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="maskwatch-webhook")
        self._stop = threading.Event()

    def send(
        self,
        url: str,
        secret: str | None,
        payload: dict[str, Any],
        *,
        alert_id: int | None,
        rule_id: int | None,
        transition: str,
    ) -> Any:
        return self._pool.submit(self._deliver, url, secret, payload, alert_id, rule_id, transition)

    def _deliver(
        self,
        url: str,
        secret: str | None,
        payload: dict[str, Any],
        alert_id: int | None,
        rule_id: int | None,
        transition: str,
    ) -> bool:
        import httpx

        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "maskwatch-webhook/1",
            "X-Maskwatch-Delivery": uuid.uuid4().hex,
            "X-Maskwatch-Event": transition,
        }
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        wait = self.backoff
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
                error = f"{type(exc).__name__}: {exc}"[:500]
            self._record(alert_id, rule_id, url, transition, attempt, ok, status, error, time.monotonic() - began)
            if self.on_attempt is not None:
                self.on_attempt(ok)
            if ok:
                return True
            log.warning("webhook delivery %d/%d for alert %s failed: %s", attempt, self.attempts, alert_id, error)
            if attempt < self.attempts and self._stop.wait(wait):
                break
            wait *= 2
        return False

    def _record(
        self,
        alert_id: int | None,
        rule_id: int | None,
        url: str,
        transition: str,
        attempt: int,
        ok: bool,
        status: int | None,
        error: str | None,
        seconds: float,
    ) -> None:
        try:
            with self.sessions() as s, s.begin():
                s.add(
                    WebhookDelivery(
                        alert_id=alert_id,
                        rule_id=rule_id,
                        url=url,
                        transition=transition,
                        attempt=attempt,
                        ok=ok,
                        status_code=status,
                        error=error,
                        ts=time.time(),
                        duration_ms=round(seconds * 1000, 1),
                    )
                )
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
        sessions: Any,
        *,
        publish: Callable[[str, Any], None],
        sender: WebhookSender | None,
        evaluate_every: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.publish = publish
        self.sender = sender
        self.evaluate_every = evaluate_every
        self.clock = clock
        self.on_change = on_change
        self.rules: list[AlertRule] = []
        self._cameras: dict[str, _Camera] = {}
        self._nodes: dict[str, _Node] = {}
        self._active: dict[tuple[int, str], int | None] = {}  # (rule, camera) -> alert id
        self._rules_seen: tuple[int, float | None] | None = None  # (count, last change): reload when it moves
        self._resolved_at: dict[tuple[int, str], float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()

    # -- inputs ----------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read the rules again (after a change through the API); alerts of deleted or disabled rules resolve."""
        with self.sessions() as s:
            seen = self._rules_version(s)
            rules = list(s.scalars(select(AlertRule).order_by(AlertRule.id)))
            firing = list(s.scalars(select(Alert).where(Alert.state == "firing")))
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

    @staticmethod
    def _rules_version(session: Any) -> tuple[int, float | None]:
        count, changed = session.execute(select(func.count(AlertRule.id), func.max(AlertRule.updated_ts))).one()
        return int(count), changed

    def reload_if_changed(self) -> bool:
        """Reload when the rules changed in the database (through another worker's API); True if it did."""
        with self.sessions() as s:
            if self._rules_version(s) == self._rules_seen:
                return False
        self.reload()
        return True

    def ensure_rule(self, config: AlertRuleConfig) -> bool:
        """Create a built-in rule unless one of its kind (or its name) exists; True when created. Disabled, it
        stays disabled; deleted, it comes back at the next start."""
        now = time.time()
        try:
            with self.sessions() as s, s.begin():
                exists = select(AlertRule.id).where((AlertRule.kind == config.kind) | (AlertRule.name == config.name))
                if s.scalars(exists.limit(1)).first() is not None:
                    return False
                s.add(AlertRule(**config.model_dump(), created_ts=now, updated_ts=now))
        except IntegrityError:
            return False  # another worker created it at the same moment
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

    def forget_camera(self, name: str) -> None:
        with self._lock:
            self._cameras.pop(name, None)

    # -- evaluation ------------------------------------------------------------------------------------

    @staticmethod
    def _node_condition(rule: AlertRule, name: str, node: _Node, now: float) -> tuple[str, float | None, str]:
        if node.offline_since is None:
            return "good", None, f"node {name} online"
        down = now - node.offline_since
        why = f": {node.reason}" if node.reason else ""
        return ("bad" if down >= rule.for_s else "hold"), down, f"node {name} offline for {down:.0f} s{why}"

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
                targets: dict[str, Any] = self._nodes if rule.kind in NODE_KINDS else self._cameras
                names = [rule.camera] if rule.camera else list(targets)
                for name in names:
                    target = targets.get(name)
                    if target is None:
                        continue
                    if rule.kind in NODE_KINDS:
                        verdict, value, message = self._node_condition(rule, name, target, now)
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
        mine = (Alert.rule_id == rule.id, Alert.camera == camera)
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
            with self.sessions() as s, s.begin():
                if rule.cooldown_s > 0:
                    recent = s.scalars(
                        select(func.max(Alert.resolved_ts)).where(*mine, Alert.resolved_ts >= now - rule.cooldown_s)
                    ).first()
                    if recent is not None:
                        self._resolved_at[key] = recent
                        return
                s.add(row)
        except IntegrityError:  # the one firing alert of this rule and camera exists (another worker's)
            with self.sessions() as s:
                existing = s.scalars(select(Alert.id).where(*mine, Alert.state == "firing")).first()
            if existing is not None:
                self._active[key] = existing
            return
        except Exception:
            log.exception("alert not stored (database unreachable?)")
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
                with self.sessions() as s, s.begin():
                    done = s.execute(
                        update(Alert)
                        .where(Alert.id == alert_id, Alert.state == "firing")
                        .values(state="resolved", resolved_ts=now)
                        .returning(Alert.id)
                    ).first()
                    row = s.get(Alert, alert_id) if done is not None else None
            except Exception:
                log.exception("alert resolution not stored")
        if row is None:
            return
        log.warning("RESOLVED %s on %s: %s", row.rule_name, row.camera, message)
        rule = next((r for r in self.rules if r.id == key[0]), None)
        self._announce(rule, row, "resolved")

    def _announce(self, rule: AlertRule | None, row: Alert, transition: str) -> None:
        payload = {"transition": transition, "alert": alert_dict(row)}
        self.publish("alert", payload)
        if self.sender is not None and rule is not None and rule.webhook_url:
            self.sender.send(
                rule.webhook_url, rule.webhook_secret, payload, alert_id=row.id, rule_id=rule.id, transition=transition
            )

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
