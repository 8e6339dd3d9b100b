"""What the engine is told: its settings (:class:`EngineConfig`, one pydantic section that ``detect``, the
service and the agent embed) and one source to run (:class:`SourceSpec`).

Light on purpose (pydantic and the preset names only): a settings file naming the engine's options is
checked without loading OpenCV or a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from maskwatch.core.settings import RootSettings, Section
from maskwatch.detection.presets import PresetName

#: A camera's colour mode (:mod:`maskwatch.camera_color`): ``color`` classifies the faces as delivered,
#: ``gray`` turns every face grey first (black-and-white and infrared cameras: the grey view the model was
#: trained for, any colour cast removed), ``auto`` follows the stream (grey after 5 grey frames in a row,
#: colour after 5 colour ones).
ColorMode = Literal["auto", "color", "gray"]

__all__ = [
    "MAX_ZONES",
    "MAX_ZONE_POINTS",
    "CameraDefaults",
    "CameraSettings",
    "ColorMode",
    "DetectSettings",
    "EngineConfig",
    "PrivacyZone",
    "SourceSpec",
]

MAX_ZONES = 16  # privacy zones per camera
MAX_ZONE_POINTS = 64  # corners per zone

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
#: a privacy zone: a polygon of (x, y) corners in fractions of the frame's width and height (0..1, from the
#: top left), so it fits the camera at any resolution; blacked out before anything sees the frame
#: (a corner is a 2-item list rather than a tuple: OpenAPI 3.0 schemas cannot say "tuple")
ZonePoint = Annotated[list[Fraction], Field(min_length=2, max_length=2)]
PrivacyZone = Annotated[list[ZonePoint], Field(min_length=3, max_length=MAX_ZONE_POINTS)]
PrivacyZones = Annotated[list[PrivacyZone], Field(max_length=MAX_ZONES)]

# When the face detector runs (the defaults of CameraDefaults; chosen on measurements, BENCHMARKS.md "Edge
# capacity"; what each does: maskwatch.stream.schedule)
DETECT_EVERY = 1
MOTION_GATE = False
MOTION_THRESHOLD = 0.002
MAX_SKIP = 2.0
MAX_SKIP_LIMIT = 10.0


class CameraDefaults(Section):
    """What every camera (source) of an engine gets unless it says otherwise (``engine.camera_defaults``)."""

    preset: PresetName | None = Field(None, description="None: the engine's image_preset / video_preset")
    target_fps: float | None = Field(None, gt=0, le=120, description="analyse about this many frames/s (None: all)")
    realtime: bool = Field(False, description="play a file as a camera would deliver it (latest frame wins)")
    loop: bool = Field(False, description="start a file again at its end")
    hold: float = Field(4.0, gt=0, description="seconds each still image is shown when played realtime")
    track: bool = Field(True, description="follow faces across frames and count people (videos, streams)")
    color: ColorMode = Field(
        "color", description="faces as delivered (color), always grey (gray: infrared cameras), or follow the stream"
    )
    privacy_zones: PrivacyZones = Field(
        default_factory=list,
        description="polygons of [x, y] corners in fractions of the frame (0..1), blacked out before the frame "
        "is analysed, streamed or stored",
    )
    detect_every: int = Field(
        DETECT_EVERY,
        ge=1,
        description="run the face detector on every N-th analysed frame; the tracker carries "
        "the faces (moved along their tracks) in between (1: every frame; needs track)",
    )
    motion_gate: bool = Field(
        MOTION_GATE, description="skip the face detector while nothing moved since its last run (needs track)"
    )
    motion_threshold: float = Field(
        MOTION_THRESHOLD, gt=0, le=1, description="share of the (downscaled) frame that must change to count as motion"
    )
    max_skip: float = Field(
        MAX_SKIP,
        gt=0,
        le=MAX_SKIP_LIMIT,
        description="seconds the detector may be skipped at most (the bound of the interval and the gate: a "
        "new face is found within it however still the scene is)",
    )


class CameraSettings(Section):
    """One camera's own settings: each None inherits :class:`CameraDefaults` (Frigate-style: cameras inherit
    the global defaults and override what differs)."""

    preset: PresetName | None = None
    target_fps: float | None = Field(None, gt=0, le=120)
    realtime: bool | None = None
    loop: bool | None = None
    hold: float | None = Field(None, gt=0)
    track: bool | None = None
    color: ColorMode | None = None
    privacy_zones: PrivacyZones | None = None
    detect_every: int | None = Field(None, ge=1)
    motion_gate: bool | None = None
    motion_threshold: float | None = Field(None, gt=0, le=1)
    max_skip: float | None = Field(None, gt=0, le=MAX_SKIP_LIMIT)

    def resolved(self, defaults: CameraDefaults) -> CameraDefaults:
        """These settings over ``defaults``: what the camera runs with."""
        own = {k: v for k, v in self.model_dump().items() if v is not None and k in CameraDefaults.model_fields}
        return defaults.model_copy(update=own)


class EngineConfig(Section):
    """Every engine setting in one place, embedded once as ``engine:`` in the settings of ``detect``
    (``--config``), ``serve`` and ``agent``; ``camera_defaults`` is what each camera inherits."""

    stats_interval: float = Field(60.0, gt=0, description="seconds per stats bucket (aligned to the wall clock)")
    classify_every: int | None = Field(
        5, ge=1, description="classification budget: decided tracks every N frames (None: every frame)"
    )
    decided_votes: int = Field(3, ge=1, description="a verdict is decided after this many classified frames ...")
    decided_probability: float = Field(0.8, ge=0, le=1, description="... with a mean probability at least this")
    min_track_frames: int = Field(3, ge=1, description="frames a track needs to count as a person")
    image_preset: PresetName = Field("accurate", description="default preset of still images")
    video_preset: PresetName = Field("fast", description="default preset of videos and streams")
    file_queue: int = Field(4, ge=1, description="frames a file's capture thread reads ahead")
    subscriber_queue: int = Field(
        10_000, ge=1, description="events a subscriber may lag behind before the engine waits"
    )
    frame_queue: int = Field(4, ge=1, description="analysed frames (with images) a frame subscriber may lag behind")
    stall_timeout: float = Field(
        10.0,
        gt=0,
        description="a live source with no frame for this long is reported lost (also the network open/read timeout)",
    )
    failed_after: float = Field(
        30.0, gt=0, description="a live source down this long is reported failed; it keeps reconnecting (forever)"
    )
    backoff: float = Field(0.5, gt=0, description="first wait before reopening a live source (doubles)")
    max_backoff: float = Field(8.0, gt=0, description="... up to this; a source keeps retrying at this pace")
    decoder: Literal["process", "thread"] = Field(
        "process",
        description="where live sources decode: a child process per camera (a crash or hang restarts "
        "that camera only) or a thread of the engine's process",
    )
    stop_when_done: bool = Field(
        False, description="end the engine when every source has ended (files); else wait for more"
    )
    emit_frames: bool = Field(False, description="also send a ``frame`` event per analysed frame to event subscribers")
    snapshots: bool = Field(False, description="keep each person's best face view for ``snapshot_sink`` (privacy: off)")
    snapshot_blur: bool = Field(True, description="blur every face in a snapshot (privacy by default)")
    lag_window: int = Field(2048, ge=1, description="recent lag samples kept per source for percentiles")
    camera_defaults: CameraDefaults = Field(default_factory=CameraDefaults, description="what each camera inherits")

    def source(self, uri: str, name: str | None = None, camera: CameraSettings | None = None) -> SourceSpec:
        """The engine's source for a camera: its own settings over :attr:`camera_defaults`."""
        settings = (camera or CameraSettings()).resolved(self.camera_defaults)
        return SourceSpec(
            uri=uri,
            name=name,
            preset=settings.preset,
            target_fps=settings.target_fps,
            realtime=settings.realtime,
            loop=settings.loop,
            hold=settings.hold,
            track=settings.track,
            color=settings.color,
            privacy_zones=[[(x, y) for x, y in zone] for zone in settings.privacy_zones],
            detect_every=settings.detect_every,
            motion_gate=settings.motion_gate,
            motion_threshold=settings.motion_threshold,
            max_skip=settings.max_skip,
        )

    @classmethod
    def suggest(cls, key: str) -> str | None:
        """Renamed keys: a live source no longer gives up (issue 18), it is reported failed and keeps trying."""
        return {"give_up_after": "failed_after"}.get(key)

    @model_validator(mode="after")
    def _backoff_order(self) -> EngineConfig:
        if self.max_backoff < self.backoff:
            raise ValueError(f"max_backoff ({self.max_backoff}) must be >= backoff ({self.backoff})")
        return self


@dataclass
class SourceSpec:
    """One source for the engine.

    Args:
        uri: what ``maskwatch detect`` takes: an image, a folder or glob of images, a video file,
            ``webcam:N``, ``rtsp://...`` or ``http(s)://...``.
        name: the camera name in events (default: the uri).
        preset: detector preset (``fast``, ``balanced``, ``accurate``); default: the engine's
            ``image_preset`` for still images, ``video_preset`` for videos and streams.
        stride / target_fps: analyse every N-th frame of a file, or about this many frames per second.
        realtime: play a file at its own frame rate as if it were a camera (latest frame wins); still
            images played ``realtime`` are a slow slideshow: each is shown ``hold`` seconds at
            ``target_fps`` (default 5) frames per second, and people in it are tracked and counted.
        hold: seconds each still image is shown when played ``realtime``.
        loop: start a file again when it ends (demo cameras); implies nothing else.
        max_frames: stop after this many frames (live sources: a bounded test run).
        track: follow faces across frames and count people (videos and streams).
        start_frame: a video file starts at this frame (the frames before it are skipped, not analysed).
        give_up_after: end a live source that has had no frame for this many seconds, as failed (one-shot
            runs: ``maskwatch detect --reconnect-timeout``); None, the default, reconnects forever.
        color: the camera's colour mode (:data:`ColorMode`); None: the engine's ``camera_defaults.color``.
        privacy_zones: polygons of (x, y) in fractions of the frame (0..1) blacked out before the frame is
            analysed, streamed or stored (:class:`~maskwatch.stream.privacy.SourcePrivacy`).
        detect_every / motion_gate / motion_threshold / max_skip: when the face detector runs on a tracked
            source (:mod:`~maskwatch.stream.schedule`); None: the engine's ``camera_defaults``.
    """

    uri: str
    name: str | None = None
    paths: Sequence[str | Path] | None = None  # still images given one by one (``uri`` then only names them)
    preset: str | None = None
    stride: int = 1
    target_fps: float | None = None
    realtime: bool = False
    hold: float = 4.0
    loop: bool = False
    max_frames: int | None = None
    track: bool = True
    start_frame: int = 0
    give_up_after: float | None = None
    color: ColorMode | None = None
    privacy_zones: list[list[tuple[float, float]]] = field(default_factory=list)
    detect_every: int | None = None
    motion_gate: bool | None = None
    motion_threshold: float | None = None
    max_skip: float | None = None


class DetectSettings(RootSettings):
    """``maskwatch detect --config FILE``: the engine block shared with serve and the agent (environment:
    ``MASKWATCH_DETECT_ENGINE__<KEY>``); the command's flags override it."""

    model_config = SettingsConfigDict(env_prefix="MASKWATCH_DETECT_")

    engine: EngineConfig = Field(default_factory=EngineConfig)
