"""The control room asks a node something and waits for its answer: a command on ``maskwatch/{node}/cmd/{verb}``
with a fresh ``request_id``, the node's answer on ``maskwatch/{node}/cmd/result`` (``maskwatch.cmd/1``).

The commander has its own MQTT connection (clean session, QoS 1), apart from ingest's: ingest acknowledges
each message only once it is stored (manual acknowledgements, a persistent session), and an answer is
nothing to store. Every worker of a shared ingest subscribes to every node's results and keeps only the
answers to its own requests (by ``request_id``).

Used by the service for a remote camera's latest frame on demand (the agent's ``snapshot`` verb: every face
blurred on the node, and only when the node runs with ``--snapshots``).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from maskwatch.core.backoff import Backoff
from maskwatch.core.names import check_name
from maskwatch.fleet import topics
from maskwatch.fleet.publisher import ReconnectSchedule, TLSOptions, make_client
from maskwatch.fleet.topics import BrokerURL

__all__ = ["CommandAnswer", "CommandTimeoutError", "CommandUnavailableError", "FleetCommander"]

log = logging.getLogger("maskwatch.fleet")


@dataclass(frozen=True)
class CommandAnswer:
    """A node's answer: ``ok`` with its ``result``, or an ``error`` (``code``: a machine code such as
    :data:`~maskwatch.fleet.topics.SNAPSHOTS_DISABLED`, ``error`` for one the node did not classify)."""

    node: str
    verb: str
    ok: bool
    result: dict[str, Any] | None
    error: str | None
    code: str | None


class CommandUnavailableError(RuntimeError):
    """The commander is not connected to the broker (it retries in the background)."""


class CommandTimeoutError(TimeoutError):
    """The node did not answer in time: offline, cut off, or busy."""


class FleetCommander:
    """Sends commands to nodes and waits for their answers (:meth:`request`, from any thread)."""

    def __init__(self, broker: BrokerURL, *, client_id: str, tls: TLSOptions | None = None) -> None:
        self.broker = broker
        self.client_id = client_id
        self.client = make_client(broker, client_id, clean_session=True, tls=tls, window=20)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self._reconnect = ReconnectSchedule(self.client, Backoff(1.0, 5.0, jitter=0.2))
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[CommandAnswer]] = {}

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers)."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.cancel()

    # -- paho callbacks (network thread) ---------------------------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker %s refused the command connection: %s", self.broker, reason_code)
            return
        self._reconnect.reset()
        self.connected.set()
        client.subscribe(topics.cmd_topic("+", "result"), qos=1)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, _reason: Any, _properties: Any) -> None:
        self.connected.clear()
        self._reconnect.arm()

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        self._reconnect.arm()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(body, dict) or body.get("schema") != topics.CMD_SCHEMA:
            return
        request_id = body.get("request_id")
        with self._lock:
            future = self._waiting.pop(request_id, None) if isinstance(request_id, str) else None
        if future is None:  # another worker's request, or one that timed out
            return
        node = message.topic.split("/")[1]
        result = body.get("result")
        future.set_result(
            CommandAnswer(
                node=node,
                verb=str(body.get("verb")),
                ok=body.get("ok") is True,
                result=result if isinstance(result, dict) else None,
                error=None if body.get("error") is None else str(body.get("error")),
                code=None if body.get("ok") is True else str(body.get("code") or "error"),
            )
        )

    # -- requests ---------------------------------------------------------------------------------------------

    def request(
        self, node: str, verb: str, body: dict[str, Any] | None = None, *, timeout: float = 5.0
    ) -> CommandAnswer:
        """Send ``verb`` to ``node`` and wait up to ``timeout`` seconds for its answer. Raises
        :class:`CommandUnavailableError` when not connected to the broker, :class:`CommandTimeoutError`
        when the node does not answer in time."""
        check_name(node, "node name")
        if verb not in topics.VERBS:
            raise ValueError(f"unknown command {verb!r} (known: {', '.join(topics.VERBS)})")
        if not self.connected.wait(min(timeout, 1.0)):
            raise CommandUnavailableError(f"not connected to the broker {self.broker}")
        request_id = uuid.uuid4().hex
        future: Future[CommandAnswer] = Future()
        with self._lock:
            self._waiting[request_id] = future
        payload = json.dumps({**(body or {}), "request_id": request_id})
        self.client.publish(topics.cmd_topic(node, verb), payload, qos=1)
        try:
            return future.result(timeout)
        except FutureTimeout as exc:
            raise CommandTimeoutError(f"node {node} did not answer {verb!r} within {timeout:g} s") from exc
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
