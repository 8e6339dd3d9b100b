"""Alert rules evaluated on the live event flow, with hysteresis, cooldown and active hours; alerts go to
the database, the dashboard (SSE), the log and webhooks (HMAC-SHA256 signed over a timestamp and the body,
retried with backoff, every attempt recorded; each target checked against ``security.webhooks`` when it is
sent to, and the address checked is the one connected to).

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
from maskwatch.core.netpolicy import NetPolicy, RefusedError, check_url
from maskwatch.service.settings import AlertRuleConfig
from maskwatch.service.storage.alerts import AlertRepository, Delivery
from maskwatch.service.storage.models import Alert, AlertRule

__all__ = [
    "NODE_KINDS",
    "NODE_OFFLINE_RULE",
    "SIGNATURE_HEADER",
    "SIGNATURE_TOLERANCE_S",
    "TIMESTAMP_HEADER",
    "AlertEngine",
    "AlertOut",
    "AlertTransition",
    "WebhookSender",
    "in_active_hours",
    "sign",
    "verify",
]

log = logging.getLogger("maskwatch.service")

BAD_STATES = ("lost", "reconnecting", "failed")
SIGNATURE_HEADER = "X-Maskwatch-Signature"
TIMESTAMP_HEADER = "X-Maskwatch-Timestamp"
#: a receiver refuses a delivery whose timestamp is further than this from its clock (replays)
SIGNATURE_TOLERANCE_S = 300
#: what a failed attempt records when the target could not be reached: one phrase for every network error,
#: so that the delivery log does not tell open, closed and filtered ports apart
UNREACHABLE = "not delivered: no connection or no answer"
NODE_KINDS = ("node_offline",)  # rules about fleet nodes rather than cameras
RULES_CHECK_S = 5.0  # how often a worker looks for rules changed through another worker

#: the fleet's built-in rule: 30 s rides out an agent restart; silence it by disabling it
NODE_OFFLINE_RULE = AlertRuleConfig(
    name="node offline", kind="node_offline", for_s=30.0, hysteresis=0.0, cooldown_s=60.0
)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The value of :data:`SIGNATURE_HEADER`: ``sha256=`` + HMAC-SHA256, keyed with the secret, of
    ``"{timestamp}."`` followed by the raw body (``timestamp``: the :data:`TIMESTAMP_HEADER` value, Unix
    seconds). Signing the time makes a captured delivery useless once the tolerance window has passed."""
    signed = str(int(timestamp)).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does with a delivery: the timestamp is an integer within ``tolerance_s`` of ``now``
    and the signature matches (compared in constant time). docs/service.md shows the same in a few lines."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, sent), signature)


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
    """The ``alert`` message of the live stream and the body of a webhook delivery (``test``: a sample sent
    by the rules editor's test-fire, not a real alert)."""

    transition: Literal["firing", "resolved", "acknowledged", "test"]
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


class WebhookSender:
    """Deliveries, in order, on one thread: ``attempts`` tries with doubling, jittered waits from ``backoff``
    seconds (:class:`~maskwatch.core.backoff.Backoff`), each attempt recorded (a receiver sees ``firing``
    before ``resolved`` even when the first attempt had to be retried).

    Each attempt is signed anew (a fresh timestamp) and checked against ``policy`` (``security.webhooks``;
    ``policy()`` is read at each attempt, so a changed setting applies at once): the target's host is
    resolved, every address checked, and the request sent to the first of those addresses (the name goes in
    ``Host`` and in TLS's SNI, so certificates are still checked against it). A refused target is recorded
    as such and not retried; network errors are recorded as one phrase (:data:`UNREACHABLE`)."""

    def __init__(
        self,
        alerts: AlertRepository,
        *,
        timeout: float,
        attempts: int,
        backoff: float,
        on_attempt: Callable[[bool], None] | None = None,
        policy: Callable[[], NetPolicy] | None = None,
    ) -> None:
        self.alerts = alerts
        self.policy = policy
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

    def _target(self, url: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """(URL to connect to, extra headers, request extensions): the checked address in place of the name
        (:class:`~maskwatch.core.netpolicy.RefusedError` when the policy refuses it)."""
        import httpx

        if self.policy is None:
            return url, {}, {}
        checked = check_url(url, self.policy())
        if not checked.addresses:  # a listed name that does not resolve: let the client say so
            return url, {}, {}
        address = checked.addresses[0]
        parsed = httpx.URL(url)
        pinned = str(parsed.copy_with(host=address))
        host = parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
        extensions = {"sni_hostname": parsed.host} if checked.scheme == "https" else {}
        return pinned, {"Host": host}, extensions

    @staticmethod
    def _request(payload: AlertTransition) -> tuple[bytes, dict[str, str]]:
        """The body and unsigned headers of a delivery: every delivery (real alerts and test-fires) is built
        here; each attempt signs it anew (:meth:`_attempt`)."""
        body = json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "maskwatch-webhook/1",
            "X-Maskwatch-Delivery": uuid.uuid4().hex,
            "X-Maskwatch-Event": payload.transition,
        }
        return body, headers

    def _attempt(
        self,
        url: str,
        secret: str | None,
        body: bytes,
        headers: dict[str, str],
        *,
        transition: str,
        attempt: int,
        alert_id: int | None,
        rule_id: int | None,
    ) -> tuple[Delivery, bool]:
        """One POST, signed over a fresh timestamp, to the checked address; recorded (and counted) whatever
        its outcome. Returns the delivery and whether the policy refused the target (not worth retrying)."""
        import httpx

        began = time.monotonic()
        status, error, ok, refused = None, None, False, False
        timestamp = int(time.time())
        signed = {**headers, TIMESTAMP_HEADER: str(timestamp)}
        if secret:
            signed[SIGNATURE_HEADER] = sign(secret, body, timestamp)
        try:
            target, extra, extensions = self._target(url)
            with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
                response = client.post(target, content=body, headers={**signed, **extra}, extensions=extensions)
            status, ok = response.status_code, 200 <= response.status_code < 300
            if not ok:
                error = f"HTTP {status}"
        except RefusedError as exc:
            error, refused = f"refused by security.webhooks: {exc}"[:500], True
        except Exception:
            error = UNREACHABLE
        delivery = Delivery(
            alert_id=alert_id,
            rule_id=rule_id,
            url=url,
            transition=transition,
            attempt=attempt,
            ok=ok,
            status_code=status,
            error=error,
            ts=time.time(),
            duration_ms=round((time.monotonic() - began) * 1000, 1),
        )
        self._record(delivery)
        if self.on_attempt is not None:
            self.on_attempt(ok)
        return delivery, refused

    def _deliver(
        self, url: str, secret: str | None, payload: AlertTransition, alert_id: int | None, rule_id: int | None
    ) -> bool:
        body, headers = self._request(payload)
        waits = self.schedule()
        for attempt in range(1, self.attempts + 1):
            delivery, refused = self._attempt(
                url,
                secret,
                body,
                headers,
                transition=payload.transition,
                attempt=attempt,
                alert_id=alert_id,
                rule_id=rule_id,
            )
            if delivery.ok:
                return True
            log.warning(
                "webhook delivery %d/%d for alert %s failed: %s", attempt, self.attempts, alert_id, delivery.error
            )
            if refused:
                break
            if attempt < self.attempts and self._stop.wait(waits.next()):
                break
        return False

    def test_fire(self, url: str, secret: str | None, payload: AlertTransition, *, rule_id: int) -> Delivery:
        """One signed sample delivery now, on the caller's thread (the rules editor waits for its outcome),
        recorded like every attempt; not retried."""
        body, headers = self._request(payload)
        delivery, _ = self._attempt(
            url, secret, body, headers, transition=payload.transition, attempt=1, alert_id=None, rule_id=rule_id
        )
        return delivery

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

    def test_fire(self, rule: AlertRule) -> Delivery:
        """A sample alert of ``rule`` sent to its webhook (signed with its secret) as a ``test`` delivery; the
        rule must have a webhook URL."""
        if self.sender is None or not rule.webhook_url:
            raise ValueError(f"rule {rule.name!r} has no webhook_url")
        now = self.clock()
        sample = AlertOut(
            id=None,
            rule_id=rule.id,
            rule=rule.name,
            kind=rule.kind,
            camera=rule.camera or "sample-camera",
            state="firing",
            message=f"test delivery of rule {rule.name!r} from maskwatch: not a real alert",
            value=None,
            started=now,
            resolved=None,
            acknowledged_by=None,
            acknowledged=None,
        )
        payload = AlertTransition(transition="test", alert=sample)
        return self.sender.test_fire(rule.webhook_url, rule.webhook_secret, payload, rule_id=rule.id)

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
