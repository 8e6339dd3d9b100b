"""MQTT connection of an edge node: drains the :class:`~maskwatch.fleet.outbox.Outbox` to the broker in order
(QoS 1) and deletes a message only when the **control room** says it has stored it (``maskwatch/{node}/ack``,
:data:`~maskwatch.fleet.topics.ACK_SCHEMA`): end to end, never on the broker's PUBACK alone, so a broker that
crashes while holding messages (Mosquitto writes its queue to disk only every ``autosave_interval``) loses
nothing.

Two windows bound what is out: ``window`` messages published and not yet acknowledged by the broker (PUBACK),
and ``ack_window`` messages published and not yet acknowledged by the control room; the rest waits on the
node's disk, not in the broker's memory. A message the control room has not acknowledged is published again
(same event id: the control room stores it once):

- at every new connection, when the broker had acknowledged it (a restarted broker may have lost it; one it
  had not acknowledged paho sends again itself);
- when it has waited ``ack_timeout`` seconds since it was last sent, then twice as long, up to
  ``ack_timeout_max`` (:class:`~maskwatch.core.backoff.Backoff`): a control room that is down is not flooded,
  and one that lost a message (a shared subscription without a member drops it) gets it again;
- when acknowledgements come back after a silence (the control room is back), everything then waiting is
  due ``ack_timeout`` later.

A restarted process publishes everything still on disk again, in order.

paho reconnects by itself; the wait before each try comes from :class:`~maskwatch.core.backoff.Backoff`
(:class:`ReconnectSchedule`: doubling from 1 s to 5 s, jittered, so nodes cut off together do not come back
in lockstep).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from maskwatch.core.backoff import Backoff
from maskwatch.fleet.outbox import Message, Outbox
from maskwatch.fleet.topics import BrokerURL, parse_ack

__all__ = ["LOGIN_REFUSED", "Publisher", "ReconnectSchedule", "TLSOptions", "make_client"]

log = logging.getLogger("maskwatch.fleet")

#: CONNACK refusals about the credentials (paho's names, MQTT 3.1.1 codes 4 and 5)
LOGIN_REFUSED = ("Bad user name or password", "Not authorized")
REFUSAL_REMINDER_S = 600.0  # a refusal that goes on is logged again this often


@dataclass(frozen=True)
class TLSOptions:
    """TLS to the broker: CA bundle, optional client certificate and key, and (tests only) no hostname check."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False


def make_client(
    broker: BrokerURL,
    client_id: str,
    *,
    clean_session: bool = True,
    tls: TLSOptions | None = None,
    will: tuple[str, bytes, bool] | None = None,
    window: int = 100,
) -> Any:
    """A paho-mqtt 2.x client for ``broker`` (MQTT 3.1.1), credentials, TLS and last will set, not connected."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls or (tls and (tls.ca_certs or tls.certfile)):
        tls = tls or TLSOptions()
        client.tls_set(ca_certs=tls.ca_certs, certfile=tls.certfile, keyfile=tls.keyfile)
        client.tls_insecure_set(tls.insecure)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=will[2])
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=5)  # until a ReconnectSchedule arms it
    return client


class ReconnectSchedule:
    """The waits of paho's own reconnection loop, drawn from a :class:`Backoff`: :meth:`arm` on every lost
    or failed connection (paho waits exactly the next backoff before its next try), :meth:`reset` on a
    successful one."""

    def __init__(self, client: Any, backoff: Backoff) -> None:
        self.client = client
        self.backoff = backoff

    def arm(self) -> None:
        wait = self.backoff.next()
        # paho waits min_delay after this call (it doubles from there only without a new call); seconds
        # may be fractional (its annotations say int)
        self.client.reconnect_delay_set(min_delay=wait, max_delay=wait)

    def reset(self) -> None:
        self.backoff.reset()


class _Sent:
    """A message published and not yet acknowledged by the control room."""

    __slots__ = ("attempts", "deadline", "mid", "pubacked", "seq")

    def __init__(self, seq: int, mid: int, deadline: float) -> None:
        self.seq = seq
        self.mid = mid
        self.pubacked = False
        self.deadline = deadline
        self.attempts = 0


class Publisher:
    """Publishes an outbox through one MQTT connection.

    Args:
        broker: where to connect.
        outbox: the messages to send (deleted here once acknowledged).
        client_id: MQTT client id (stable per node).
        will: ``(topic, payload, retain)`` sent by the broker if this connection dies.
        on_connect: called (from paho's thread) after every successful connection, with the client.
        on_message: ``(topic, payload)`` for messages on subscribed topics (commands).
        window: messages published and not yet acknowledged by the broker, at most.
        ack_topic: where the control room acknowledges stored events (``maskwatch/{node}/ack``); None:
            messages are deleted on the broker's PUBACK (the behaviour before end-to-end acknowledgement,
            for a control room that does not send them).
        ack_window: messages published and not yet acknowledged by the control room, at most.
        ack_timeout, ack_timeout_max: the first and the longest wait before a message the control room has
            not acknowledged is sent again.
    """

    def __init__(
        self,
        broker: BrokerURL,
        outbox: Outbox,
        *,
        client_id: str,
        tls: TLSOptions | None = None,
        will: tuple[str, bytes, bool] | None = None,
        on_connect: Callable[[Any], None] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        window: int = 100,
        ack_topic: str | None = None,
        ack_window: int = 1000,
        ack_timeout: float = 30.0,
        ack_timeout_max: float = 300.0,
    ) -> None:
        self.broker = broker
        self.outbox = outbox
        self.window = window
        self.ack_topic = ack_topic
        self.ack_window = max(1, ack_window)
        self.ack_timeout = ack_timeout
        self._on_connect_cb = on_connect
        self._on_message_cb = on_message
        self.client = make_client(broker, client_id, tls=tls, will=will, window=window)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect_fail = self._on_connect_fail
        self._reconnect = ReconnectSchedule(self.client, Backoff(1.0, 5.0, jitter=0.2))
        self._resend = Backoff(ack_timeout, max(ack_timeout, ack_timeout_max), jitter=0.2)  # waits per attempt
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pubacks: collections.deque[int] = collections.deque()  # mids from paho's thread
        self._acks: collections.deque[list[str]] = collections.deque()  # control-room acks from paho's thread
        self._inflight: dict[int, tuple[int, str | None]] = {}  # mid -> (outbox seq, event id) until PUBACK
        self._outstanding: dict[str, _Sent] = {}  # event id -> sent, until the control room acknowledges it
        self._direct: set[int] = set()  # mids of messages published outside the outbox (status, results)
        self._lock = threading.Lock()  # a publish and the record of its mid happen together
        self._last = 0  # highest seq handed to paho
        self._resend_all = False  # set on a new connection: what the broker had acknowledged is sent again
        self._last_ack = time.monotonic()
        self._next_due = 0.0  # no message's resend is due before this
        self._ack_sub: int | None = None  # mid of the acknowledgement subscription
        self._thread: threading.Thread | None = None
        self.published = 0
        self.republished = 0
        self.broker_acks = 0
        self.acknowledged = 0
        self.connections = 0
        self.last_error: str | None = None
        self.refused: str | None = None  # why the broker refused the last connection (bad credentials...)
        self.login_refused = False  # the last refusal was about the credentials (retrying cannot help)
        self._refusal_logged = 0.0

    # -- paho callbacks (network thread) -----------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            refused = f"connection refused: {reason_code}"
            self.login_refused = str(reason_code) in LOGIN_REFUSED
            now = time.monotonic()
            if refused != self.refused or now - self._refusal_logged > REFUSAL_REMINDER_S:
                self._refusal_logged = now
                hint = (
                    " (check the broker URL's user and password, or MASKWATCH_MQTT_PASSWORD)"
                    if self.login_refused
                    else ""
                )
                log.error(
                    "broker %s refused this node's login: %s%s; retrying, the events wait in the outbox (%d)",
                    self.broker,
                    reason_code,
                    hint,
                    len(self.outbox),
                )
            self.last_error = self.refused = refused
            return
        self._reconnect.reset()
        self.refused = None
        self.login_refused = False
        self.connections += 1
        if self.ack_topic is not None:
            _, self._ack_sub = client.subscribe(self.ack_topic, qos=1)
        self._resend_all = True
        self.connected.set()
        self._wake.set()
        log.info("connected to %s", self.broker)
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb(client)
            except Exception:
                log.exception("on_connect callback failed")

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, reason_codes: Any, _properties: Any) -> None:
        if mid == self._ack_sub and any(getattr(code, "is_failure", False) for code in reason_codes):
            self.last_error = f"the broker refused the subscription to {self.ack_topic}"
            log.error(
                "the broker refused this node's subscription to %s: the control room's acknowledgements cannot "
                "arrive, so nothing leaves the outbox (the ACL must let the node read it: "
                "'pattern read maskwatch/%%u/ack', docs/deploy.md)",
                self.ack_topic,
            )

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("disconnected from %s (%s); messages wait in the outbox", self.broker, reason_code)
        self.connected.clear()
        self._reconnect.arm()

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._reconnect.arm()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason_code: Any, _properties: Any) -> None:
        self._pubacks.append(mid)
        self._wake.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        if self.ack_topic is not None and message.topic == self.ack_topic:
            ids = parse_ack(message.payload)
            if ids is None:
                log.warning("unreadable acknowledgement on %s ignored", message.topic)
            elif ids:
                self._acks.append(ids)
                self._wake.set()
            return
        if self._on_message_cb is not None:
            try:
                self._on_message_cb(message.topic, message.payload)
            except Exception:
                log.exception("message on %s not handled", message.topic)

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start draining."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="maskwatch-publisher", daemon=True)
        self._thread.start()

    def stop(self, *, final: tuple[str, bytes, bool] | None = None, timeout: float = 2.0) -> None:
        """Stop draining; publish ``final`` (e.g. the node's offline status) if connected, then disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if final is not None and self.connected.is_set():
            info = self._publish_recorded(final[0], final[1], retain=final[2])
            with contextlib.suppress(Exception):
                info.wait_for_publish(timeout)
        self._settle()
        self.client.disconnect()
        self.client.loop_stop()

    def wake(self) -> None:
        """A new message is in the outbox."""
        self._wake.set()

    def drained(self) -> bool:
        """Nothing waits: the outbox is empty (every message acknowledged) and nothing is in flight."""
        return len(self.outbox) == 0 and not self._inflight and not self._pubacks and not self._acks

    def wait_drained(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.drained():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @property
    def outstanding(self) -> int:
        """Messages published and not yet acknowledged by the control room."""
        return len(self._outstanding)

    def publish_direct(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Publish outside the outbox (status, command results): only worth sending while connected."""
        self._publish_recorded(topic, payload, retain=retain)

    def _publish_recorded(self, topic: str, payload: bytes | str, *, retain: bool) -> Any:
        with self._lock:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            self._direct.add(info.mid)
        return info

    # -- the drain loop ----------------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Apply the broker's PUBACKs and the control room's acknowledgements received so far. Every mid in
        ``_pubacks`` was recorded before (under the lock), so a PUBACK is never matched to the wrong message,
        even after mids wrap around."""
        seqs = []
        with self._lock:
            while self._pubacks:
                mid = self._pubacks.popleft()
                sent = self._inflight.pop(mid, None)
                if sent is None:
                    self._direct.discard(mid)
                    continue
                self.broker_acks += 1
                seq, event_id = sent
                if event_id is None or self.ack_topic is None:
                    seqs.append(seq)  # nothing acknowledges it end to end: the broker's PUBACK is all there is
                elif (waiting := self._outstanding.get(event_id)) is not None and waiting.mid == mid:
                    waiting.pubacked = True
            ids: list[str] = []
            while self._acks:
                ids += self._acks.popleft()
        if seqs:
            self.acknowledged += self.outbox.ack(*seqs)
        if ids:
            self.acknowledged += self.outbox.ack_ids(ids)
            now = time.monotonic()
            with self._lock:
                for event_id in ids:
                    self._outstanding.pop(event_id, None)
                if now - self._last_ack > self.ack_timeout:  # the control room is back after a silence
                    for waiting in self._outstanding.values():
                        waiting.attempts = 0
                        waiting.deadline = min(waiting.deadline, now + self.ack_timeout)
                    self._next_due = min(self._next_due, now + self.ack_timeout)
                self._last_ack = now

    def _publish(self, message: Message, sent: _Sent | None) -> None:
        """Hand one outbox message to paho (under the lock) and record it; ``sent``: its earlier sending."""
        with self._lock:
            info = self.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            # rc != 0 (link just dropped): paho keeps it queued and sends it after reconnecting
            self._inflight[info.mid] = (message.seq, message.event_id)
            if self.ack_topic is None or message.event_id is None:
                return
            now = time.monotonic()
            if sent is None:
                sent = self._outstanding[message.event_id] = _Sent(message.seq, info.mid, 0.0)
            else:
                sent.attempts += 1
                sent.mid, sent.pubacked = info.mid, False
            self._resend.attempts = sent.attempts
            sent.deadline = now + self._resend.next()
            self._next_due = min(self._next_due, sent.deadline)

    def _resend_due(self) -> None:
        """Publish again what the control room has not acknowledged in time (or, after a new connection,
        everything the broker had acknowledged)."""
        now = time.monotonic()
        if not self._resend_all and now < self._next_due:
            return  # nothing can be due yet (the scan is skipped)
        with self._lock:
            everything, self._resend_all = self._resend_all, False
            due = {
                sent.seq: sent
                for sent in self._outstanding.values()
                if sent.pubacked and (everything or sent.deadline <= now)
            }
            self._next_due = min((s.deadline for s in self._outstanding.values() if s.seq not in due), default=now + 1)
        if not due:
            return
        found = self.outbox.by_seq(due)
        gone = set(due) - {m.seq for m in found}
        with self._lock:
            for seq in gone:  # dropped by the budget meanwhile: nothing to wait for
                event_id = next((k for k, v in self._outstanding.items() if v.seq == seq), None)
                if event_id is not None:
                    del self._outstanding[event_id]
        for message in found:
            if message.event_id is not None and self._outstanding.get(message.event_id) is due[message.seq]:
                self._publish(message, due[message.seq])
                self.republished += 1
        log.info("sent %d message(s) again that the control room had not acknowledged", len(found))

    def _run(self) -> None:
        checked = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._settle()
                if not self.connected.is_set():
                    continue
                if self.ack_topic is not None and (self._resend_all or time.monotonic() - checked > 0.5):
                    checked = time.monotonic()
                    self._resend_due()
                room = min(self.window - len(self._inflight), self.ack_window - len(self._outstanding))
                if room <= 0:
                    continue
                batch = self.outbox.take(self._last, room)  # marked sent: never dropped by the budget from now on
                for message in batch:
                    self._publish(message, None)
                    self._last = message.seq
                    self.published += 1
                if len(batch) == room:
                    self._wake.set()  # more may wait
            except Exception as exc:  # a disk error must not kill the loop
                self.last_error = str(exc)
                log.exception("publishing failed")
                time.sleep(0.5)
