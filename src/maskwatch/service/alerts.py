"""Alert rules with hysteresis, cooldown and active hours, evaluated by one elected worker from what is
stored (every worker's data, complete); alerts go to the database, the dashboard (SSE), the log and
webhooks (HMAC-SHA256 signed over a timestamp and the body, retried with backoff, every attempt recorded;
each target checked against ``security.webhooks`` when it is sent to, and the address checked is the one
connected to).

Rule kinds (``AlertRule.kind``):

* ``compliance_below``: over the last ``window_s`` seconds, at least ``min_people`` people ended on the
  camera and the share of compliant ones is below ``threshold`` (0..1). Resolves once it is at least
  ``threshold + hysteresis``, or fewer than ``min_people`` people remain in the window.
* ``unmasked_person`` (opt-in per camera): a person without a mask ended in the last ``window_s`` seconds
  (looked for over :data:`UNMASKED_SETTLE_S` more: a person's event is stored a few seconds after they leave,
  so the last seconds of the window are not known yet when it is read, and an alert resolved on them would
  fire again for a person who left just before). A person whose event arrives late (a node's backlog, a
  replayed spool) and who left while an alert of this rule and camera was firing was covered by it: no new
  alert.
* ``camera_offline``: the camera has been lost, reconnecting or failed for ``for_s`` seconds; resolves
  when it is live again (or removed). Built in (:data:`CAMERA_OFFLINE_RULE`, 60 s: a short blip pages
  nobody) unless a rule of this kind exists.
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
``active_hours`` (``HH:MM-HH:MM`` in the site's time zone, ``site.timezone``; may wrap midnight) rules do
not fire.

Several workers on one database: only the worker holding the ``alerts`` lease (``leader``) evaluates, from
the database (people in the window, cameras' stored states, stats buckets' lags) and from its own view of
the fleet's nodes (every worker receives every node status). The evaluation reads and writes the database
without holding any lock another thread needs. An alert is stored before anything announces it; the
leader then announces each stored transition not yet announced (log, webhook) and marks it announced, so an
alert fired or resolved by a worker that died is announced by the next leader (a webhook may then come
twice, with the same ``X-Maskwatch-Delivery`` id). A firing alert is resolved as soon as the leader sees
its cause gone, whoever fired it and whenever the database comes back. Every worker pushes the alerts'
changes it reads from the database to its own dashboards (SSE).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from maskwatch.core.backoff import Backoff
from maskwatch.core.netpolicy import NetPolicy, RefusedError, check_url
from maskwatch.core.timeutil import iso
from maskwatch.service.settings import AlertRuleConfig
from maskwatch.service.storage.alerts import AlertRepository, Delivery
from maskwatch.service.storage.ingest import BAD_STATES
from maskwatch.service.storage.models import Alert, AlertRule

if TYPE_CHECKING:
    from maskwatch.fleet.ingest import OutboxReport
    from maskwatch.service.storage.cameras import CameraRepository, StoredStatus
    from maskwatch.service.storage.events import EventRepository, WindowCount
    from maskwatch.service.storage.stats import LagPoint, StatsRepository

__all__ = [
    "BROKER_LOST_RULE",
    "CAMERA_OFFLINE_RULE",
    "FLEET_RULES",
    "NODE_KINDS",
    "NODE_OFFLINE_RULE",
    "OUTBOX_DROPPED_RULE",
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

SIGNATURE_HEADER = "X-Maskwatch-Signature"
TIMESTAMP_HEADER = "X-Maskwatch-Timestamp"
#: a receiver refuses a delivery whose timestamp is further than this from its clock (replays)
SIGNATURE_TOLERANCE_S = 300
#: what a failed attempt records when the target could not be reached: one phrase for every network error,
#: so that the delivery log does not tell open, closed and filtered ports apart
UNREACHABLE = "not delivered: no connection or no answer"
NODE_KINDS = ("node_offline", "outbox_dropped")  # rules about fleet nodes rather than cameras
BROKER_KINDS = ("broker_lost",)  # rules about this control room's own MQTT connection
STATE_KINDS = ("camera_offline", "camera_lagging")  # rules about a camera's running, not about its people
RULES_CHECK_S = 5.0  # how often a worker looks for rules changed through another worker
#: how long a person's event may take to be stored after they leave: the tracker ends a track at most 3 s
#: after its last sighting, then the ingest (the chaos soak's resolutions 0.4-0.7 s after an unmasked person
#: left, whose event was not stored yet, fired the rule again)
UNMASKED_SETTLE_S = 5.0

#: the fleet's built-in rule: 30 s rides out an agent restart; silence it by disabling it
NODE_OFFLINE_RULE = AlertRuleConfig(
    name="node offline", kind="node_offline", for_s=30.0, hysteresis=0.0, cooldown_s=60.0
)
#: built in: a camera down for a minute (a reboot, a PoE switch restart) pages; a short blip does not
CAMERA_OFFLINE_RULE = AlertRuleConfig(
    name="camera offline", kind="camera_offline", for_s=60.0, hysteresis=0.0, cooldown_s=300.0
)
#: a node's outbox dropped messages: fires at once, stays at least 10 min (the record is on the node)
OUTBOX_DROPPED_RULE = AlertRuleConfig(
    name="node outbox dropped", kind="outbox_dropped", for_s=0.0, window_s=600.0, hysteresis=0.0, cooldown_s=0.0
)
#: the control room lost its broker: 15 s rides out a broker restart (a hung one is noticed in about as long)
BROKER_LOST_RULE = AlertRuleConfig(name="broker lost", kind="broker_lost", for_s=15.0, hysteresis=0.0, cooldown_s=60.0)
#: the built-in rules of a control room with MQTT ingest
FLEET_RULES = (NODE_OFFLINE_RULE, OUTBOX_DROPPED_RULE, BROKER_LOST_RULE)


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


def _lookback(rule: AlertRule) -> float:
    """How far back a people rule reads: its window, and for ``unmasked_person`` :data:`UNMASKED_SETTLE_S`."""
    return rule.window_s + (UNMASKED_SETTLE_S if rule.kind == "unmasked_person" else 0.0)


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


@dataclass(frozen=True)
class _Inputs:
    """What the camera rules read, from the database, once per evaluation."""

    people: dict[float, dict[str, WindowCount]]  # lookback (s) -> camera -> people in it (see _lookback)
    statuses: dict[str, StoredStatus]
    lags: dict[str, list[LagPoint]]
    cameras: set[str]  # cameras the rules watch (those with data)
    disabled: set[str]  # local cameras switched off: their state and lag rules are not evaluated


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
    def _request(payload: AlertTransition, alert_id: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and unsigned headers of a delivery: every delivery (real alerts and test-fires) is built
        here; each attempt signs it anew (:meth:`_attempt`). An alert's transition keeps one delivery id."""
        body = json.dumps(payload.model_dump(mode="json"), separators=(",", ":"), sort_keys=True).encode("utf-8")
        delivery = f"{alert_id}-{payload.transition}" if alert_id is not None else uuid.uuid4().hex
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "maskwatch-webhook/1",
            "X-Maskwatch-Delivery": delivery,  # the same for a transition announced again (receivers dedupe)
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
        body, headers = self._request(payload, alert_id)
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
    """Evaluates the rules every ``evaluate_every`` seconds on its own thread when ``leader()`` says this
    worker is the elected one (:meth:`evaluate` can be called directly in tests); every worker follows the
    stored alerts for its dashboards.

    Args:
        alerts: rules and alerts.
        cameras, events, stats: what camera rules read (None: no camera rules, e.g. a node-only test).
        publish: the SSE hub's publish.
        sender: webhook deliveries (None: none).
        leader: whether this worker evaluates (the ``alerts`` lease).
        zone: the site's time zone (active hours).
    """

    def __init__(
        self,
        alerts: AlertRepository,
        *,
        publish: Callable[[str, Any], None],
        sender: WebhookSender | None,
        cameras: CameraRepository | None = None,
        events: EventRepository | None = None,
        stats: StatsRepository | None = None,
        evaluate_every: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[int], None] | None = None,
        leader: Callable[[], bool] = lambda: True,
        zone: tzinfo = UTC,
    ) -> None:
        self.alerts = alerts
        self.cameras = cameras
        self.events = events
        self.stats = stats
        self.publish = publish
        self.sender = sender
        self.evaluate_every = evaluate_every
        self.clock = clock
        self.on_change = on_change
        self.leader = leader
        self.zone = zone
        self.rules: list[AlertRule] = []
        self._nodes: dict[str, _Node] = {}
        self._brokers: dict[str, _Broker] = {}  # this worker's MQTT client id -> its connection
        self._rules_seen: tuple[int, float | None] | None = None  # (count, last change): reload when it moves
        self._seen: dict[int, Alert] | None = None  # firing alerts as last read (SSE follows the changes)
        self._announcing: dict[int, str] = {}  # alert -> its last transition sent (a webhook in flight)
        self._why: dict[int, str] = {}  # alert id -> why it resolved (for the log line)
        self._failing = False  # the last evaluation could not reach the database (logged once)
        self._lock = threading.Lock()  # node states only: never held during database I/O
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- inputs ----------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read the rules again (after a change through the API); firing alerts of deleted or disabled
        rules resolve (announced by the elected worker)."""
        seen = self.alerts.rules_version()
        rules = self.alerts.rules()
        self._rules_seen = seen
        self.rules = rules
        enabled = {r.id for r in rules if r.enabled}
        now = self.clock()
        for row in self.alerts.firing():
            if row.rule_id not in enabled and self.alerts.resolve(row.id, now) is not None:
                self._why[row.id] = "rule removed or disabled"
        if self._seen is None:
            self._seen = {row.id: row for row in self.alerts.firing()}

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
        lost, node rules are held. Only the elected worker evaluates, so its own connection is the one
        judged (another worker that lost the broker shows it in its ``/readyz``)."""
        now = self.clock()
        with self._lock:
            b = self._brokers.setdefault(worker, _Broker())
            if connected:
                b.lost_since, b.detail = None, None
            else:
                b.lost_since = b.lost_since or now
                b.detail = detail or b.detail

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

    @staticmethod
    def _condition(rule: AlertRule, name: str, inputs: _Inputs, now: float) -> tuple[str, float | None, str]:
        """('bad' | 'good' | 'hold', value, message) of a camera rule on camera ``name``."""
        if rule.kind in ("compliance_below", "unmasked_person"):
            window = inputs.people.get(_lookback(rule), {}).get(name)
            n, ok = (window.people, window.compliant) if window is not None else (0, 0)
            if rule.kind == "unmasked_person":
                unmasked = n - ok
                return (
                    "bad" if unmasked else "good",
                    float(unmasked),
                    f"{unmasked} person(s) without a mask in the last {rule.window_s:g} s",
                )
            if n < rule.min_people:
                return "good", None, f"only {n} people in the window"
            rate = ok / n
            threshold = rule.threshold if rule.threshold is not None else 0.8
            message = f"compliance {rate:.0%} over the last {n} people ({rule.window_s:g} s), below {threshold:.0%}"
            if rate < threshold:
                return "bad", rate, message
            return ("good" if rate >= threshold + rule.hysteresis else "hold"), rate, message
        if rule.kind == "camera_offline":
            status = inputs.statuses.get(name)
            if status is None or status.state not in BAD_STATES:
                return "good", None, "camera live" if status is None or status.state == "live" else "camera up"
            down = max(0.0, now - status.since)
            return ("bad" if down >= rule.for_s else "hold"), down, f"camera {status.state} for {down:.0f} s"
        if rule.kind == "camera_lagging" and rule.threshold is not None:
            points = inputs.lags.get(name, [])
            bad_since: float | None = None
            for point in points:  # the current run of lagging buckets (hysteresis between the two bounds)
                if point.lag_p95 > rule.threshold:
                    bad_since = point.end if bad_since is None else bad_since
                elif point.lag_p95 < rule.threshold * (1 - rule.hysteresis):
                    bad_since = None
            lag = points[-1].lag_p95 if points else None
            if bad_since is None:
                return "good", lag, "lag back to normal"
            held = now - bad_since
            return (
                ("bad" if held >= rule.for_s else "hold"),
                lag,
                f"lag p95 {lag or 0:.2f} s above {rule.threshold:g} s for {held:.0f} s",
            )
        return "good", None, ""

    def _inputs(self, rules: list[AlertRule], now: float) -> _Inputs:
        """The camera rules' data, read from the database (no lock held). The cameras watched are those with
        data (people, a state, lags); a disabled local camera's people still count, its state does not."""
        kinds = {r.kind for r in rules}
        people: dict[float, dict[str, WindowCount]] = {}
        statuses: dict[str, StoredStatus] = {}
        lags: dict[str, list[LagPoint]] = {}
        disabled: set[str] = set()
        if self.events is not None:
            for lookback in {_lookback(r) for r in rules if r.kind in ("compliance_below", "unmasked_person")}:
                people[lookback] = self.events.people_since(now - lookback)
        if self.cameras is not None:
            disabled = {c.name for c in self.cameras.all() if not c.enabled}
            if "camera_offline" in kinds:
                statuses = self.cameras.statuses()
        if self.stats is not None and "camera_lagging" in kinds:
            since = now - max(r.for_s for r in rules if r.kind == "camera_lagging") - 600.0
            lags = self.stats.lags_since(since)
        names = {*statuses, *lags, *(camera for window in people.values() for camera in window)}
        return _Inputs(people, statuses, lags, names, disabled)

    def evaluate(self, now: float | None = None) -> None:
        """One evaluation (the elected worker), then the dashboards' follow-up (every worker)."""
        now = self.clock() if now is None else now
        try:
            if self.leader():
                self._evaluate(now)
                self._announce()
            self._follow()
        except Exception as exc:
            if not self._failing:
                log.error("alert evaluation paused (database unreachable?): %s", type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            log.warning("alert evaluation resumed")
        self._failing = False

    def _evaluate(self, now: float) -> None:
        rules = [r for r in self.rules if r.enabled]
        camera_rules = [r for r in rules if r.kind not in NODE_KINDS and r.kind not in BROKER_KINDS]
        inputs = self._inputs(camera_rules, now) if camera_rules else _Inputs({}, {}, {}, set(), set())
        with self._lock:
            nodes = copy.deepcopy(self._nodes)
            brokers = copy.deepcopy(self._brokers)
        firing = {(row.rule_id, row.camera): row for row in self.alerts.firing()}
        local = datetime.fromtimestamp(now, self.zone)
        checked: set[tuple[int | None, str]] = set()
        for rule in rules:
            node_rule, broker_rule = rule.kind in NODE_KINDS, rule.kind in BROKER_KINDS
            targets = set(nodes) if node_rule else set(brokers) if broker_rule else inputs.cameras
            for name in [rule.camera] if rule.camera else sorted(targets):
                if node_rule:
                    node = nodes.get(name)
                    if node is None:
                        continue  # not heard of yet: a firing alert waits for its status
                    verdict, value, message = self._node_condition(rule, name, node, now)
                elif broker_rule:
                    broker = brokers.get(name)
                    if broker is None:
                        continue  # another worker's connection: judged by that worker when it leads
                    verdict, value, message = self._broker_condition(rule, name, broker, now)
                elif name not in inputs.cameras:
                    continue  # removed (its firing alert resolves below)
                elif name in inputs.disabled and rule.kind in STATE_KINDS:
                    continue  # switched off on purpose: not offline, not lagging (its alert resolves below)
                else:
                    verdict, value, message = self._condition(rule, name, inputs, now)
                key = (rule.id, name)
                checked.add(key)
                row = firing.get(key)
                if row is not None:
                    if verdict == "good":
                        self._resolve(row, message, now)
                    continue
                if verdict == "bad" and in_active_hours(rule.active_hours, local):
                    window = inputs.people.get(_lookback(rule), {}).get(name)
                    cause_at = window.last_unmasked if rule.kind == "unmasked_person" and window else None
                    self._fire(rule, name, message, value, now, cause_at)
        enabled = {r.id: r for r in rules}
        for where, alert in firing.items():  # causes that are gone: rule disabled or removed, camera removed
            owner = enabled.get(alert.rule_id) if alert.rule_id is not None else None
            if owner is None:
                self._resolve(alert, "rule removed or disabled", now)
            elif where not in checked and owner.kind not in NODE_KINDS and owner.kind not in BROKER_KINDS:
                self._resolve(alert, "camera disabled" if where[1] in inputs.disabled else "camera removed", now)

    def _fire(
        self, rule: AlertRule, camera: str, message: str, value: float | None, now: float, cause_at: float | None
    ) -> None:
        """Store a new alert (announced next), unless one of its rule and camera is firing, resolved within
        the cooldown, or was firing when the newest cause happened (``cause_at``: an unmasked person whose
        event arrived late, after a network or database outage, is not a new alert)."""
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
        self.alerts.fire(row, cooldown_s=rule.cooldown_s, now=now, cause_at=cause_at)

    def _resolve(self, row: Alert, message: str, now: float) -> None:
        if self.alerts.resolve(row.id, now) is not None:
            self._why[row.id] = message

    def _announce(self) -> None:
        """Announce every stored transition not announced yet (log, webhook), in order per alert (one
        webhook thread: a receiver sees ``firing`` before ``resolved``); each is marked announced once its
        webhook is done (or at once without one)."""
        rules = {r.id: r for r in self.rules}
        for row in self.alerts.unannounced():
            done = self._announcing.get(row.id, row.announced)  # announced, or on its way
            transitions: list[Literal["firing", "resolved"]] = [] if done is not None else ["firing"]
            if row.state == "resolved" and done != "resolved":
                transitions.append("resolved")
            if not transitions:
                continue
            rule = rules.get(row.rule_id) if row.rule_id is not None else None
            last: Future[bool] | None = None
            for transition in transitions:
                if transition == "firing":
                    log.warning("ALERT %s on %s: %s", row.rule_name, row.camera, row.message)
                else:
                    why = self._why.pop(row.id, "cause gone")
                    log.warning("RESOLVED %s on %s: %s", row.rule_name, row.camera, why)
                if self.sender is not None and rule is not None and rule.webhook_url:
                    payload = AlertTransition(transition=transition, alert=AlertOut.of(row))
                    last = self.sender.send(
                        rule.webhook_url, rule.webhook_secret, payload, alert_id=row.id, rule_id=rule.id
                    )
            final = transitions[-1]
            self._announcing[row.id] = final
            if last is not None:
                last.add_done_callback(functools.partial(self._delivered, row.id, final))
            else:
                self._announced(row.id, final)

    def _delivered(self, alert_id: int, transition: str, _future: Future[bool]) -> None:
        self._announced(alert_id, transition)

    def _announced(self, alert_id: int, transition: str) -> None:
        try:
            self.alerts.mark_announced(alert_id, transition)
        except Exception:
            log.warning("alert %d: announcement not recorded (announced again later)", alert_id)
        if self._announcing.get(alert_id) == transition:
            self._announcing.pop(alert_id, None)

    def _follow(self) -> None:
        """Push the stored alerts' changes to this worker's dashboards (SSE) and the firing gauge."""
        firing = {row.id: row for row in self.alerts.firing()}
        seen, self._seen = self._seen, firing
        if seen is not None:
            for alert_id, row in firing.items():
                if alert_id not in seen:
                    self._push("firing", row)
            for alert_id in seen.keys() - firing.keys():
                resolved = self.alerts.get(alert_id)
                if resolved is not None:
                    self._push("resolved", resolved)
        if self.on_change is not None:
            self.on_change(len(firing))

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

    def _push(self, transition: Literal["firing", "resolved"], row: Alert) -> None:
        self.publish("alert", AlertTransition(transition=transition, alert=AlertOut.of(row)).model_dump(mode="json"))

    @property
    def firing(self) -> int:
        """Alerts firing (every worker's, as last read)."""
        return len(self._seen or {})

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
            except Exception:
                pass  # the evaluation below says it once
            self.evaluate()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self.sender is not None:
            self.sender.close()
