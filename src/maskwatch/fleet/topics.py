"""The wire contract between edge agents and the control room: topics, payloads, broker URLs.

Topics (``{node}`` and ``{camera}`` are single topic levels: no ``/``, ``+``, ``#``):

==========================================  ======  ========  ===========================================
topic                                       QoS     retained  payload
==========================================  ======  ========  ===========================================
``maskwatch/{node}/status``                 1       yes       :data:`NODE_SCHEMA`: online/offline (last will)
``maskwatch/{node}/{camera}/status``        1       no        engine event ``source_status``
``maskwatch/{node}/{camera}/events``        1       no        engine events ``track_*`` and ``source``
``maskwatch/{node}/{camera}/stats``         1       no        engine event ``stats``
``maskwatch/{node}/cmd/{verb}``             1       no        ``{"request_id", ...}`` (verbs: :data:`VERBS`)
``maskwatch/{node}/cmd/result``             1       no        ``{"request_id", "verb", "ok", ...}``
==========================================  ======  ========  ===========================================

Engine events travel as their own JSON (``schema: maskwatch.event/1``, a unique ``id``), unchanged. Node and
camera names follow :mod:`maskwatch.core.names` (one topic level each; a camera is ``node:camera`` in the
control room).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from maskwatch.core.names import is_name
from maskwatch.core.redaction import redact

__all__ = [
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
    "camera_topic",
    "cmd_topic",
    "event_topic",
    "ingest_subscriptions",
    "node_status",
    "parse_topic",
]

ROOT = "maskwatch"
NODE_SCHEMA = "maskwatch.node/1"
CMD_SCHEMA = "maskwatch.cmd/1"
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
