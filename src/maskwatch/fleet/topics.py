"""The wire contract between edge agents and the control room: topics, payloads, broker URLs.

Topics (``{node}`` and ``{camera}`` are single topic levels: no ``/``, ``+``, ``#``):

==========================================  ======  ========  ===========================================
topic                                       QoS     retained  payload
==========================================  ======  ========  ===========================================
``maskwatch/{node}/status``                 1       yes       :data:`NODE_SCHEMA`: online/offline (last will)
``maskwatch/{node}/{camera}/status``        1       no        engine event ``source_status``
``maskwatch/{node}/{camera}/events``        1       no        engine events ``track_*`` and ``source``
``maskwatch/{node}/{camera}/stats``         1       no        engine event ``stats``
``maskwatch/{node}/ack``                    1       no        :data:`ACK_SCHEMA`: event ids the control room stored
``maskwatch/{node}/cmd/{verb}``             1       no        ``{"request_id", ...}`` (verbs: :data:`VERBS`)
``maskwatch/{node}/cmd/result``             1       no        ``{"request_id", "verb", "ok", ...}``
==========================================  ======  ========  ===========================================

Engine events travel as their own JSON (``schema: maskwatch.event/1``, a unique ``id``), unchanged. Node and
camera names follow :mod:`maskwatch.core.names` (one topic level each; a camera is ``node:camera`` in the
control room).

Versions (``docs/schema/VERSIONING.md``): every payload names its ``schema`` as ``FAMILY/MAJOR[.MINOR]``.
A reader accepts every minor version of its major (:func:`accepts`) and ignores fields it does not know
(:func:`read_event`): a newer agent's events are stored, not rejected. A new major is an incompatible change.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from maskwatch.core.names import is_name
from maskwatch.core.redaction import redact

__all__ = [
    "ACK_SCHEMA",
    "CHANNEL_OF",
    "CMD_SCHEMA",
    "EVENT_CHANNELS",
    "NODE_SCHEMA",
    "NO_FRAME",
    "ROOT",
    "SHARE_GROUP",
    "SNAPSHOTS_DISABLED",
    "VERBS",
    "BrokerURL",
    "CommandError",
    "ParsedTopic",
    "accepts",
    "ack_payload",
    "ack_topic",
    "camera_topic",
    "cmd_topic",
    "event_topic",
    "ingest_subscriptions",
    "node_status",
    "parse_ack",
    "parse_topic",
    "read_event",
]

ROOT = "maskwatch"
NODE_SCHEMA = "maskwatch.node/1"
CMD_SCHEMA = "maskwatch.cmd/1"
ACK_SCHEMA = "maskwatch.ack/1"
ACK_MAX_IDS = 1000  # event ids per acknowledgement message (about 36 KB)
VERBS = ("add_camera", "remove_camera", "snapshot", "status")
# an answer's ``code`` when ``ok`` is false, for the errors a caller acts on (others: ``error``)
SNAPSHOTS_DISABLED = "snapshots_disabled"  # the node runs without --snapshots: no image leaves it
NO_FRAME = "no_frame"  # the camera has no analysed frame (yet)
EVENT_CHANNELS = ("status", "events", "stats")  # camera channels carrying engine events
SHARE_GROUP = "maskwatch"

# engine event type -> camera channel
CHANNEL_OF = {
    "source_status": "status",
    "track_started": "events",
    "track_changed": "events",
    "track_ended": "events",
    "source": "events",
    "stats": "stats",
}


def node_status(node: str) -> str:
    return f"{ROOT}/{node}/status"


def camera_topic(node: str, camera: str, channel: str) -> str:
    return f"{ROOT}/{node}/{camera}/{channel}"


def cmd_topic(node: str, verb: str) -> str:
    return f"{ROOT}/{node}/cmd/{verb}"


def ack_topic(node: str) -> str:
    """Where the control room says which of ``node``'s events it has stored (the node then deletes them)."""
    return f"{ROOT}/{node}/ack"


def ack_payload(event_ids: list[str]) -> bytes:
    return json.dumps({"schema": ACK_SCHEMA, "ids": event_ids}, separators=(",", ":")).encode()


def parse_ack(payload: bytes) -> list[str] | None:
    """The event ids of an acknowledgement (any ``maskwatch.ack/1.x``; unknown fields ignored), or None for
    anything else."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or not accepts(body.get("schema"), ACK_SCHEMA):
        return None
    ids = body.get("ids")
    if not isinstance(ids, list):
        return None
    return [i for i in ids if isinstance(i, str)]


def accepts(schema: object, supported: str) -> bool:
    """Whether a payload's ``schema`` is readable by a reader of ``supported`` (``FAMILY/MAJOR``): the same
    major, any minor (``maskwatch.event/1``, ``maskwatch.event/1.4``)."""
    if not isinstance(schema, str):
        return False
    if schema == supported:
        return True
    minor = schema[len(supported) :]
    return schema.startswith(supported) and minor.startswith(".") and minor[1:].replace(".", "").isdigit()


def read_event(body: dict[str, Any]) -> Any:
    """An engine event from a wire payload of any ``maskwatch.event/1.x``, tolerant: fields this version does
    not know are left out (also inside nested objects), and ``schema`` becomes this version's. Raises
    ``pydantic.ValidationError`` for what is still invalid (a missing or wrong field, an unknown type) and
    ValueError for another major version."""
    from pydantic import ValidationError

    from maskwatch.stream import SCHEMA, parse_event

    if not accepts(body.get("schema"), SCHEMA):
        raise ValueError(f"unsupported schema {str(body.get('schema'))[:60]!r} (this version reads {SCHEMA}.x)")
    data = {**body, "schema": SCHEMA}
    for attempt in range(_MAX_UNKNOWN_FIELDS):
        try:
            return parse_event(data)
        except ValidationError as exc:
            unknown = [error["loc"][1:] for error in exc.errors() if error["type"] == "extra_forbidden"]
            if attempt == 0:
                data = copy.deepcopy(data)  # the caller's payload stays as it came (only now: the common case is free)
            if not unknown or not all(_drop(data, path) for path in unknown):
                raise
    return parse_event(data)


_MAX_UNKNOWN_FIELDS = 8  # rounds of dropping unknown fields (each round drops every one pydantic reported)


def _drop(data: Any, path: tuple[int | str, ...]) -> bool:
    """Remove the value at ``path`` (keys and list indexes) from ``data``; False when there is none."""
    if not path:
        return False
    for step in path[:-1]:
        found = (isinstance(data, dict) and step in data) or (
            isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        )
        if not found:
            return False
        data = data[step]
    if isinstance(data, dict) and path[-1] in data:
        del data[path[-1]]
        return True
    return False


def event_topic(node: str, event_type: str, camera: str) -> str | None:
    """The topic of an engine event, or None for types that do not travel (frames, summaries)."""
    channel = CHANNEL_OF.get(event_type)
    return None if channel is None else camera_topic(node, camera, channel)


def ingest_subscriptions(shared: bool = False) -> list[str]:
    """The control room's subscriptions: event channels (shared between workers with ``shared``: ``$share``),
    node status always plain (retained messages are not delivered to shared subscriptions, and every worker
    keeps the fleet state)."""
    prefix = f"$share/{SHARE_GROUP}/" if shared else ""
    return [f"{prefix}{ROOT}/+/+/{channel}" for channel in EVENT_CHANNELS] + [f"{ROOT}/+/status"]


class CommandError(Exception):
    """A command refused with a machine ``code`` (the answer's ``code``; the message is its ``error``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ParsedTopic:
    node: str
    camera: str | None  # None for node-level topics
    channel: str


def parse_topic(topic: str) -> ParsedTopic | None:
    """``maskwatch/{node}/status`` or ``maskwatch/{node}/{camera}/{channel}``; None for anything else."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == ROOT and parts[2] == "status" and is_name(parts[1]):
        return ParsedTopic(parts[1], None, "status")
    if len(parts) == 4 and parts[0] == ROOT and is_name(parts[1]) and parts[2] != "cmd" and is_name(parts[2]):
        return ParsedTopic(parts[1], parts[2], parts[3])
    return None


@dataclass(frozen=True)
class BrokerURL:
    """``mqtt://[USER[:PASS]@]HOST[:PORT]`` (1883) or ``mqtts://...`` (TLS, 8883)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL {redact(url)!r}: scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {redact(url)!r}: no host")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ValueError(f"broker URL {redact(url)!r}: bad port") from exc
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, user, password, tls)

    def __str__(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"
