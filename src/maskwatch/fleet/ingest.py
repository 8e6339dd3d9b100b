"""The control room's MQTT ingest: subscribes to every node's topics, validates each message and feeds the
valid engine events to the control room's event pipeline (``EventPipeline.handle_event`` of the service:
storage idempotent by event id, alerts, live dashboard).

**Acknowledgement, end to end.** A message is acknowledged only once the control room has *stored* it: the
broker's PUBACK (manual) and, back to its node on ``maskwatch/{node}/ack`` (:data:`~maskwatch.fleet.topics.
ACK_SCHEMA`, event ids batched every ``ack_every`` seconds), the acknowledgement that lets the node delete it
from its outbox. "Stored" means written by the service's writer (:class:`WriteProgress`), or recorded in the
dead-letter table when the control room cannot store it (:data:`DeadLetterSink`); a message neither stored
nor recorded is never acknowledged, so its node sends it again. Several workers on a shared subscription each
acknowledge what they stored; a message delivered twice (a resend, a redelivery) is stored once and
acknowledged twice, which is harmless.

One worker (default) uses a plain subscription in a persistent session. Several workers use a shared
subscription (``$share/maskwatch/...``; ``mqtt://...?shared=1``); measured on Mosquitto 2.0, a shared
subscription drops what is published while no member is connected, which the nodes' resends now make good.

Validation, in order; a failure is counted under its reason, recorded as a dead letter and never stops
ingest: ``oversized`` (payload over ``max_bytes``), ``topic`` (not a maskwatch topic), ``json`` (not JSON /
truncated), ``schema`` (not ``maskwatch.event/1.x``), ``invalid`` (fails the tolerant reader
:func:`~maskwatch.fleet.topics.read_event`, or an event id longer than storage keeps), ``mismatch`` (the
event's ``source`` is not the topic's camera, or its type does not belong on that channel), ``cap`` (a node
or camera past :class:`~maskwatch.fleet.validation.FleetCaps`), ``remote`` (times out of the accepted window,
negative or inconsistent counts: :mod:`maskwatch.fleet.validation`); a node status must pass its schema
(``invalid``). The reader is tolerant: fields it does not know are ignored and any ``1.x`` is read, so a
newer agent's events are stored. A remote event's snapshot reference is dropped (it would name a file of the
control room).
Unauthorised publishes never get here: the broker refuses them (password file + ACL).

Events are renamed ``{node}:{camera}`` (camera names are only unique within a node). A full ingest buffer
slows ingest down instead of dropping: the message callback waits for room (the service hands it
``handle_event(..., block=True)``), so paho stops reading and unacknowledged messages stay with the broker.
PUBACKs pending when the connection drops are forgotten (the broker sends those messages again under the
same packet ids; an old id acknowledged on the new connection could release a newer message); the end-to-end
acknowledgement of what was stored meanwhile is still sent.

**Node state.** Fleet state (:meth:`FleetIngest.state`, a :class:`FleetState`, from memory: the database is
never read): nodes online/offline with last seen and their cameras' state, FPS, lag and compliance from the
latest stats bucket; written to ``state_file`` every ``state_every`` seconds when one is given. Only a node's
status says whether it is online. A node's **last will** counts only once this worker has stayed connected
``confirm_s`` seconds after it arrived (a broker being stopped sends every node's will just before it drops
this worker too), and a will found retained at (re)connection only ``grace_s`` seconds after this worker
connected (the nodes reconnect meanwhile). Then ``on_node`` hears ``offline`` (the alert engine's
``node_offline`` rules) and each of its cameras gets a ``source_status`` ``lost`` event (``camera_offline``
rules); when the node is back, those cameras get back the state its status reports. A lost broker is this
worker's own news (``on_broker``: the alert engine's ``broker_lost`` rule), logged once per outage. The
outbox part of each status (what the node's budget dropped) goes to ``on_outbox``.

The fleet never imports the service: it is handed typed ports (:data:`EventSink`, :class:`WriteProgress`,
:data:`NodeObserver`, :data:`DeadLetterSink`, :data:`BrokerObserver`, :data:`OutboxObserver`); the service
wires them (ARCHITECTURE.md, rule 4).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from maskwatch.core.backoff import Backoff
from maskwatch.core.names import qualified
from maskwatch.core.timeutil import iso
from maskwatch.fleet import topics
from maskwatch.fleet.publisher import ReconnectSchedule, TLSOptions, make_client
from maskwatch.fleet.topics import BrokerURL
from maskwatch.fleet.validation import FleetCaps, RemoteLimits, check_event, parse_node_status, strip_remote

__all__ = [
    "MAX_EVENT_ID",
    "REJECT_REASONS",
    "BrokerObserver",
    "CameraState",
    "DeadLetter",
    "DeadLetterSink",
    "EventSink",
    "FleetIngest",
    "FleetState",
    "NodeObserver",
    "NodeState",
    "OutboxObserver",
    "OutboxReport",
    "WriteProgress",
    "parse_ingest_url",
]

log = logging.getLogger("maskwatch.fleet")

REJECT_REASONS = ("oversized", "topic", "json", "schema", "invalid", "mismatch", "cap", "remote")
MAX_EVENT_ID = 64  # what storage keeps of an event id (events.event_id, ingested.event_id)
#: what the control room's writer stores: a message of these is acknowledged only once it is written (a camera's
#: state too: acknowledged on arrival, it was lost with a worker killed while its database was down)
_STORED = ("track_ended", "stats", "source_status")
_OVERSIZED_KEPT = 4096  # bytes of an oversized payload kept in its dead letter
_SOURCE_STATES = ("connecting", "live", "lost", "reconnecting", "ended", "failed")

NodeStatus = Literal["online", "offline", "unknown"]  # unknown: seen through its events, no status yet


# -- the ports: what ingest needs from the control room it feeds ---------------------------------------------

#: takes one typed engine event; False means an event to store was not queued (never acknowledge it)
EventSink = Callable[[Any], bool | None]

#: ``(node, "online" | "offline", reason)`` on every valid node status (the alert engine's node rules)
NodeObserver = Callable[[str, str, str | None], None]

#: ``(connected, why not)`` when this worker's own connection to the broker comes and goes
BrokerObserver = Callable[[bool, str | None], None]


@dataclass(frozen=True)
class DeadLetter:
    """A message the control room cannot store, with the reason: recorded instead of acknowledged into
    nothing."""

    topic: str
    payload: bytes  # as received (an oversized one: its first bytes)
    size: int  # the payload's full size
    reason: str  # one of REJECT_REASONS
    detail: str
    node: str | None  # from the topic, when it names one
    event_id: str | None  # from the payload, when it has one


#: records one dead letter durably; False when it could not (the message is then not acknowledged)
DeadLetterSink = Callable[[DeadLetter], bool]


@dataclass(frozen=True)
class OutboxReport:
    """What a node's status says about its outbox: its backlog and what its budget dropped."""

    messages: int = 0
    budget_bytes: int = 0
    dropped_events: int = 0
    dropped_stats: int = 0
    drop_episodes: int = 0
    dropping: bool = False  # an episode is open now
    last_drop_first: int | None = None  # creation times (epoch s) of the first and last message dropped
    last_drop_last: int | None = None

    @classmethod
    def of(cls, outbox: Mapping[str, int]) -> OutboxReport:
        def number(key: str) -> int | None:
            value = outbox.get(key)
            return int(value) if isinstance(value, int) else None

        return cls(
            messages=number("messages") or 0,
            budget_bytes=number("budget_bytes") or 0,
            dropped_events=number("dropped_events") or 0,
            dropped_stats=number("dropped_stats") or 0,
            drop_episodes=number("drop_episodes") or 0,
            dropping=bool(outbox.get("dropping")),
            last_drop_first=number("last_drop_first"),
            last_drop_last=number("last_drop_last"),
        )


#: ``(node, report)`` on every valid node status carrying its outbox (the alert engine's ``outbox_dropped``)
OutboxObserver = Callable[[str, OutboxReport], None]


class WriteProgress(Protocol):
    """The control room's writer (a FIFO): events it received and dropped so far, and how many still wait.
    A stored event's message is acknowledged once everything queued before it has been written (or recorded
    as a dead letter)."""

    @property
    def received(self) -> int: ...

    @property
    def dropped(self) -> int: ...

    @property
    def backlog(self) -> int: ...


# -- fleet state -----------------------------------------------------------------------------------------------


@dataclass
class CameraState:
    """A node's camera as this worker last saw it (its status events and latest stats bucket)."""

    state: str | None = None
    reason: str | None = None  # of its last source status
    last_seen: float | None = None
    fps: float | None = None
    lag_p50: float | None = None
    lag_p95: float | None = None
    compliance: float | None = None
    people: int | None = None
    frames_dropped: int | None = None
    lost_with_node: bool = False  # marked lost because its node went offline (put back when it returns)
    state_ts: float = 0.0  # the time of the status that set ``state`` (a view takes a newer stored one)


@dataclass
class NodeState:
    """A node as this worker last saw it: its retained status (last will) and its cameras."""

    state: NodeStatus = "unknown"
    last_seen: float | None = None
    since: float | None = None  # when it entered ``state``
    reason: str | None = None  # why it went offline
    outbox: dict[str, int] | None = None  # the node's own outbox figures (backlog, budget, drops)
    cameras: dict[str, CameraState] = field(default_factory=dict)
    will_since: float | None = None  # its last will arrived then and is not confirmed yet


@dataclass(frozen=True)
class FleetState:
    """Nodes and the ingest counters at one moment (copies: safe to read while ingest goes on)."""

    nodes: dict[str, NodeState]
    accepted: int
    rejected: dict[str, int]
    connected: bool
    pending_acks: int
    last_error: str | None = None  # why the broker refused or dropped the connection, while not connected
    broker_lost_since: float | None = None  # this worker has had no broker connection since then
    dead_letters: int = 0  # messages recorded as dead letters by this worker
    acks_sent: int = 0  # event ids acknowledged to their nodes by this worker

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Pending(NamedTuple):
    """A message waiting for its acknowledgements: sent once the writer has written up to ``mark`` (and its
    dead letter, if it is one, is recorded)."""

    session: int  # the connection it arrived on (its PUBACK is only valid there)
    mid: int
    qos: int
    mark: int
    node: str | None  # where its end-to-end acknowledgement goes
    event_id: str | None
    letter: DeadLetter | None = None  # a dead letter the database could not record yet (retried in order)


class _Receipt(NamedTuple):
    """What became of one message: the write mark to wait for (0: none; None: not taken, never
    acknowledge), what to acknowledge end to end, and a dead letter still to record."""

    mark: int | None
    node: str | None = None
    event_id: str | None = None
    letter: DeadLetter | None = None


class FleetIngest:
    """Subscriber feeding ``handle_event``.

    Args:
        handle_event: the control room's event pipeline (any :data:`EventSink`); returning False means an
            event to store was not queued, so its message is not acknowledged (sent again).
        broker: the broker.
        client_id: stable per worker (its persistent session holds what it has not acknowledged).
        progress: the control room's writer (:class:`WriteProgress`): a stored event's message is
            acknowledged only once it has been written. None: acknowledged as soon as ``handle_event`` returns.
        shared: use the shared subscription (``$share/maskwatch/...``) to split the load between workers.
        max_bytes: larger payloads are rejected.
        on_node: told every valid node status (:data:`NodeObserver`).
        dead_letter: records what cannot be stored (:data:`DeadLetterSink`); None: rejected messages are
            only counted (and acknowledged).
        on_broker: told when this worker's broker connection is lost and back (:data:`BrokerObserver`).
        on_outbox: told each node's outbox report (:data:`OutboxObserver`).
        state_file: where to write :meth:`state` (JSON) every ``state_every`` seconds while running.
        limits: caps on nodes and cameras, and the time window of remote events
            (:class:`~maskwatch.fleet.validation.RemoteLimits`).
        ack_every: seconds between end-to-end acknowledgement messages (each carries up to 1000 ids).
        confirm_s: a last will counts once this worker has stayed connected this long after it.
        grace_s: a last will found retained at (re)connection counts this long after the connection.
    """

    def __init__(
        self,
        handle_event: EventSink,
        broker: BrokerURL,
        *,
        client_id: str = "maskwatch-ingest",
        progress: WriteProgress | None = None,
        shared: bool = False,
        max_bytes: int = 256 * 1024,
        tls: TLSOptions | None = None,
        on_node: NodeObserver | None = None,
        dead_letter: DeadLetterSink | None = None,
        on_broker: BrokerObserver | None = None,
        on_outbox: OutboxObserver | None = None,
        state_file: Path | None = None,
        state_every: float = 2.0,
        limits: RemoteLimits | None = None,
        ack_every: float = 0.25,
        confirm_s: float = 5.0,
        grace_s: float = 30.0,
    ) -> None:
        self.handle_event = handle_event
        self.limits = limits or RemoteLimits()
        self.caps = FleetCaps(self.limits)
        self.on_node = on_node
        self.dead_letter = dead_letter
        self.on_broker = on_broker
        self.on_outbox = on_outbox
        self.broker = broker
        self.client_id = client_id
        self.max_bytes = max_bytes
        self.shared = shared
        self.progress = progress
        self.state_file = state_file
        self.state_every = state_every
        self.ack_every = ack_every
        self.confirm_s = confirm_s
        self.grace_s = grace_s
        self.client = make_client(broker, client_id, clean_session=False, tls=tls, window=1000)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self._reconnect = ReconnectSchedule(self.client, Backoff(1.0, 5.0, jitter=0.2))
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._to_ack: dict[str, list[str]] = {}  # node -> stored event ids not yet acknowledged to it
        self._session = 0  # counts connections: PUBACKs never cross one
        self._connected_at = 0.0
        self._wills: dict[str, float] = {}  # node -> when its last will counts
        self._letter_waits = Backoff(1.0, 10.0, jitter=0.1)  # retries of dead letters the database refused
        self._letter_retry = 0.0
        self._closing = threading.Event()  # stop(): new messages are left unacknowledged for the next start
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.dead_letters = 0
        self.acks_sent = 0
        self.nodes: dict[str, NodeState] = {}
        self.broker_lost_since: float | None = None
        self.last_error: str | None = None

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and acknowledge as writes complete."""
        self.broker_lost_since = time.time()  # until the first connection
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        loops = [(self._ack_loop, "maskwatch-mqtt-ack")]
        if self.state_file is not None:
            loops.append((self._state_loop, "maskwatch-fleet-state"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("fleet ingest: %s as %s", self.broker, self.client_id)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking messages, acknowledge what has been written (up to ``timeout``), disconnect."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(2.0)
        self._threads = []
        self._flush_acks()
        self.client.disconnect()
        self.client.loop_stop()

    def _state_loop(self) -> None:
        assert self.state_file is not None
        path = self.state_file
        while not self._stop.wait(self.state_every):
            try:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.state().to_dict(), indent=1))
                os.replace(tmp, path)
            except OSError:
                log.exception("fleet state not written")

    # -- paho callbacks (network thread) ------------------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            error = f"connection refused: {reason_code}"
            if error != self.last_error:  # once per outage, not at every retry
                log.error("broker %s refused the ingest connection: %s", self.broker, reason_code)
            self.last_error = error
            self._broker_state(False, error)
            return
        self._reconnect.reset()
        with self._lock:
            self._session += 1
            self._connected_at = time.time()
        self.connected.set()
        client.subscribe([(t, 1) for t in topics.ingest_subscriptions(self.shared)])
        lost = self.broker_lost_since
        if self.last_error is not None or (lost is not None and time.time() - lost > 5):
            down = time.time() - (lost or time.time())
            log.warning("fleet ingest connected to %s again (no broker for %.0f s)", self.broker, down)
        else:
            log.info("fleet ingest connected to %s", self.broker)
        self.last_error = None
        self.broker_lost_since = None
        self._broker_state(True, None)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._reconnect.arm()
        self._broker_state(False, "broker unreachable")

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning(
                "fleet ingest lost its broker %s (%s): node states are held until it is back; the nodes keep "
                "their events",
                self.broker,
                reason_code,
            )
        with self._lock:
            self._session += 1  # what is pending now is sent again by the broker: never PUBACK it
            self._wills.clear()  # wills not yet confirmed: the broker sends them again (retained) if still true
        if self.connected.is_set():
            self.broker_lost_since = time.time()
        self.connected.clear()
        self._reconnect.arm()
        if not self._stop.is_set():
            self._broker_state(False, f"connection lost: {reason_code}")

    def _broker_state(self, connected: bool, why: str | None) -> None:
        if self.on_broker is not None:
            try:
                self.on_broker(connected, why)
            except Exception:
                log.exception("broker state not handled")

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        if self._closing.is_set():
            return  # not acknowledged: the broker sends it again to the next start
        session = self._session
        try:
            receipt = self._receive(message.topic, message.payload, retained=bool(message.retain))
        except Exception as exc:
            log.exception("message on %s not handled", message.topic)
            receipt = self._reject("invalid", message.topic, message.payload, f"{type(exc).__name__}: {exc}")
        if receipt.mark is None:
            return
        with self._lock:
            if receipt.mark <= 0 and receipt.letter is None and not self._pending:
                if message.qos and session == self._session:
                    client.ack(message.mid, message.qos)
                self._stored(receipt.node, receipt.event_id)
            else:
                self._pending.append(
                    _Pending(
                        session, message.mid, message.qos, receipt.mark, receipt.node, receipt.event_id, receipt.letter
                    )
                )

    def _stored(self, node: str | None, event_id: str | None) -> None:
        """(under the lock) ``event_id`` is stored: acknowledge it to its node with the next batch."""
        if node is not None and event_id is not None:
            self._to_ack.setdefault(node, []).append(event_id)

    def _ack_loop(self) -> None:
        flushed = checked = time.monotonic()
        while not self._stop.wait(0.02):
            if self._pending:
                written = self._written()
                while True:
                    with self._lock:  # (ack only queues a packet: no paho lock is taken while holding ours)
                        head = self._pending[0] if self._pending else None
                    if head is None or head.mark > written:
                        break
                    if head.letter is not None and not self._retry_letter(head.letter):
                        break  # the database cannot record it yet: it and what came after wait, in order
                    with self._lock:
                        if not self._pending or self._pending[0] is not head:
                            break
                        self._pending.popleft()
                        if head.qos and head.session == self._session:
                            self.client.ack(head.mid, head.qos)
                        self._stored(head.node, head.event_id)  # stored, whatever the connection did meanwhile
            now = time.monotonic()
            if now - flushed >= self.ack_every:
                flushed = now
                self._flush_acks()
            if now - checked >= 0.25:
                checked = now
                self._confirm_wills()

    def _flush_acks(self) -> None:
        """Publish the acknowledgements gathered so far (QoS 1; paho queues them while disconnected)."""
        with self._lock:
            batches, self._to_ack = self._to_ack, {}
        for node, ids in batches.items():
            for i in range(0, len(ids), topics.ACK_MAX_IDS):
                chunk = ids[i : i + topics.ACK_MAX_IDS]
                self.client.publish(topics.ack_topic(node), topics.ack_payload(chunk), qos=1)
                self.acks_sent += len(chunk)

    # -- validation ------------------------------------------------------------------------------------------

    def _reject(
        self,
        reason: str,
        topic: str,
        payload: bytes,
        detail: str = "",
        node: str | None = None,
        event_id: str | None = None,
    ) -> _Receipt:
        """Count and record a message that cannot be stored; acknowledged only once recorded."""
        log.debug("rejected message on %s: %s %s", topic, reason, detail)
        if self.dead_letter is not None:
            kept = payload[:_OVERSIZED_KEPT] if reason == "oversized" else payload
            letter = DeadLetter(topic, bytes(kept), len(payload), reason, detail[:500], node, event_id)
            if not self.dead_letter(letter):
                self._letter_retry = time.monotonic() + self._letter_waits.next()
                return _Receipt(0, node, event_id, letter)  # recorded (then acknowledged) once the database can
            self._letter_waits.reset()
            self.dead_letters += 1
        self.rejected[reason] += 1
        return _Receipt(0, node, event_id)

    def _retry_letter(self, letter: DeadLetter) -> bool:
        """Record a dead letter the database could not take before (tried again with backoff); True once done."""
        if self.dead_letter is None or time.monotonic() < self._letter_retry:
            return False
        if not self.dead_letter(letter):
            self._letter_retry = time.monotonic() + self._letter_waits.next()
            return False
        self._letter_waits.reset()
        self.dead_letters += 1
        self.rejected[letter.reason] += 1
        return True

    def receive(self, topic: str, payload: bytes, *, retained: bool = False) -> int | None:
        """Validate and hand on one message. Returns the service's write mark to wait for before
        acknowledging (0: nothing to wait for; None: not taken, never acknowledge)."""
        return self._receive(topic, payload, retained=retained).mark

    def _receive(self, topic: str, payload: bytes, *, retained: bool = False) -> _Receipt:
        if len(payload) > self.max_bytes:
            return self._reject("oversized", topic, payload, f"{len(payload)} bytes")
        parsed = topics.parse_topic(topic)
        if parsed is None:
            return self._reject("topic", topic, payload)
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._reject("json", topic, payload, str(exc), parsed.node)
        if not isinstance(body, dict):
            return self._reject("json", topic, payload, "not an object", parsed.node)
        if parsed.camera is None:
            return self._node_status(parsed.node, body, topic, payload, retained)
        from maskwatch.core.events import SCHEMA

        raw_id = body.get("id")
        event_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_EVENT_ID else None
        if not topics.accepts(body.get("schema"), SCHEMA):
            return self._reject("schema", topic, payload, str(body.get("schema"))[:60], parsed.node, event_id)
        try:
            event = topics.read_event(body)
        except ValueError as exc:  # pydantic's ValidationError is one
            return self._reject("invalid", topic, payload, str(exc)[:200], parsed.node, event_id)
        if not event.id or len(event.id) > MAX_EVENT_ID:
            return self._reject("invalid", topic, payload, f"event id of {len(event.id)} characters", parsed.node)
        if event.source != parsed.camera or topics.CHANNEL_OF.get(event.type) != parsed.channel:
            detail = f"{event.type} from {event.source!r}"
            return self._reject("mismatch", topic, payload, detail, parsed.node, event_id)
        with self._lock:
            known = self.nodes.get(parsed.node)
            capped = self.caps.admit(self.nodes, parsed.node, parsed.camera, set(known.cameras) if known else set())
        if capped:
            return self._reject("cap", topic, payload, capped, parsed.node, event_id)
        refused = check_event(event, time.time(), self.limits)
        if refused:
            return self._reject("remote", topic, payload, refused, parsed.node, event_id)
        event = strip_remote(event)
        renamed = event.model_copy(update={"source": qualified(parsed.node, parsed.camera)})
        self._observe(parsed.node, parsed.camera, event)
        if self.handle_event(renamed) is False:
            return _Receipt(None)  # not queued (stopping): the broker keeps it
        self.accepted += 1
        if event.type in _STORED and self.progress is not None:
            # this event's place in the writer's FIFO (conservative: everything queued so far)
            return _Receipt(int(self.progress.received) + int(self.progress.dropped), parsed.node, event.id)
        return _Receipt(0, parsed.node, event.id)

    def _written(self) -> int:
        """How many events the writer has finished with, in arrival order (read ``received`` before
        ``backlog``, so a concurrent arrival can only make this smaller)."""
        if self.progress is None:
            return 1 << 62
        done = int(self.progress.received) + int(self.progress.dropped)
        return done - int(self.progress.backlog)

    # -- fleet state -------------------------------------------------------------------------------------------

    def _node(self, node: str) -> NodeState:
        with self._lock:
            return self.nodes.setdefault(node, NodeState())

    def _observe(self, node: str, camera: str, event: Any) -> None:
        """A node's event: its camera's figures. A node never heard of is online; one whose status says it
        is offline stays so (its events may be a backlog arriving late: only its status brings it back)."""
        state = self._node(node)
        now = time.time()
        state.last_seen = now
        if state.state == "unknown":
            state.state, state.since = "online", now
        cam = state.cameras.setdefault(camera, CameraState())
        cam.last_seen = now
        if event.type == "stats":
            cam.fps, cam.lag_p50, cam.lag_p95 = event.analysed_fps, event.lag.p50, event.lag.p95
            cam.compliance, cam.people, cam.frames_dropped = event.compliance, event.n_people, event.frames_dropped
        elif event.type == "source_status" and event.time.timestamp() >= cam.state_ts:  # older (late): ignored
            cam.state, cam.reason, cam.state_ts = event.state, event.reason, event.time.timestamp()
            cam.lost_with_node = False

    def _node_status(self, node: str, body: dict[str, Any], topic: str, payload: bytes, retained: bool) -> _Receipt:
        if not topics.accepts(body.get("schema"), topics.NODE_SCHEMA):
            return self._reject("schema", topic, payload, str(body.get("schema"))[:60], node)
        status = body.get("state")
        if body.get("node") != node or status not in ("online", "offline"):
            return self._reject("mismatch", topic, payload, f"node {body.get('node')!r} state {status!r}", node)
        checked = parse_node_status(body, self.limits)
        if isinstance(checked, str):
            return self._reject("invalid", topic, payload, checked, node)
        with self._lock:
            capped = self.caps.admit(self.nodes, node, None)
        if capped:
            return self._reject("cap", topic, payload, capped, node)
        reason = checked.reason
        state = self._node(node)
        if checked.outbox is not None:
            state.outbox = dict(checked.outbox)
            if self.on_outbox is not None:
                try:
                    self.on_outbox(node, OutboxReport.of(state.outbox))
                except Exception:
                    log.exception("outbox report of node %s not handled", node)
        for camera in checked.cameras or []:
            state.cameras.setdefault(camera, CameraState())
        self.accepted += 1
        if status == "online":
            reported = body.get("camera_states")
            self._node_online(node, state, reported if isinstance(reported, dict) else {})
        elif body.get("will") is True or "last will" in (reason or ""):
            # a last will: the node, or the broker being stopped? It counts once this worker has stayed
            # connected a while after it (a will found at (re)connection: once the nodes had time to return)
            now = time.time()
            due = now + self.confirm_s
            if retained:
                due = max(due, self._connected_at + self.grace_s)
            with self._lock:
                self._wills[node] = due
            state.will_since, state.reason = state.will_since or now, reason
        else:
            self._node_offline(node, reason)  # the node said so itself (stopped)
        return _Receipt(0)

    def _confirm_wills(self) -> None:
        """Last wills that have held long enough while this worker stayed connected: the nodes are offline."""
        if not self.connected.is_set():
            return
        now = time.time()
        with self._lock:
            due = [node for node, at in self._wills.items() if at <= now]
            for node in due:
                del self._wills[node]
        for node in due:
            state = self._node(node)
            self._node_offline(node, state.reason)

    def _node_offline(self, node: str, reason: str | None) -> None:
        state = self._node(node)
        with self._lock:
            self._wills.pop(node, None)
        previous = state.state
        state.state, state.reason, state.will_since = "offline", reason, None
        if previous != "offline":
            state.since = time.time()
        self._tell_node(node, "offline", reason)
        if previous != "offline":
            log.warning("node %s offline (%s)", node, reason)
            self._cameras_lost(node, reason or "node offline")

    def _node_online(self, node: str, state: NodeState, reported: dict[str, Any]) -> None:
        """The node is back (or still there): its will no longer holds, and the cameras its will marked lost
        get back the state the node reports."""
        with self._lock:
            self._wills.pop(node, None)
        now = time.time()
        previous = state.state
        state.state, state.last_seen, state.reason, state.will_since = "online", now, None, None
        if previous != "online":
            state.since = now
            if previous == "offline":
                log.info("node %s online again", node)
        self._tell_node(node, "online", None)
        for camera, cam in list(state.cameras.items()):
            real = reported.get(camera)
            if not cam.lost_with_node or real not in _SOURCE_STATES:
                continue
            cam.state, cam.lost_with_node, cam.state_ts = str(real), False, now
            self._camera_status(node, camera, str(real), f"node {node} back online", now)

    def _tell_node(self, node: str, status: str, reason: str | None) -> None:
        if self.on_node is not None:
            try:
                self.on_node(node, status, reason)
            except Exception:
                log.exception("state of node %s not handled", node)

    def _cameras_lost(self, node: str, reason: str) -> None:
        """Every camera of a node gone offline turns ``lost`` (connection lost or stopped cleanly: nobody
        watches it now), except those whose own source had ended or failed before (a file played to its end);
        the node's return puts back the state it reports."""
        from maskwatch.core.events import ENDED_BY_STOP

        now = time.time()
        for camera, cam in list(self._node(node).cameras.items()):
            if cam.state == "failed" or (cam.state == "ended" and cam.reason != ENDED_BY_STOP):
                continue
            cam.state, cam.lost_with_node, cam.state_ts = "lost", True, now
            self._camera_status(node, camera, "lost", f"node {node} offline: {reason}", now)

    def _camera_status(self, node: str, camera: str, status: str, reason: str, at: float) -> None:
        """A ``source_status`` event of the control room's own making (the camera's state as far as it knows),
        dated ``at``: the time its state in memory now carries."""
        from maskwatch.core.events import SCHEMA, parse_event

        body = {"schema": SCHEMA, "type": "source_status", "source": qualified(node, camera), "state": status,
                "kind": "stream", "reason": reason, "time": iso(at)}  # fmt: skip
        try:
            self.handle_event(parse_event(body))
        except Exception:
            log.exception("status of %s:%s not handled", node, camera)

    def state(self) -> FleetState:
        """Nodes (state, last seen, cameras with FPS, lag, compliance) and ingest counters, copied."""
        with self._lock:
            nodes = copy.deepcopy(self.nodes)
            pending = len(self._pending)
        return FleetState(
            nodes=nodes,
            accepted=self.accepted,
            rejected=dict(self.rejected),
            connected=self.connected.is_set(),
            last_error=None if self.connected.is_set() else self.last_error,
            pending_acks=pending,
            broker_lost_since=self.broker_lost_since,
            dead_letters=self.dead_letters,
            acks_sent=self.acks_sent,
        )


def parse_ingest_url(url: str) -> tuple[BrokerURL, bool]:
    """``mqtt://USER:PASS@HOST:PORT[?shared=1]`` -> (broker, whether to use the shared subscription)."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    unknown = set(query) - {"shared"}
    if unknown:
        raise ValueError(f"--mqtt: unknown option(s) {', '.join(sorted(unknown))} (known: shared=1)")
    shared = query.get("shared", ["0"])[-1].lower() in ("1", "true", "yes")
    return BrokerURL.parse(url.split("?", 1)[0]), shared
