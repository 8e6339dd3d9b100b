"""The control room's MQTT ingest: subscribes to every node's topics, validates each message and feeds the
valid engine events to ``Service.handle_event`` (storage idempotent by event id, alerts, live dashboard).

One worker (default) uses a plain subscription in a persistent session: the broker queues for it while it
is down or restarting, so nothing is lost. Several workers use a shared subscription
(``$share/maskwatch/...``; ``mqtt://...?shared=1``) and split the load; measured on Mosquitto 2.0, a shared
subscription is **not** queued while no member is connected (and is not restored after a broker restart
until a member subscribes again), so with shared workers keep at least one of them running.

Validation, in order; a failure is counted under its reason and never stops ingest:
``oversized`` (payload over ``max_bytes``), ``topic`` (not a maskwatch topic), ``json`` (not JSON / truncated),
``schema`` (unknown ``schema``), ``invalid`` (fails :func:`maskwatch.stream.parse_event`), ``mismatch``
(the event's ``source`` is not the topic's camera, or its type does not belong on that channel).
Unauthorised publishes never get here: the broker refuses them (password file + ACL).

Events are renamed ``{node}:{camera}`` (camera names are only unique within a node). A message is
acknowledged to the broker (manual PUBACK) only once the service has written it, and the session is
persistent (``clean_session=False``): a control room killed at any moment gets again, on restart, what it
had not stored. A full ingest buffer slows ingest down instead of dropping: the message callback waits for
room (``Service.handle_event(..., block=True)``), so paho stops reading, unacknowledged messages stay with
the broker (its in-flight window; a wait past 1.5 x keepalive makes it drop the connection and send them
again on reconnection), and what was refused while stopping is never acknowledged (sent again).
Acknowledgements pending when the connection drops are forgotten: the broker sends those messages again
under the same packet ids, and an old id acknowledged on the new connection could release a newer message.

Fleet state (:meth:`FleetIngest.fleet`): nodes online/offline with last seen and their cameras' FPS, lag
and compliance from the latest stats bucket. A node's state goes to ``on_node`` (the alert engine's
``node_offline`` rules), and its last will (``offline``) also becomes a ``source_status`` ``lost`` event for
each of its cameras, so ``camera_offline`` rules fire for them.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from maskwatch.fleet import topics
from maskwatch.fleet.publisher import TLSOptions, make_client
from maskwatch.fleet.topics import BrokerURL

__all__ = ["REJECT_REASONS", "FleetIngest"]

log = logging.getLogger("maskwatch.fleet")

REJECT_REASONS = ("oversized", "topic", "json", "schema", "invalid", "mismatch")
_STORED = ("track_ended", "stats")


class _Pending(NamedTuple):
    """A message waiting for its acknowledgement: sent once the ingestor has written up to ``mark``."""

    session: int  # the connection it arrived on
    mid: int
    qos: int
    mark: int


class FleetIngest:
    """Subscriber feeding ``handle_event``.

    Args:
        handle_event: ``Service.handle_event`` (or any callable taking a typed engine event); returning
            False means an event to store was not queued, so its message is not acknowledged (sent again).
        broker: the broker.
        client_id: stable per worker (its persistent session holds what it has not acknowledged).
        ingestor: the service's :class:`~maskwatch.service.storage.ingest.Ingestor` (FIFO): a stored event's
            message is acknowledged only once the ingestor has written it. None: acknowledged as soon as
            ``handle_event`` returns.
        shared: use the shared subscription (``$share/maskwatch/...``) to split the load between workers.
        max_bytes: larger payloads are rejected.
        on_node: ``(node, "online" | "offline", reason)`` on every valid node status (alert rules).
    """

    def __init__(
        self,
        handle_event: Callable[[Any], bool | None],
        broker: BrokerURL,
        *,
        client_id: str = "maskwatch-ingest",
        ingestor: Any = None,
        shared: bool = False,
        max_bytes: int = 256 * 1024,
        tls: TLSOptions | None = None,
        on_node: Callable[[str, str, str | None], None] | None = None,
    ) -> None:
        self.handle_event = handle_event
        self.on_node = on_node
        self.broker = broker
        self.max_bytes = max_bytes
        self.shared = shared
        self.ingestor = ingestor
        self.client = make_client(broker, client_id, clean_session=False, tls=tls, window=1000)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._session = 0  # counts connections: acknowledgements never cross one
        self._closing = threading.Event()  # stop(): new messages are left unacknowledged for the next start
        self._stop = threading.Event()
        self._acker: threading.Thread | None = None
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.last_error: str | None = None

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        self._acker = threading.Thread(target=self._ack_loop, name="maskwatch-mqtt-ack", daemon=True)
        self._acker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking messages, acknowledge what has been written (up to ``timeout``), disconnect."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        if self._acker is not None:
            self._acker.join(2.0)
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread) ------------------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self.last_error = f"connection refused: {reason_code}"
            log.error("broker %s refused the ingest connection: %s", self.broker, reason_code)
            return
        with self._lock:
            self._session += 1
            self._pending.clear()
        self.connected.set()
        client.subscribe([(t, 1) for t in topics.ingest_subscriptions(self.shared)])
        log.info("fleet ingest connected to %s", self.broker)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("fleet ingest disconnected from %s (%s)", self.broker, reason_code)
        with self._lock:
            self._session += 1  # what is pending now is sent again by the broker: never acknowledge it
            self._pending.clear()
        self.connected.clear()

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
        renamed = event.model_copy(update={"source": f"{parsed.node}:{parsed.camera}"})
        self._observe(parsed.node, parsed.camera, event)
        if self.handle_event(renamed) is False:
            return None  # not queued (stopping): the broker keeps it
        self.accepted += 1
        if event.type in _STORED and self.ingestor is not None:
            # this event's place in the ingestor's FIFO (conservative: everything queued so far)
            return int(self.ingestor.received) + int(self.ingestor.dropped)
        return 0

    def _written(self) -> int:
        """How many events the ingestor has finished with, in arrival order (read ``received`` before
        ``backlog``, so a concurrent arrival can only make this smaller)."""
        if self.ingestor is None:
            return 1 << 62
        done = int(self.ingestor.received) + int(self.ingestor.dropped)
        return done - int(self.ingestor.backlog)

    # -- fleet state -------------------------------------------------------------------------------------------

    def _node(self, node: str) -> dict[str, Any]:
        with self._lock:
            return self.nodes.setdefault(node, {"state": "unknown", "last_seen": None, "since": None, "cameras": {}})

    def _observe(self, node: str, camera: str, event: Any) -> None:
        state = self._node(node)
        now = time.time()
        state["last_seen"] = now
        if state["state"] != "online":
            state["state"], state["since"] = "online", now
        cam = state["cameras"].setdefault(camera, {})
        cam["last_seen"] = now
        if event.type == "stats":
            cam.update(
                fps=event.analysed_fps,
                lag_p50=event.lag.p50,
                lag_p95=event.lag.p95,
                compliance=event.compliance,
                people=event.n_people,
                frames_dropped=event.frames_dropped,
            )
        elif event.type == "source_status":
            cam["state"] = event.state

    def _node_status(self, node: str, body: dict[str, Any], topic: str) -> int:
        if body.get("schema") != topics.NODE_SCHEMA:
            return self._reject("schema", topic, str(body.get("schema"))[:60])
        if body.get("node") != node or body.get("state") not in ("online", "offline"):
            return self._reject("mismatch", topic, f"node {body.get('node')!r} state {body.get('state')!r}")
        state = self._node(node)
        now = time.time()
        previous = state["state"]
        state.update(state=body["state"], last_seen=now, reason=body.get("reason"))
        if isinstance(body.get("outbox"), dict):
            state["outbox"] = body["outbox"]
        if previous != body["state"]:
            state["since"] = now
        for camera in body.get("cameras") or []:
            if isinstance(camera, str):
                state["cameras"].setdefault(camera, {})
        self.accepted += 1
        if self.on_node is not None:
            try:
                self.on_node(node, body["state"], body.get("reason"))
            except Exception:
                log.exception("state of node %s not handled", node)
        if body["state"] == "offline" and previous != "offline":
            log.warning("node %s offline (%s)", node, body.get("reason"))
            self._cameras_lost(node, str(body.get("reason") or "node offline"))
        return 0

    def _cameras_lost(self, node: str, reason: str) -> None:
        from maskwatch.core.events import SourceStatus

        for camera, cam in list(self._node(node)["cameras"].items()):
            if cam.get("state") in ("ended", "failed"):
                continue
            cam["state"] = "lost"
            try:
                self.handle_event(
                    SourceStatus(
                        source=f"{node}:{camera}", state="lost", kind="stream", reason=f"node {node} offline: {reason}"
                    )
                )
            except Exception:
                log.exception("offline status of %s:%s not handled", node, camera)

    def fleet(self) -> dict[str, Any]:
        """Nodes (state, last seen, cameras with FPS, lag, compliance) and ingest counters."""
        with self._lock:
            nodes = json.loads(json.dumps(self.nodes, default=str))
        return {
            "nodes": nodes,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "connected": self.connected.is_set(),
            "pending_acks": len(self._pending),
        }


def parse_ingest_url(url: str) -> tuple[BrokerURL, bool]:
    """``mqtt://USER:PASS@HOST:PORT[?shared=1]`` -> (broker, whether to use the shared subscription)."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    unknown = set(query) - {"shared"}
    if unknown:
        raise ValueError(f"--mqtt: unknown option(s) {', '.join(sorted(unknown))} (known: shared=1)")
    shared = query.get("shared", ["0"])[-1].lower() in ("1", "true", "yes")
    return BrokerURL.parse(url.split("?", 1)[0]), shared


def attach(
    service: Any, url: str, *, client_id: str | None = None, tls: TLSOptions | None = None, state_every: float = 2.0
) -> threading.Thread:
    """Run MQTT ingest inside a :class:`~maskwatch.service.core.Service` (``maskwatch serve --mqtt URL``;
    ``URL?shared=1``: a worker of several on the shared subscription): starts once the service has started,
    stops when it stops, and writes the fleet state to ``{data_dir}/fleet.json`` every ``state_every``
    seconds. Returns the thread."""
    import os
    import socket

    from maskwatch.service.alerts import NODE_OFFLINE_RULE

    broker, shared = parse_ingest_url(url)
    client_id = client_id or f"maskwatch-ingest-{socket.gethostname()}"

    def run() -> None:
        while not service.started and not service.stopping.is_set():
            time.sleep(0.05)
        if service.stopping.is_set():
            return
        ingest = FleetIngest(
            lambda event: service.handle_event(event, block=True),  # a full buffer slows ingest, never drops
            broker,
            client_id=client_id,
            ingestor=service.ingestor,
            tls=tls,
            shared=shared,
            on_node=service.alerts.observe_node,
        )
        service.alerts.ensure_rule(NODE_OFFLINE_RULE)
        service.fleet = ingest
        ingest.start()
        log.info("fleet ingest: %s as %s", broker, client_id)
        path = service.settings.data_dir / "fleet.json"
        while not service.stopping.wait(state_every):
            try:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(ingest.fleet(), indent=1))
                os.replace(tmp, path)
            except OSError:
                log.exception("fleet state not written")
        ingest.stop(timeout=2.0)

    thread = threading.Thread(target=run, name="maskwatch-fleet", daemon=True)
    thread.start()
    return thread
