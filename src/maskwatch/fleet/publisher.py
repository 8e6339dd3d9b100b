"""MQTT connection of an edge node: drains the :class:`~maskwatch.fleet.outbox.Outbox` to the broker in order
(QoS 1, a bounded window of unacknowledged messages) and deletes each message on its PUBACK.

paho-mqtt keeps unacknowledged messages across reconnections and sends them again when the link returns;
the outbox covers what paho cannot: a restarted process (everything still on disk is published again, in
order; the control room stores each event once).

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
from maskwatch.fleet.outbox import Outbox
from maskwatch.fleet.topics import BrokerURL

__all__ = ["Publisher", "ReconnectSchedule", "TLSOptions", "make_client"]

log = logging.getLogger("maskwatch.fleet")


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


class Publisher:
    """Publishes an outbox through one MQTT connection.

    Args:
        broker: where to connect.
        outbox: the messages to send (deleted here on PUBACK).
        client_id: MQTT client id (stable per node).
        will: ``(topic, payload, retain)`` sent by the broker if this connection dies.
        on_connect: called (from paho's thread) after every successful connection, with the client.
        on_message: ``(topic, payload)`` for messages on subscribed topics (commands).
        window: messages published and not yet acknowledged, at most.
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
    ) -> None:
        self.broker = broker
        self.outbox = outbox
        self.window = window
        self._on_connect_cb = on_connect
        self._on_message_cb = on_message
        self.client = make_client(broker, client_id, tls=tls, will=will, window=window)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail
        self._reconnect = ReconnectSchedule(self.client, Backoff(1.0, 5.0, jitter=0.2))
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acked: collections.deque[int] = collections.deque()  # mids from paho's thread
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._direct: set[int] = set()  # mids of messages published outside the outbox (status, results)
        self._lock = threading.Lock()  # a publish and the record of its mid happen together
        self._last = 0  # highest seq handed to paho
        self._thread: threading.Thread | None = None
        self.published = 0
        self.acknowledged = 0
        self.connections = 0
        self.last_error: str | None = None

    # -- paho callbacks (network thread) -----------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self.last_error = f"connection refused: {reason_code}"
            log.error("broker %s refused the connection: %s", self.broker, reason_code)
            return
        self._reconnect.reset()
        self.connections += 1
        self.connected.set()
        self._wake.set()
        log.info("connected to %s", self.broker)
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb(client)
            except Exception:
                log.exception("on_connect callback failed")

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if self.connected.is_set() and not self._stop.is_set():
            log.warning("disconnected from %s (%s); messages wait in the outbox", self.broker, reason_code)
        self.connected.clear()
        self._reconnect.arm()

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._reconnect.arm()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason_code: Any, _properties: Any) -> None:
        self._acked.append(mid)
        self._wake.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
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
        self._resolve_acks()
        self.client.disconnect()
        self.client.loop_stop()

    def wake(self) -> None:
        """A new message is in the outbox."""
        self._wake.set()

    def drained(self) -> bool:
        """Nothing waits: the outbox is empty and every published message acknowledged."""
        return len(self.outbox) == 0 and not self._inflight and not self._acked

    def wait_drained(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.drained():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def publish_direct(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Publish outside the outbox (status, command results): only worth sending while connected."""
        self._publish_recorded(topic, payload, retain=retain)

    def _publish_recorded(self, topic: str, payload: bytes | str, *, retain: bool) -> Any:
        with self._lock:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            self._direct.add(info.mid)
        return info

    # -- the drain loop ----------------------------------------------------------------------------------------

    def _resolve_acks(self) -> None:
        """Delete acknowledged outbox messages. Every mid in ``_acked`` was recorded before (under the lock),
        so an acknowledgement is never matched to the wrong message, even after mids wrap around."""
        seqs = []
        with self._lock:
            while self._acked:
                mid = self._acked.popleft()
                seq = self._inflight.pop(mid, None)
                if seq is not None:
                    seqs.append(seq)
                else:
                    self._direct.discard(mid)
        if seqs:
            self.outbox.ack(*seqs)
            self.acknowledged += len(seqs)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._resolve_acks()
                if not self.connected.is_set():
                    continue
                room = self.window - len(self._inflight)
                if room <= 0:
                    continue
                batch = self.outbox.after(self._last, room)
                for message in batch:
                    with self._lock:
                        info = self.client.publish(
                            message.topic, message.payload, qos=message.qos, retain=message.retain
                        )
                        # rc != 0 (link just dropped): paho keeps it queued and sends it after reconnecting
                        self._inflight[info.mid] = message.seq
                    self._last = message.seq
                    self.published += 1
                if len(batch) == room:
                    self._wake.set()  # more may wait
            except Exception as exc:  # a disk error must not kill the loop
                self.last_error = str(exc)
                log.exception("publishing failed")
                time.sleep(0.5)
