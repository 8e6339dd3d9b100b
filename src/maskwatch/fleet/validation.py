"""What the control room accepts from a remote node, beyond "it parses": a node is a device in the field,
and what it sends is checked like any other untrusted input before it reaches storage, metrics or alerts.

* :func:`parse_node_status`: a node status (retained, and the last will) by schema
  (:class:`NodeStatusMessage`): its state, a short reason, non-negative outbox counters, camera names;
* :func:`check_event`: an engine event's times within a window of now (``past_s`` back, ``future_s`` ahead:
  an outbox emptied after a long outage is old, a clock may be a little fast) and its counts non-negative
  and consistent (a stats bucket's people add up, compliant people are among them, the window is ordered);
* :func:`strip_remote`: what a remote event may not carry: a snapshot reference names a file of the
  control room (a node's own snapshots stay on the node), so it is dropped;
* :class:`FleetCaps`: how many nodes, and cameras per node, the ingest keeps track of; messages from
  further ones are rejected (each new name would be a new entry in memory, a metric series, rows).

Each returns a reason (a short string) or None, and never raises on bad input: ingest counts the reason
and goes on. Call sites: :meth:`maskwatch.fleet.ingest.FleetIngest.receive` (events) and
:meth:`~maskwatch.fleet.ingest.FleetIngest._node_status` (statuses).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maskwatch.core.names import MAX_NAME, NAME_PATTERN

__all__ = [
    "FleetCaps",
    "NodeStatusMessage",
    "RemoteLimits",
    "check_event",
    "parse_node_status",
    "strip_remote",
]

MAX_REASON = 500  # characters of a node's offline reason kept


@dataclass(frozen=True)
class RemoteLimits:
    """The caps and the time window (``limits.fleet_*`` and ``limits.remote_*`` settings of the service)."""

    max_nodes: int = 1000
    max_cameras_per_node: int = 64
    future_s: float = 300.0
    past_s: float = 30 * 86400.0


class NodeStatusMessage(BaseModel):
    """A node's status (``maskwatch/{node}/status``, retained; its last will says ``offline``). Fields a
    newer agent adds are ignored; the known ones must have the right type."""

    model_config = ConfigDict(extra="ignore")

    schema_: str = Field(alias="schema")  # maskwatch.node/1.x, checked by the reader (topics.accepts)
    node: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    state: Literal["online", "offline"]
    time: float | None = None
    reason: str | None = Field(None, max_length=MAX_REASON)
    outbox: dict[str, int] | None = Field(None, max_length=32)
    cameras: list[str] | None = None


def parse_node_status(body: Mapping[str, Any], limits: RemoteLimits) -> NodeStatusMessage | str:
    """The status, or the reason it is refused."""
    try:
        status = NodeStatusMessage.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'status'}: {first['msg']}"
    if status.outbox is not None and any(v < 0 for v in status.outbox.values()):
        return "outbox counters must be >= 0"
    if status.cameras is not None:
        if len(status.cameras) > limits.max_cameras_per_node:
            return f"{len(status.cameras)} cameras; at most {limits.max_cameras_per_node} per node"
        if not all(re.fullmatch(NAME_PATTERN, c) for c in status.cameras):
            return "camera names must be valid names"
    return status


def _ts(value: datetime) -> float:
    return value.timestamp()


def check_event(event: Any, now: float, limits: RemoteLimits) -> str | None:
    """Why a remote engine event is refused (times out of the window, negative or inconsistent counts), or
    None when it is fine."""
    when = _ts(event.time)
    if when > now + limits.future_s:
        return f"time {when - now:.0f} s in the future"
    if when < now - limits.past_s:
        return f"time {now - when:.0f} s in the past"
    kind = event.type
    if kind == "stats":
        counts = {
            "n_people": event.n_people,
            "compliant_people": event.compliant_people,
            "present_max": event.present_max,
            "frames_analysed": event.frames_analysed,
            "frames_dropped": event.frames_dropped,
            "faces_classified": event.faces_classified,
            **{f"people.{k}": v for k, v in event.people.items()},
        }
        negative = [k for k, v in counts.items() if v < 0]
        if negative:
            return f"negative count(s): {', '.join(negative)}"
        if sum(event.people.values()) != event.n_people:
            return "people by verdict do not add up to n_people"
        if event.compliant_people > event.n_people:
            return "more compliant people than people"
        if not (event.interval > 0 and _ts(event.start) <= _ts(event.end)):
            return "the bucket's window is not ordered"
        if not (event.analysed_fps >= 0) or event.analysed_fps > 1000:
            return "analysed_fps out of range"
        for value in (event.lag.p50, event.lag.p95, event.lag.max):
            if value is not None and not (0 <= value < 86400):
                return "lag out of range"
        if _ts(event.end) > now + limits.future_s or _ts(event.start) < now - limits.past_s:
            return "the bucket's window is outside the accepted time window"
    elif kind == "track_ended":
        counts = {"n_frames": event.n_frames, "n_classified": event.n_classified, **event.votes}
        negative = [k for k, v in counts.items() if v < 0]
        if negative:
            return f"negative count(s): {', '.join(negative)}"
        if event.n_classified > event.n_frames or _ts(event.first_seen) > _ts(event.last_seen):
            return "inconsistent track (classified frames or times)"
        if not 0 <= event.probability <= 1:
            return "probability out of range"
    elif kind == "source_status" and event.attempts < 0:
        return "negative attempts"
    return None


def strip_remote(event: Any) -> Any:
    """The event without what a remote node may not send: a snapshot reference (a path of the control
    room's snapshot store) is dropped; everything else is kept."""
    if getattr(event, "snapshot", None) is not None:
        return event.model_copy(update={"snapshot": None})
    return event


class FleetCaps:
    """Admission of new nodes and cameras: at most ``max_nodes`` nodes, ``max_cameras_per_node`` each."""

    def __init__(self, limits: RemoteLimits) -> None:
        self.limits = limits

    def admit(
        self, nodes: Mapping[str, Any], node: str, camera: str | None, cameras: Set[str] = frozenset()
    ) -> str | None:
        """Why a message from ``node`` (about ``camera``) is refused; ``nodes``: the nodes known now,
        ``cameras``: that node's cameras known now."""
        if node not in nodes and len(nodes) >= self.limits.max_nodes:
            return f"more than {self.limits.max_nodes} nodes"
        if camera is not None and camera not in cameras and len(cameras) >= self.limits.max_cameras_per_node:
            return f"more than {self.limits.max_cameras_per_node} cameras on node {node}"
        return None
