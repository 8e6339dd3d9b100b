"""The engine's typed, versioned events: what every consumer (``maskwatch detect``, the service, the edge
agent) reads, and what travels as JSON (JSON Lines, the REST API, MQTT). pydantic only (the leaf layer):
reading an event never imports OpenCV, ONNX Runtime or torch.

Every event carries ``schema`` (:data:`SCHEMA`, bumped on any incompatible change), a unique ``id``, its
``type``, the ``source`` (camera) name and ``time`` (UTC wall clock when it was emitted). The published
JSON Schema (:func:`json_schema`, committed as ``docs/schema/maskwatch.event-1.json``) validates any line.

Counting each person once: a person is a track seen in at least ``min_frames`` frames. Such a track gets
one ``track_started`` when it reaches that length, ``track_changed`` whenever its verdict (the class with
the highest mean probability over its classified frames) changes, and exactly one ``track_ended``. The
``stats`` bucket of a source counts a person in the interval in which their track *ended*, so summing the
buckets of any period counts each person once.

    >>> event = parse_event('{"schema": "maskwatch.event/1", ...}')          # doctest: +SKIP
    >>> if isinstance(event, TrackEnded): print(event.label, event.n_frames)  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "ENDED_BY_STOP",
    "SCHEMA",
    "SOURCE_STATES",
    "Event",
    "FaceRecord",
    "FrameAnalysed",
    "LagStats",
    "PeopleSummary",
    "RunSummary",
    "SourceStatus",
    "SourceSummary",
    "StatsBucket",
    "TrackChanged",
    "TrackEnded",
    "TrackStarted",
    "json_schema",
    "new_event_id",
    "parse_event",
    "utc_now",
]

SCHEMA = "maskwatch.event/1"

# connecting: opening it; live: frames arriving; lost: no frame for a while (watchdog);
# reconnecting: reopening with backoff (or its decoder restarting); failed: down for long (engine.failed_after)
# and still retrying (next_attempt), or a file that could not be read (then it has ended too);
# ended: finished (file done, removed, disabled, stopped)
SOURCE_STATES = ("connecting", "live", "lost", "reconnecting", "ended", "failed")
SourceState = Literal["connecting", "live", "lost", "reconnecting", "ended", "failed"]
#: the ``reason`` of a source ``ended`` because its engine stopped (not because the source itself ended)
ENDED_BY_STOP = "engine stopped"
Box = tuple[float, float, float, float]
#: the mode a camera's faces are classified in (``maskwatch.camera_color.CameraColor.mode``)
ColorModeName = Literal["color", "gray"]


def new_event_id() -> str:
    """A unique event id (random UUID4, hex): storage and MQTT ingest use it to store each event once."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["maskwatch.event/1"] = Field("maskwatch.event/1", alias="schema")
    id: str = Field(default_factory=new_event_id, description="unique event id (idempotent storage key)")
    source: str = Field(description="the source (camera) name")
    time: datetime = Field(default_factory=utc_now, description="UTC wall clock when the event was emitted")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class FaceRecord(BaseModel):
    """One face in one analysed frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box: Box = Field(description="x0, y0, x1, y1 in image pixels")
    score: float = Field(description="face detector score, 0..1")
    label: str = Field(description="this frame's class (the track's verdict when not classified this frame)")
    probability: float
    probabilities: dict[str, float]
    confidence: float = Field(description="detector score x probability")
    landmarks: list[tuple[float, float]] = Field(default_factory=list)
    classified: bool = Field(True, description="False when the track's verdict was reused (budget)")
    predicted: bool = Field(
        False, description="the tracker's box: the face detector did not run on this frame (interval, motion gate)"
    )
    track_id: int | None = None
    track_label: str | None = None
    track_probability: float | None = None


class FrameAnalysed(_Event):
    """One analysed image or video frame (emitted only when a consumer asks for frames)."""

    type: Literal["frame"] = "frame"
    frame: int = Field(description="frame number in its source (0 for still images)")
    timestamp: float | None = Field(None, description="seconds into the video or since the stream started")
    path: str | None = Field(None, description="the image file, for still images")
    width: int
    height: int
    n_faces: int
    counts: dict[str, int]
    compliance: float | None = Field(description="compliant faces / faces, null without faces")
    faces: list[FaceRecord]
    lag: float | None = Field(None, description="seconds from capture to analysis done (live sources)")
    saved: str | None = Field(None, description="annotated file written for this frame, if any")


class TrackStarted(_Event):
    """A track became a person (seen in ``min_frames`` frames)."""

    type: Literal["track_started"] = "track_started"
    track_id: int
    label: str
    probability: float
    frame: int
    timestamp: float | None
    box: Box


class TrackChanged(_Event):
    """A person's verdict changed."""

    type: Literal["track_changed"] = "track_changed"
    track_id: int
    previous_label: str
    label: str
    probability: float
    frame: int
    timestamp: float | None


class TrackEnded(_Event):
    """A person left (or the source ended): their final verdict by soft votes over classified frames."""

    type: Literal["track_ended"] = "track_ended"
    track_id: int
    label: str = Field(description="verdict: the class with the highest mean probability")
    probability: float = Field(description="mean probability of the verdict")
    probabilities: dict[str, float]
    compliant: bool = Field(description="whether the verdict counts as compliant for this model")
    votes: dict[str, int] = Field(description="per-frame argmax labels of the classified frames")
    n_frames: int = Field(description="frames the track was seen in")
    n_classified: int = Field(description="frames in which the face was classified")
    first_frame: int
    last_frame: int
    first_timestamp: float | None
    last_timestamp: float | None
    first_seen: datetime
    last_seen: datetime
    best_score: float
    best_box: Box | None
    snapshot: str | None = Field(None, description="blurred snapshot reference, when snapshots are on")


class LagStats(BaseModel):
    """Seconds from frame capture to its analysis being done."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50: float | None = None
    p95: float | None = None
    max: float | None = None


class StatsBucket(_Event):
    """A source's interval: people whose track ended in it (each person once), crowd, speed and lag."""

    type: Literal["stats"] = "stats"
    start: datetime = Field(description="bucket start (aligned to the interval)")
    end: datetime
    interval: float = Field(description="bucket length in seconds")
    people: dict[str, int] = Field(description="people whose track ended in this bucket, by verdict")
    n_people: int
    compliant_people: int
    compliance: float | None = Field(description="compliant people / people, null without people")
    present_max: int = Field(description="most people (tracked faces) in one frame")
    frames_analysed: int
    frames_dropped: int = Field(description="live frames replaced by a newer one before analysis")
    faces_classified: int
    analysed_fps: float
    lag: LagStats
    final: bool = Field(False, description="flushed early because the source ended or the engine stopped")
    color_mode: ColorModeName | None = Field(
        None, description="the camera's colour mode when the bucket ended: gray (faces classified grey) or color"
    )


class SourceStatus(_Event):
    """A source's state changed."""

    type: Literal["source_status"] = "source_status"
    state: SourceState
    kind: str = Field(description="image, video or stream")
    reason: str | None = None
    attempts: int = Field(0, description="reconnection attempts since the source was last live")
    next_attempt: datetime | None = Field(
        None, description="when the next reconnection attempt is due (reconnecting, failed): it never gives up"
    )
    color_mode: ColorModeName | None = Field(None, description="the camera's colour mode now: gray or color")


class PeopleSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_people: int
    counts: dict[str, int]
    compliance: float | None
    n_short_tracks_ignored: int = 0


class SourceSummary(_Event):
    """A source is done: what it delivered and what it saw."""

    type: Literal["source"] = "source"
    kind: str
    frames: int = Field(description="frames (or images) analysed")
    skipped: int = Field(description="unreadable images or frames")
    skipped_reasons: list[str]
    dropped: int = Field(description="live frames replaced by a newer one before analysis")
    reconnects: int = Field(description="successful reopenings of a live source")
    attempts: int = Field(0, description="reopening attempts of a live source, successful or not")
    restarts: int = Field(0, description="decoder restarts after a crash or hang (live sources)")
    counts: dict[str, int] = Field(description="faces per class over all analysed frames")
    compliance: float | None
    people: PeopleSummary | None = Field(None, description="tracked people (videos and streams)")
    seconds: float
    analysed_fps: float | None
    lag: LagStats
    error: str | None = None


class RunSummary(_Event):
    """``maskwatch detect``'s last line: totals over every source."""

    type: Literal["summary"] = "summary"
    n_sources: int
    n_frames: int
    n_faces: int
    counts: dict[str, int]
    compliance: float | None
    skipped: int
    people: PeopleSummary | None
    errors: list[str]
    write_errors: int = 0
    interrupted: bool = False
    seconds: float
    frames_per_second: float | None


Event = Annotated[
    FrameAnalysed | TrackStarted | TrackChanged | TrackEnded | StatsBucket | SourceStatus | SourceSummary | RunSummary,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> Any:
    """Validate one event (JSON text or a dict) into its model; raises ``pydantic.ValidationError``."""
    if isinstance(data, dict):
        return _ADAPTER.validate_python(data)
    return _ADAPTER.validate_json(data)


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of every event (``docs/schema/maskwatch.event-1.json``)."""
    schema = _ADAPTER.json_schema(by_alias=True)
    schema["$id"] = "https://maskwatch.invalid/schema/maskwatch.event-1.json"
    schema["title"] = SCHEMA
    return schema


if __name__ == "__main__":  # python -m maskwatch.core.events > docs/schema/maskwatch.event-1.json
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
