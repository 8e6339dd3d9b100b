"""One source inside the engine: its reader (a capture thread), its buffer, the detector its preset runs,
its tracker and its counters. The analysis thread owns everything here except the buffer and the status
queue, which the capture thread feeds.

:func:`make_runner` turns a :class:`~maskwatch.stream.config.SourceSpec` into a runner, failing at once
for a source that cannot exist (no such file, unknown kind) so ``add_source`` can say so.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from maskwatch.core.events import SourceSummary, StatsBucket
from maskwatch.core.redaction import redact
from maskwatch.core.timeutil import utc
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.stream.buffers import FrameBuffer
from maskwatch.stream.config import EngineConfig, SourceSpec
from maskwatch.stream.detectors import DetectorFactory
from maskwatch.stream.reporting import Bucket, percentile, source_summary
from maskwatch.stream.schedule import DetectionPolicy, DetectionSchedule
from maskwatch.stream.sources import (
    VIDEO_EXTENSIONS,
    CaptureFactory,
    Frame,
    ImageSource,
    SourceError,
    StreamSource,
    VideoSource,
    parse_source,
)
from maskwatch.stream.tracking import FaceTracker

__all__ = ["SourceLive", "SourceRunner", "detection_policy", "make_runner"]

log = logging.getLogger("maskwatch")

Clock = Callable[[], float]


@dataclass(frozen=True)
class SourceLive:
    """A running source's live figures (:meth:`~maskwatch.stream.engine.StreamEngine.source_stats`):
    over the last 10 seconds."""

    name: str
    kind: str
    state: str
    frames: int
    detected: int  # frames the face detector ran on (the others: carried by the tracker)
    dropped: int
    analysed_fps: float
    lag_p95: float | None
    last_analysed: datetime | None
    people_now: int


class SourceRunner:
    """One source inside the engine: its reader, buffer, detector settings, tracker and counters."""

    def __init__(
        self,
        spec: SourceSpec,
        name: str,
        source: ImageSource | VideoSource | StreamSource,
        kind: str,
        detector: MaskDetector,
        *,
        config: EngineConfig,
        classes: Sequence[str],
        clock: Clock,
        wake: threading.Event,
    ):
        self.spec, self.name, self.source, self.kind = spec, name, source, kind
        self.detector = detector
        self.config = config
        self.classes = list(classes)
        self.clock = clock
        self.live = kind == "stream" or spec.realtime
        self.buffer = FrameBuffer(1 if self.live else config.file_queue, latest_wins=self.live, wake=wake)
        self.stop = threading.Event()
        self.statuses: queue.SimpleQueue[tuple[str, str | None, int]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.tracker: FaceTracker | None = None
        self.frames = 0
        self.detected = 0  # frames the face detector ran on
        self.schedule = DetectionSchedule(detection_policy(spec, config))
        self.counts = dict.fromkeys(self.classes, 0)
        self.lags: deque[float] = deque(maxlen=config.lag_window)
        self.started = time.monotonic()
        self.last_frame_at = time.monotonic()
        self.state = "new"
        self.stalled = False
        self.present = 0  # faces in the last analysed frame
        self.wants_tracker = spec.track and (kind != "image" or spec.realtime)
        self.recent: deque[tuple[float, float | None]] = deque(maxlen=64)  # (analysed at, lag) for live stats
        self.snapshots: dict[int, np.ndarray] = {}  # track id -> best face view so far (``snapshots`` on)
        self.removed = threading.Event()
        self.bucket = Bucket.at(clock(), config.stats_interval, self.classes, self.buffer.dropped)
        if isinstance(source, StreamSource):
            source.stop, source.on_status = self.stop, self.on_status

    # -- capture thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._capture, name=f"maskwatch-capture-{self.name}", daemon=True)
        self.thread.start()

    def _frames(self) -> Iterator[Frame]:
        delivered, limit = 0, self.spec.max_frames
        while True:
            begin = time.monotonic()
            frames_before = self.source.stats.frames
            for frame in self._slideshow(self.source) if self.kind == "image" and self.spec.realtime else self.source:
                if self.spec.realtime and frame.timestamp is not None:  # play as a camera would deliver it
                    delay = begin + frame.timestamp - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        return
                    frame = dataclasses.replace(frame, captured=time.monotonic())
                yield frame
                delivered += 1
                if self.stop.is_set() or (limit is not None and delivered >= limit):
                    return
            if not self.spec.loop or self.stop.is_set() or self.source.stats.frames == frames_before:
                return

    def _slideshow(self, images: Any) -> Iterator[Frame]:
        """Still images as a slow video: each repeated for ``hold`` seconds at ``target_fps`` (5)."""
        rate = self.spec.target_fps or 5.0
        repeats = max(1, round(self.spec.hold * rate))
        index = 0
        for image in images:
            for _ in range(repeats):
                yield dataclasses.replace(image, index=index, timestamp=index / rate, kind="video")
                index += 1

    def _capture(self) -> None:
        try:
            if isinstance(self.source, VideoSource):
                self.source.probe()
            if self.kind != "stream":
                self.statuses.put(("live", None, 0))
            for frame in self._frames():
                if not self.buffer.put(frame, self.stop):
                    break
            self.buffer.close()
        except SourceError as exc:
            self.buffer.close(str(exc))
        except Exception as exc:
            log.exception("%s: capture failed", self.name)
            self.buffer.close(f"{type(exc).__name__}: {exc}")

    def on_status(self, state: str, reason: str | None, attempts: int) -> None:
        self.statuses.put((state, reason, attempts))

    # -- the analysis thread's side ----------------------------------------------------------------------

    def make_tracker(self, compliant_classes: Sequence[str]) -> FaceTracker:
        """This source's tracker, made at its first frame (a video's frame rate is known once it is open)."""
        source, config = self.source, self.config
        if isinstance(source, StreamSource):
            rate = self.spec.target_fps or source.fps or 25.0
        else:
            rate = self.output_fps
        return FaceTracker(
            self.classes,
            frame_rate=rate,
            min_frames=config.min_track_frames,
            keep_tracks=0,  # people leave as track_ended events; a 24/7 source keeps no list of them
            classify_every=None if self.detector.classify_tta else config.classify_every,
            decided_votes=config.decided_votes,
            decided_probability=config.decided_probability,
            compliant_classes=compliant_classes,
        )

    def flush_bucket(self, now: float, *, final: bool = False) -> StatsBucket:
        """The current bucket as an event, and a new bucket from where it ended (or from ``now``)."""
        interval = self.config.stats_interval
        dropped = self.buffer.dropped  # read once: a drop between two reads would fall between the buckets
        event = self.bucket.event(
            self.name, now=now, interval=interval, dropped=dropped, started_wall=self.started_wall, final=final
        )
        self.bucket = Bucket.at(max(now, self.bucket.end), interval, self.classes, dropped)
        return event

    def due_buckets(self, now: float) -> list[StatsBucket]:
        """The buckets that ended by ``now``, as events (the current bucket then holds ``now``)."""
        out = []
        while now >= self.bucket.end:
            out.append(self.flush_bucket(now))
        return out

    def summary(self, error: str | None, compliant_classes: Sequence[str]) -> SourceSummary:
        return source_summary(
            self.name, kind=self.kind, stats=self.source.stats, frames=self.frames, dropped=self.buffer.dropped,
            counts=self.counts, tracker=self.tracker, classes=self.classes, compliant_classes=compliant_classes,
            seconds=time.monotonic() - self.started, lags=self.lags, error=error,
        )  # fmt: skip

    def live_figures(self, now: float) -> SourceLive:
        """The last 10 seconds (``now``: ``time.monotonic()``)."""
        recent = list(self.recent)
        window = [t for t, _ in recent if now - t <= 10.0]
        fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else 0.0
        lags = [lag for t, lag in recent if lag is not None and now - t <= 10.0]
        last = self.clock() - (now - recent[-1][0]) if recent else None
        return SourceLive(
            name=self.name,
            kind=self.kind,
            state=self.state,
            frames=self.frames,
            detected=self.detected,
            dropped=self.buffer.dropped,
            analysed_fps=round(fps, 2),
            lag_p95=percentile(lags, 95),
            last_analysed=None if last is None else utc(last),
            people_now=self.present,
        )

    @property
    def output_fps(self) -> float:
        """Frames per second this source delivers (after stride / target FPS; a slideshow's rate)."""
        if self.kind == "image" and self.spec.realtime:
            return float(self.spec.target_fps or 5.0)
        return float(getattr(self.source, "output_fps", None) or self.spec.target_fps or 25.0)

    @property
    def started_wall(self) -> float:
        return self.clock() - (time.monotonic() - self.started)


def detection_policy(spec: SourceSpec, config: EngineConfig) -> DetectionPolicy:
    """When the detector runs on this source: its own settings, else the engine's ``camera_defaults``."""
    defaults = config.camera_defaults

    def pick(own: Any, default: Any) -> Any:
        return default if own is None else own

    return DetectionPolicy(
        detect_every=pick(spec.detect_every, defaults.detect_every),
        motion_gate=pick(spec.motion_gate, defaults.motion_gate),
        motion_threshold=pick(spec.motion_threshold, defaults.motion_threshold),
        max_skip=pick(spec.max_skip, defaults.max_skip),
    )


def make_runner(
    spec: SourceSpec,
    *,
    config: EngineConfig,
    detectors: DetectorFactory,
    classes: Sequence[str],
    clock: Clock,
    wake: threading.Event,
    capture_factory: CaptureFactory | None = None,
) -> SourceRunner:
    """A runner for ``spec`` (nothing is opened yet); :class:`SourceError` for a source that cannot exist."""
    kind_name, value = ("files", list(spec.paths)) if spec.paths is not None else parse_source(spec.uri)
    value = cast(Any, value)
    paths: list[Path] = []
    if kind_name in ("image", "files"):
        paths = [Path(value)] if kind_name == "image" else [Path(p) for p in value]
        videos = [p for p in paths if p.suffix.lower() in VIDEO_EXTENSIONS]
        if kind_name == "files" and not paths:
            raise SourceError(f"{spec.uri}: no images or videos found there")
        if videos and len(videos) == len(paths) and len(paths) == 1:
            kind_name, value = "video", paths[0]
        elif videos:
            raise SourceError(f"{spec.uri}: mixes videos and images; give each video as its own source")
    kind = "image" if kind_name in ("image", "files") else "video" if kind_name == "video" else "stream"
    name = spec.name or (str(value) if kind == "video" else redact(spec.uri))
    still = kind == "image" and not spec.realtime
    preset = spec.preset or (config.image_preset if still else config.video_preset)
    detector = detectors(preset)
    source: ImageSource | VideoSource | StreamSource
    if kind == "image":
        source = ImageSource(paths)
    elif kind == "video":
        source = VideoSource(
            str(value), stride=spec.stride, target_fps=spec.target_fps, capture_factory=capture_factory
        )
    else:
        source = StreamSource(
            value if isinstance(value, int) else str(value),
            target_fps=spec.target_fps,
            backoff=config.backoff,
            max_backoff=config.max_backoff,
            give_up_after=config.give_up_after,
            max_frames=spec.max_frames,
            capture_factory=capture_factory,
        )
    source.name = name
    return SourceRunner(spec, name, source, kind, detector, config=config, classes=classes, clock=clock, wake=wake)
