"""The control room's MQTT ingest: subscribes to every node's topics, validates each message and feeds the
valid engine events to the control room's event pipeline (``EventPipeline.handle_event`` of the service:
storage idempotent by event id, alerts, live dashboard).

One worker (default) uses a plain subscription in a persistent session: the broker queues for it while it
is down or restarting, so nothing is lost. Several workers use a shared subscription
(``$share/maskwatch/...``; ``mqtt://...?shared=1``) and split the load; measured on Mosquitto 2.0, a shared
subscription is **not** queued while no member is connected (and is not restored after a broker restart
until a member subscribes again), so with shared workers keep at least one of them running.

Validation, in order; a failure is counted under its reason and never stops ingest:
``oversized`` (payload over ``max_bytes``), ``topic`` (not a maskwatch topic), ``json`` (not JSON / truncated),
``schema`` (unknown ``schema``), ``invalid`` (fails :func:`maskwatch.stream.parse_event`, or a node status
fails its schema), ``mismatch`` (the event's ``source`` is not the topic's camera, or its type does not belong
on that channel), ``cap`` (a node or camera past :class:`~maskwatch.fleet.validation.FleetCaps`), ``remote``
(times out of the accepted window, negative or inconsistent counts: :mod:`maskwatch.fleet.validation`). A
remote event's snapshot reference is dropped (it would name a file of the control room).
Unauthorised publishes never get here: the broker refuses them (password file + ACL).

Events are renamed ``{node}:{camera}`` (camera names are only unique within a node). A message is
acknowledged to the broker (manual PUBACK) only once the service has written it, and the session is
persistent (``clean_session=False``): a control room killed at any moment gets again, on restart, what it
had not stored. A full ingest buffer slows ingest down instead of dropping: the message callback waits for
room (the service hands it ``handle_event(..., block=True)``), so paho stops reading, unacknowledged messages stay with
the broker (its in-flight window; a wait past 1.5 x keepalive makes it drop the connection and send them
again on reconnection), and what was refused while stopping is never acknowledged (sent again).
Acknowledgements pending when the connection drops are forgotten: the broker sends those messages again
under the same packet ids, and an old id acknowledged on the new connection could release a newer message.

Fleet state (:meth:`FleetIngest.state`, a :class:`FleetState`): nodes online/offline with last seen and their
cameras' FPS, lag and compliance from the latest stats bucket; written to ``state_file`` every ``state_every``
seconds when one is given. A node's state goes to ``on_node`` (the alert engine's
``node_offline`` rules), and its last will (``offline``) also becomes a ``source_status`` ``lost`` event for
each of its cameras, so ``camera_offline`` rules fire for them.

The fleet never imports the service: it is handed three typed ports (``handle_event``, ``progress``,
``on_node``); the service wires them (ARCHITECTURE.md, rule 4).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from maskwatch.core.backoff import Backoff
from maskwatch.core.names import qualified
from maskwatch.fleet import topics
from maskwatch.fleet.publisher import ReconnectSchedule, TLSOptions, make_client
from maskwatch.fleet.topics import BrokerURL
from maskwatch.fleet.validation import FleetCaps, RemoteLimits, check_event, parse_node_status, strip_remote

__all__ = [
    "REJECT_REASONS",
    "CameraState",
    "EventSink",
    "FleetIngest",
    "FleetState",
    "NodeObserver",
    "NodeState",
    "WriteProgress",
    "parse_ingest_url",
]

log = logging.getLogger("maskwatch.fleet")

REJECT_REASONS = ("oversized", "topic", "json", "schema", "invalid", "mismatch", "cap", "remote")
_STORED = ("track_ended", "stats")

NodeStatus = Literal["online", "offline", "unknown"]  # unknown: seen through its events, no status yet


# -- the ports: what ingest needs from the control room it feeds ---------------------------------------------

#: takes one typed engine event; False means an event to store was not queued (never acknowledge it)
EventSink = Callable[[Any], bool | None]

#: ``(node, "online" | "offline", reason)`` on every valid node status (the alert engine's node rules)
NodeObserver = Callable[[str, str, str | None], None]


class WriteProgress(Protocol):
    """The control room's writer (a FIFO): events it received and dropped so far, and how many still wait.
    A stored event's message is acknowledged once everything queued before it has been written."""

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


@dataclass
class NodeState:
    """A node as this worker last saw it: its retained status (last will) and its cameras."""

    state: NodeStatus = "unknown"
    last_seen: float | None = None
    since: float | None = None  # when it entered ``state``
    reason: str | None = None  # why it went offline
    outbox: dict[str, int] | None = None  # the node's own counters (dropped_stats, dropped_events)
    cameras: dict[str, CameraState] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetState:
    """Nodes and the ingest counters at one moment (copies: safe to read while ingest goes on)."""

    nodes: dict[str, NodeState]
    accepted: int
    rejected: dict[str, int]
    connected: bool
    pending_acks: int
    last_error: str | None = None  # why the broker refused or dropped the connection, while not connected

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Pending(NamedTuple):
    """A message waiting for its acknowledgement: sent once the writer has written up to ``mark``."""

    session: int  # the connection it arrived on
    mid: int
    qos: int
    mark: int


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
        state_file: where to write :meth:`state` (JSON) every ``state_every`` seconds while running.
        limits: caps on nodes and cameras, and the time window of remote events
            (:class:`~maskwatch.fleet.validation.RemoteLimits`).
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
        state_file: Path | None = None,
        state_every: float = 2.0,
        limits: RemoteLimits | None = None,
    ) -> None:
        self.handle_event = handle_event
        self.limits = limits or RemoteLimits()
        self.caps = FleetCaps(self.limits)
        self.on_node = on_node
        self.broker = broker
        self.client_id = client_id
        self.max_bytes = max_bytes
        self.shared = shared
        self.progress = progress
        self.state_file = state_file
        self.state_every = state_every
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
        self._session = 0  # counts connections: acknowledgements never cross one
        self._closing = threading.Event()  # stop(): new messages are left unacknowledged for the next start
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.nodes: dict[str, NodeState] = {}
        self.last_error: str | None = None

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and acknowledge as writes complete."""
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
            self.last_error = f"connection refused: {reason_code}"
            log.error("broker %s refused the ingest connection: %s", self.broker, reason_code)
            return
        self._reconnect.reset()
        with self._lock:
            self._session += 1
            self._pending.clear()
        self.connected.set()
        client.subscribe([(t, 1) for t in topics.ingest_subscriptions(self.shared)])
        log.info("fleet ingest connected to %s", self.broker)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._reconnect.arm()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("fleet ingest disconnected from %s (%s)", self.broker, reason_code)
        with self._lock:
            self._session += 1  # what is pending now is sent again by the broker: never acknowledge it
            self._pending.clear()
        self.connected.clear()
        self._reconnect.arm()

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        if self._closing.is_set():
            return  # not acknowledged: the broker sends it again to the next start
        session = self._session
        mark: int | None = 0
        try:
            mark = self.receive(message.topic, message.payload)
        except Exception:
            log.exception("message on %s not handled", message.topic)
        if message.qos == 0 or mark is None:
            return
        with self._lock:
            if session != self._session:
                return  # the connection dropped meanwhile: the broker sends it again
            if mark <= 0 and not self._pending:
                client.ack(message.mid, message.qos)
            else:
                self._pending.append(_Pending(session, message.mid, message.qos, mark))

    def _ack_loop(self) -> None:
        while not self._stop.wait(0.02):
            if not self._pending:
                continue
            written = self._written()
            with self._lock:  # (ack only queues a packet: no paho lock is taken while holding ours)
                while self._pending and self._pending[0].mark <= written:
                    item = self._pending.popleft()
                    if item.session == self._session:
                        self.client.ack(item.mid, item.qos)

    # -- validation ------------------------------------------------------------------------------------------

    def _reject(self, reason: str, topic: str, detail: str = "") -> int:
        self.rejected[reason] += 1
        log.debug("rejected message on %s: %s %s", topic, reason, detail)
        return 0

    def receive(self, topic: str, payload: bytes) -> int | None:
        """Validate and hand on one message. Returns the service's write mark to wait for before
        acknowledging (0: nothing to wait for; None: not taken, never acknowledge)."""
        if len(payload) > self.max_bytes:
            return self._reject("oversized", topic, f"{len(payload)} bytes")
        parsed = topics.parse_topic(topic)
        if parsed is None:
            return self._reject("topic", topic)
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._reject("json", topic, str(exc))
        if not isinstance(body, dict):
            return self._reject("json", topic, "not an object")
        if parsed.camera is None:
            return self._node_status(parsed.node, body, topic)
        from maskwatch.core.events import SCHEMA, parse_event

        if body.get("schema") != SCHEMA:
            return self._reject("schema", topic, str(body.get("schema"))[:60])
        try:
            event = parse_event(body)
        except Exception as exc:
            return self._reject("invalid", topic, str(exc)[:200])
        if event.source != parsed.camera or topics.CHANNEL_OF.get(event.type) != parsed.channel:
            return self._reject("mismatch", topic, f"{event.type} from {event.source!r}")
        with self._lock:
            known = self.nodes.get(parsed.node)
            capped = self.caps.admit(self.nodes, parsed.node, parsed.camera, set(known.cameras) if known else set())
        if capped:
            return self._reject("cap", topic, capped)
        refused = check_event(event, time.time(), self.limits)
        if refused:
            return self._reject("remote", topic, refused)
        event = strip_remote(event)
        renamed = event.model_copy(update={"source": qualified(parsed.node, parsed.camera)})
        self._observe(parsed.node, parsed.camera, event)
        if self.handle_event(renamed) is False:
            return None  # not queued (stopping): the broker keeps it
        self.accepted += 1
        if event.type in _STORED and self.progress is not None:
            # this event's place in the writer's FIFO (conservative: everything queued so far)
            return int(self.progress.received) + int(self.progress.dropped)
        return 0

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
        state = self._node(node)
        now = time.time()
        state.last_seen = now
        if state.state != "online":
            state.state, state.since = "online", now
        cam = state.cameras.setdefault(camera, CameraState())
        cam.last_seen = now
        if event.type == "stats":
            cam.fps, cam.lag_p50, cam.lag_p95 = event.analysed_fps, event.lag.p50, event.lag.p95
            cam.compliance, cam.people, cam.frames_dropped = event.compliance, event.n_people, event.frames_dropped
        elif event.type == "source_status":
            cam.state, cam.reason = event.state, event.reason

    def _node_status(self, node: str, body: dict[str, Any], topic: str) -> int:
        if body.get("schema") != topics.NODE_SCHEMA:
            return self._reject("schema", topic, str(body.get("schema"))[:60])
        if body.get("node") != node or body.get("state") not in ("online", "offline"):
            return self._reject("mismatch", topic, f"node {body.get('node')!r} state {body.get('state')!r}")
        status = parse_node_status(body, self.limits)
        if isinstance(status, str):
            return self._reject("invalid", topic, status)
        with self._lock:
            capped = self.caps.admit(self.nodes, node, None)
        if capped:
            return self._reject("cap", topic, capped)
        reason = status.reason
        state = self._node(node)
        now = time.time()
        previous = state.state
        state.state = status.state
        state.last_seen, state.reason = now, reason
        if status.outbox is not None:
            state.outbox = dict(status.outbox)
        if previous != state.state:
            state.since = now
        for camera in status.cameras or []:
            state.cameras.setdefault(camera, CameraState())
        self.accepted += 1
        if self.on_node is not None:
            try:
                self.on_node(node, state.state, reason)
            except Exception:
                log.exception("state of node %s not handled", node)
        if state.state == "offline" and previous != "offline":
            log.warning("node %s offline (%s)", node, reason)
            self._cameras_lost(node, reason or "node offline")
        return 0

    def _cameras_lost(self, node: str, reason: str) -> None:
        """Every camera of a node gone offline turns ``lost`` (connection lost or stopped cleanly: nobody
        watches it now), except those whose own source had ended or failed before (a file played to its end)."""
        from maskwatch.core.events import ENDED_BY_STOP, SourceStatus

        for camera, cam in list(self._node(node).cameras.items()):
            if cam.state == "failed" or (cam.state == "ended" and cam.reason != ENDED_BY_STOP):
                continue
            cam.state, cam.reason = "lost", f"node {node} offline: {reason}"
            try:
                self.handle_event(
                    SourceStatus(
                        source=qualified(node, camera),
                        state="lost",
                        kind="stream",
                        reason=f"node {node} offline: {reason}",
                    )
                )
            except Exception:
                log.exception("offline status of %s:%s not handled", node, camera)

    def state(self) -> FleetState:
        """Nodes (state, last seen, cameras with FPS, lag, compliance) and ingest counters, copied."""
        with self._lock:
            nodes = copy.deepcopy(self.nodes)
        return FleetState(
            nodes=nodes,
            accepted=self.accepted,
            rejected=dict(self.rejected),
            connected=self.connected.is_set(),
            pending_acks=len(self._pending),
            last_error=None if self.connected.is_set() else self.last_error,
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
