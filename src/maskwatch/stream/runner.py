"""One source inside the engine: its reader (:mod:`~maskwatch.stream.readers`: a capture thread, or a decoder
process of its own for a live source), its buffer, the detector its preset runs, its tracker and its
counters. The analysis thread owns everything here except the buffer and the status queue, which the reader
feeds.

:func:`make_runner` turns a :class:`~maskwatch.stream.config.SourceSpec` into a runner, failing at once
for a source that cannot exist (no such file, unknown kind) so ``add_source`` can say so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from maskwatch.camera_color import CameraColor
from maskwatch.core.events import ColorModeName, SourceSummary, StatsBucket
from maskwatch.core.redaction import redact
from maskwatch.core.timeutil import utc
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.stream.buffers import FrameBuffer
from maskwatch.stream.config import EngineConfig, SourceSpec
from maskwatch.stream.decoder import process_decoding_unavailable
from maskwatch.stream.detectors import DetectorFactory
from maskwatch.stream.privacy import SourcePrivacy
from maskwatch.stream.readers import ProcessReader, Reader, ThreadReader
from maskwatch.stream.reporting import Bucket, percentile, source_summary
from maskwatch.stream.schedule import DetectionPolicy, DetectionSchedule
from maskwatch.stream.sources import (
    VIDEO_EXTENSIONS,
    CaptureFactory,
    ImageSource,
    SourceError,
    SourceJob,
    StatusReport,
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
    reason: str | None = None  # why it is not live (lost, reconnecting, failed)
    attempts: int = 0  # reopening attempts since it was last live
    next_attempt: datetime | None = None  # when it tries again (reconnecting, failed)
    restarts: int = 0  # decoders started again after a crash or hang
    color_mode: ColorModeName = "color"  # the camera's colour mode now (maskwatch.camera_color)


class SourceRunner:
    """One source inside the engine: its reader, buffer, detector settings, tracker and counters."""

    def __init__(
        self,
        spec: SourceSpec,
        job: SourceJob,
        source: ImageSource | VideoSource | StreamSource,
        detector: MaskDetector,
        *,
        config: EngineConfig,
        classes: Sequence[str],
        clock: Clock,
        wake: threading.Event,
        in_process: bool = False,
    ):
        self.spec, self.job, self.name, self.source, self.kind = spec, job, job.name, source, job.kind
        self.detector = detector
        self.config = config
        self.classes = list(classes)
        self.clock = clock
        self.live = self.kind == "stream" or spec.realtime
        self.buffer = FrameBuffer(1 if self.live else config.file_queue, latest_wins=self.live, wake=wake)
        self.stop = threading.Event()
        self.statuses: queue.SimpleQueue[StatusReport] = queue.SimpleQueue()
        self.tracker: FaceTracker | None = None
        self.frames = 0
        self.detected = 0  # frames the face detector ran on
        self.schedule = DetectionSchedule(detection_policy(spec, config))
        self.counts = dict.fromkeys(self.classes, 0)
        self.lags: deque[float] = deque(maxlen=config.lag_window)
        self.started = time.monotonic()
        self.last_frame_at = time.monotonic()
        self.state = "new"
        self.reason: str | None = None
        self.attempts = 0
        self.next_attempt: float | None = None  # wall clock
        self.stalled = False
        self.present = 0  # faces in the last analysed frame
        self.wants_tracker = spec.track and (self.kind != "image" or spec.realtime)
        self.recent: deque[tuple[float, float | None]] = deque(maxlen=64)  # (analysed at, lag) for live stats
        self.snapshots: dict[int, np.ndarray] = {}  # track id -> best face view so far (``snapshots`` on)
        # privacy zones and the blur hold (a face lost for a moment stays blurred) of frames that follow each other
        self.privacy = SourcePrivacy.for_source(spec.privacy_zones, sequence=self.kind != "image" or spec.realtime)
        self.removed = threading.Event()
        self.bucket = Bucket.at(clock(), config.stats_interval, self.classes, self.buffer.dropped)
        reader_options: dict[str, Any] = {
            "live": self.live, "backoff": config.backoff, "max_backoff": config.max_backoff,
        }  # fmt: skip
        self.reader: Reader
        if self.live and not in_process:
            # a decode call bounded by the open/read timeout, twice, and a beat a second otherwise
            hang_after = 2 * config.stall_timeout + 5.0
            self.reader = ProcessReader(
                job, source, self.buffer, self.stop, self.statuses.put, hang_after=hang_after, **reader_options
            )
        else:
            self.reader = ThreadReader(job, source, self.buffer, self.stop, self.statuses.put, **reader_options)
        # grey or colour faces: the camera's own ``color`` setting, else the engine's camera default
        self.color = CameraColor(spec.color or config.camera_defaults.color)

    # -- the reader ---------------------------------------------------------------------------------------

    def start(self) -> None:
        # a source added before its engine started (a queued job) counts its time from here, not from then
        self.started = self.last_frame_at = time.monotonic()
        self.reader.start()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the reader (its decoder process ends, its thread is joined); True when it ended in time."""
        self.stop.set()
        return self.reader.close(timeout)

    @property
    def restarts(self) -> int:
        return self.reader.restarts

    # -- the analysis thread's side ----------------------------------------------------------------------

    def make_tracker(self, compliant_classes: Sequence[str]) -> FaceTracker:
        """This source's tracker, made at its first frame. Its time is the frames' own (a file's position, a live
        frame's arrival), so tracks end on time however few of the frames are analysed; the rate given is the
        nominal one, only for frames without a time. Its start threshold follows the detector's."""
        source, config = self.source, self.config
        if isinstance(source, StreamSource):
            rate = self.spec.target_fps or source.fps or 25.0
        else:
            rate = self.output_fps
        return FaceTracker(
            self.classes,
            frame_rate=rate,
            detection_threshold=self.detector.score_threshold,
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
            self.name,
            now=now,
            interval=interval,
            dropped=dropped,
            started_wall=self.started_wall,
            final=final,
            color_mode=self.color.mode,
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
            seconds=time.monotonic() - self.started, lags=self.lags, error=error, restarts=self.restarts,
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
            reason=self.reason,
            attempts=self.attempts,
            next_attempt=None if self.next_attempt is None else utc(self.next_attempt),
            restarts=self.restarts,
            color_mode=self.color.mode,
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
    """A runner for ``spec`` (nothing is opened yet); :class:`SourceError` for a source that cannot exist.

    A live source decodes in a process of its own unless ``config.decoder`` is ``thread``, a
    ``capture_factory`` (an object of this process: tests' fake cameras) opens it, or the platform cannot
    (no memfd)."""
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
    target: Any = [str(p) for p in paths] if kind == "image" else value if isinstance(value, int) else str(value)
    job = SourceJob(
        kind=kind, target=target, name=name, stride=spec.stride, target_fps=spec.target_fps,
        realtime=spec.realtime, loop=spec.loop, hold=spec.hold, max_frames=spec.max_frames,
        start_frame=spec.start_frame, backoff=config.backoff, max_backoff=config.max_backoff,
        read_timeout=config.stall_timeout, failed_after=config.failed_after, give_up_after=spec.give_up_after,
    )  # fmt: skip
    source = job.make(capture_factory)
    live = kind == "stream" or spec.realtime
    in_process = capture_factory is not None or config.decoder == "thread"
    if live and not in_process and (why := process_decoding_unavailable()) is not None:
        log.warning("%s: decoding in a thread: %s", name, why)
        in_process = True
    return SourceRunner(
        spec, job, source, detector, config=config, classes=classes, clock=clock, wake=wake, in_process=in_process
    )
