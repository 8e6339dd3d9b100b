"""The stream engine: many sources at once, one face detector and one classifier, typed events out.

    >>> from maskwatch.stream import StreamEngine                               # doctest: +SKIP
    >>> engine = StreamEngine.load(stop_when_done=True)                          # doctest: +SKIP
    >>> engine.add_source("rtsp://door/stream", name="door")                     # doctest: +SKIP
    >>> engine.add_source("hall.mp4", name="hall")                               # doctest: +SKIP
    >>> events = engine.events()        # subscribe before start: nothing is missed  # doctest: +SKIP
    >>> engine.start()                                                           # doctest: +SKIP
    >>> for event in events:            # TrackStarted, TrackEnded, StatsBucket, ... until the engine ends
    ...     print(event.to_json())                                               # doctest: +SKIP

How it runs (one process, any number of sources):

* **A capture thread per source** reads frames into that source's buffer. A live source (webcam, RTSP,
  HTTP, or a file played ``realtime``) keeps only the **latest frame**: a newer frame replaces one not yet
  analysed (counted as dropped), so the analysed frame is never more than one frame old and the lag cannot
  grow when analysis is slower than the camera. A file keeps a small queue and its capture thread waits
  when the queue is full (back-pressure): every frame (or every ``stride``-th) is analysed.
* **One analysis thread** owns the models. Each round it takes at most one frame from every source that has
  one, round-robin (fair: a busy source cannot starve the others), finds the faces in each, assigns
  ByteTrack ids per source, and classifies the faces of *all* these frames in one classifier batch (one per
  classifier: the ``fast`` preset runs the bundled model's INT8 export, the others the fp32 model).
* **Classification budget**: a track whose verdict is decided is re-classified only every
  ``classify_every`` frames (its other frames reuse the verdict); off when the preset classifies with
  test-time augmentation (``accurate``), where accuracy is the point.
* **Events** (:mod:`maskwatch.stream.events`) go to every subscriber's bounded queue; a full queue makes the
  analysis wait (back-pressure; a live source then drops frames instead of lagging). Consumers iterate
  (:meth:`StreamEngine.events`) or register callbacks (:meth:`StreamEngine.subscribe`).
* **Control from any thread**: :meth:`~StreamEngine.start`, :meth:`~StreamEngine.stop` (graceful: open
  tracks end, the last stats buckets are flushed; returns within about a second),
  :meth:`~StreamEngine.add_source` / :meth:`~StreamEngine.remove_source` while running. A source that fails
  or hangs never stops the others: its failure is a ``source_status`` event, its hang a ``lost`` one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from maskwatch.core.redaction import redact
from maskwatch.detection.pipeline import PRESETS, FaceResult, FrameResult, MaskDetector
from maskwatch.stream.events import (
    FaceRecord,
    FrameAnalysed,
    LagStats,
    PeopleSummary,
    SourceStatus,
    SourceSummary,
    StatsBucket,
    TrackChanged,
    TrackEnded,
    TrackStarted,
)
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
from maskwatch.stream.tracking import FaceTracker, Transition

__all__ = ["AnalysedFrame", "EngineConfig", "SourceLive", "SourceSpec", "StreamEngine", "Subscription"]

log = logging.getLogger("maskwatch")

_END = object()  # closes a subscription


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


@dataclass
class EngineConfig:
    """Every engine setting in one place (the service and the agent keep it in their YAML)."""

    stats_interval: float = 60.0  # seconds per stats bucket (aligned to the wall clock)
    classify_every: int | None = 5  # classification budget: decided tracks every N frames (None: every frame)
    decided_votes: int = 3  # a verdict is decided after this many classified frames ...
    decided_probability: float = 0.8  # ... with a mean probability at least this
    min_track_frames: int = 3  # frames a track needs to count as a person
    image_preset: str = "accurate"  # default preset of still images
    video_preset: str = "fast"  # default preset of videos and streams
    file_queue: int = 4  # frames a file's capture thread reads ahead
    subscriber_queue: int = 10_000  # events a subscriber may lag behind before the engine waits
    frame_queue: int = 4  # analysed frames (with images) a frame subscriber may lag behind
    stall_timeout: float = 10.0  # a live source with no frame for this long is reported lost
    give_up_after: float = 30.0  # a live source that stays down this long has failed
    backoff: float = 0.5  # first wait before reopening a live source (doubles up to max_backoff)
    max_backoff: float = 8.0
    stop_when_done: bool = False  # end the engine when every source has ended (files); else wait for more
    emit_frames: bool = False  # also send a ``frame`` event per analysed frame to event subscribers
    snapshots: bool = False  # keep each person's best face view for ``snapshot_sink`` (off: privacy)
    snapshot_blur: bool = True  # blur every face in a snapshot (privacy by default)
    lag_window: int = 2048  # recent lag samples kept per source for percentiles

    def __post_init__(self) -> None:
        if self.stats_interval <= 0:
            raise ValueError(f"stats_interval must be > 0, got {self.stats_interval}")
        if self.classify_every is not None and self.classify_every < 1:
            raise ValueError(f"classify_every must be >= 1 or None, got {self.classify_every}")
        for name in ("image_preset", "video_preset"):
            if getattr(self, name) not in PRESETS:
                raise ValueError(f"{name} must be one of {', '.join(PRESETS)}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SourceLive:
    """A running source's live figures (:meth:`StreamEngine.source_stats`): over the last 10 seconds."""

    name: str
    kind: str
    state: str
    frames: int
    dropped: int
    analysed_fps: float
    lag_p95: float | None
    last_analysed: datetime | None
    people_now: int


@dataclass(frozen=True)
class AnalysedFrame:
    """An analysed frame with its pixels, for consumers that draw or save (frame subscriptions and
    :meth:`StreamEngine.latest`); ``event`` is the frame's JSON-ready record."""

    source: str
    frame: Frame
    result: FrameResult
    event: FrameAnalysed
    fps: float | None = None  # the source's analysed frame rate (an annotated video plays at this rate)
    expected: int | None = None  # frames the source will deliver, when known (progress bars)


# --------------------------------------------------------------------------------------------------------
# buffers between a capture thread and the analysis thread


class FrameBuffer:
    """A small buffer of frames. ``latest_wins``: a new frame replaces the oldest waiting one (live
    sources; counted in ``dropped``); otherwise ``put`` waits for room (files: back-pressure)."""

    def __init__(self, capacity: int, *, latest_wins: bool, wake: threading.Event):
        self.capacity = max(1, int(capacity))
        self.latest_wins = latest_wins
        self.dropped = 0
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._wake = wake
        self.closed = False
        self.error: str | None = None

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Add a frame; False when ``stop`` was set while waiting for room, or the buffer is closed."""
        with self._cond:
            if self.closed:
                return False
            while len(self._items) >= self.capacity:
                if self.latest_wins:
                    self._items.popleft()
                    self.dropped += 1
                    break
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            self._items.append(frame)
        self._wake.set()
        return True

    def take(self) -> Frame | None:
        with self._cond:
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify()
        return frame

    def close(self, error: str | None = None) -> None:
        """No more frames (the reader ended; ``error``: why it failed)."""
        with self._cond:
            self.closed, self.error = True, error
        self._wake.set()

    def seal(self) -> None:
        """Refuse further frames and forget waiting ones (the source is being finished: its counts are final)."""
        with self._cond:
            self.closed = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and drained."""
        with self._cond:
            return self.closed and not self._items


# --------------------------------------------------------------------------------------------------------
# subscriptions


class Subscription:
    """A consumer's bounded queue of events (and, with ``frames``, :class:`AnalysedFrame` objects).

    Iterate it (ends when the engine ends or :meth:`close` is called), or :meth:`get` with a timeout."""

    def __init__(self, engine: StreamEngine, maxsize: int, frames: bool):
        self.engine = engine
        self.frames = frames
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self.closed = False
        # set by the engine when it ends: the end is then known even if its marker found the queue full
        # (a consumer busy at shutdown must still see the end after draining, never wait forever)
        self.ended = threading.Event()

    def get(self, timeout: float | None = None) -> Any:
        """The next item; raises ``queue.Empty`` after ``timeout``, StopIteration at the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                if self.ended.is_set() and self.queue.empty():
                    self.closed = True
                    raise StopIteration from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            if item is _END:
                self.closed = True
                raise StopIteration
            return item

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.get()
            except StopIteration:
                return

    def close(self) -> None:
        """Stop receiving (the engine drops this subscription)."""
        self.engine._unsubscribe(self)
        self.closed = True


# --------------------------------------------------------------------------------------------------------
# per-source state (owned by the analysis thread, except the buffer and the status queue)


@dataclass
class _Bucket:
    start: float
    end: float
    people: dict[str, int]
    compliant: int = 0
    present_max: int = 0
    frames: int = 0
    faces_classified: int = 0
    dropped_at_start: int = 0
    lags: list[float] = field(default_factory=list)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(np.asarray(values), q)), 4)


def _lag_stats(values: Sequence[float]) -> LagStats:
    return LagStats(
        p50=_percentile(values, 50),
        p95=_percentile(values, 95),
        max=None if not values else round(float(max(values)), 4),
    )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class _Runner:
    """One source inside the engine: its reader, buffer, detector settings, tracker and counters."""

    def __init__(
        self, engine: StreamEngine, spec: SourceSpec, name: str, source: Any, kind: str, detector: MaskDetector
    ):
        self.engine, self.spec, self.name, self.source, self.kind = engine, spec, name, source, kind
        self.detector = detector
        self.live = kind == "stream" or spec.realtime
        config = engine.config
        self.buffer = FrameBuffer(1 if self.live else config.file_queue, latest_wins=self.live, wake=engine._wake)
        self.stop = threading.Event()
        self.statuses: queue.SimpleQueue[tuple[str, str | None, int]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.tracker: FaceTracker | None = None
        self.frames = 0
        self.counts = dict.fromkeys(engine.classes, 0)
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
        now = engine._clock()
        self.bucket = self._new_bucket(now)

    # -- capture thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._capture, name=f"maskwatch-capture-{self.name}", daemon=True)
        self.thread.start()

    def _frames(self) -> Iterator[Frame]:
        delivered, limit = 0, self.spec.max_frames
        while True:
            begin = time.monotonic()
            first: float | None = None  # the first frame's timestamp (a file may start further in)
            frames_before = self.source.stats.frames
            for frame in self._slideshow(self.source) if self.kind == "image" and self.spec.realtime else self.source:
                if self.spec.realtime and frame.timestamp is not None:  # play as a camera would deliver it
                    first = frame.timestamp if first is None else first
                    delay = begin + frame.timestamp - first - time.monotonic()
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

    # -- buckets -----------------------------------------------------------------------------------------

    def _new_bucket(self, now: float, dropped: int | None = None) -> _Bucket:
        interval = self.engine.config.stats_interval
        start = math.floor(now / interval) * interval
        dropped = self.buffer.dropped if dropped is None else dropped
        return _Bucket(start, start + interval, dict.fromkeys(self.engine.classes, 0), dropped_at_start=dropped)

    def flush_bucket(self, now: float, *, final: bool = False) -> StatsBucket:
        b = self.bucket
        dropped = self.buffer.dropped  # read once: the capture thread may drop more meanwhile (next bucket's)
        end = min(now, b.end) if final else b.end
        span = max(1e-6, end - max(b.start, self.started_wall))
        n_people = sum(b.people.values())
        event = StatsBucket(
            source=self.name,
            start=_utc(b.start),
            end=_utc(end),
            interval=self.engine.config.stats_interval,
            people=dict(b.people),
            n_people=n_people,
            compliant_people=b.compliant,
            compliance=None if n_people == 0 else round(b.compliant / n_people, 4),
            present_max=b.present_max,
            frames_analysed=b.frames,
            frames_dropped=dropped - b.dropped_at_start,
            faces_classified=b.faces_classified,
            analysed_fps=round(b.frames / span, 3),
            lag=_lag_stats(b.lags),
            final=final,
        )
        self.bucket = self._new_bucket(max(now, b.end), dropped)
        return event

    @property
    def output_fps(self) -> float:
        """Frames per second this source delivers (after stride / target FPS; a slideshow's rate)."""
        if self.kind == "image" and self.spec.realtime:
            return float(self.spec.target_fps or 5.0)
        return float(getattr(self.source, "output_fps", None) or self.spec.target_fps or 25.0)

    @property
    def started_wall(self) -> float:
        return self.engine._clock() - (time.monotonic() - self.started)


# --------------------------------------------------------------------------------------------------------
# the engine


class StreamEngine:
    """Runs sources concurrently on one shared :class:`~maskwatch.detection.pipeline.MaskDetector`.

    Args:
        detector: the face detector + classifier (its settings are the engine's defaults; presets per
            source share its models).
        config: :class:`EngineConfig`.
        capture_factory: opens videos and streams (default OpenCV); tests pass fakes.
        clock: wall clock for event times and stats buckets (``time.time``).
        snapshot_sink: with ``EngineConfig(snapshots=True)``: ``sink(source, track_id, rgb) -> reference``
            stores a person's best view (every face in it blurred unless ``snapshot_blur`` is off) when
            their track ends; the reference goes in the ``track_ended`` event's ``snapshot``.
    """

    def __init__(
        self,
        detector: MaskDetector,
        config: EngineConfig | None = None,
        *,
        capture_factory: CaptureFactory | None = None,
        clock: Callable[[], float] = time.time,
        snapshot_sink: Callable[[str, int, np.ndarray], str | None] | None = None,
        **options: Any,
    ) -> None:
        self.config = config or EngineConfig(**options)
        if config is not None and options:
            self.config = dataclasses.replace(config, **options)
        self.detector = detector
        self.classes = list(detector.classes)
        from maskwatch.core.contract import default_compliant_classes

        compliant = getattr(detector, "compliant_classes", None)  # the model's; an empty list is its word too
        self.compliant_classes = list(default_compliant_classes(self.classes) if compliant is None else compliant)
        self._capture_factory = capture_factory
        self._clock = clock
        self.snapshot_sink = snapshot_sink
        self._detectors: dict[str, MaskDetector] = {}
        self._runners: list[_Runner] = []
        self._pending: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._subscribers: list[Subscription] = []
        self._callbacks: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: dict[str, AnalysedFrame] = {}
        self._by_name: dict[str, _Runner] = {}  # every source added and not yet finished
        self._stop_deadline = math.inf
        self._rotation = 0
        self.summaries: dict[str, SourceSummary] = {}  # finished sources, by name

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        *,
        backend: str | None = None,
        detector_model: str | Path | None = None,
        threads: int = 2,
        detector_options: dict[str, Any] | None = None,
        **config: Any,
    ) -> StreamEngine:
        """An engine on :meth:`MaskDetector.load` (the bundled classifier and CenterFace by default)."""
        detector = MaskDetector.load(
            model, backend=backend, detector_model=detector_model, threads=threads, **(detector_options or {})
        )
        return cls(detector, EngineConfig(**config))

    # -- consumers -----------------------------------------------------------------------------------

    def events(self, *, frames: bool = False, maxsize: int | None = None) -> Subscription:
        """Subscribe now (call before :meth:`start` to miss nothing) and iterate the result. With
        ``frames`` the subscription also gets an :class:`AnalysedFrame` per analysed frame, in order with
        the events (its ``event`` is the frame's record)."""
        size = maxsize or (self.config.frame_queue if frames else self.config.subscriber_queue)
        subscription = Subscription(self, size, frames)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def subscribe(self, callback: Callable[[Any], None], *, frames: bool = False) -> Subscription:
        """Call ``callback(event)`` for every event, in order, from a thread of its own (a slow or failing
        callback cannot stall the analysis beyond its queue; its exceptions are logged)."""
        subscription = self.events(frames=frames)

        def pump() -> None:
            for item in subscription:
                try:
                    callback(item)
                except Exception:
                    log.exception("event callback %r failed", callback)

        thread = threading.Thread(target=pump, name="maskwatch-callback", daemon=True)
        thread.start()
        self._callbacks.append(thread)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def latest(self, name: str) -> AnalysedFrame | None:
        """The most recent analysed frame of a source (for live views)."""
        return self._latest.get(name)

    def source_stats(self) -> dict[str, SourceLive]:
        """Live figures per running source (dashboards poll this; buckets only come every interval)."""
        now = time.monotonic()
        out = {}
        for runner in list(self._runners):
            recent = list(runner.recent)
            window = [t for t, _ in recent if now - t <= 10.0]
            fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else 0.0
            lags = [lag for t, lag in recent if lag is not None and now - t <= 10.0]
            last = runner.engine._clock() - (now - recent[-1][0]) if recent else None
            out[runner.name] = SourceLive(
                name=runner.name,
                kind=runner.kind,
                state=runner.state,
                frames=runner.frames,
                dropped=runner.buffer.dropped,
                analysed_fps=round(fps, 2),
                lag_p95=_percentile(lags, 95),
                last_analysed=None if last is None else _utc(last),
                people_now=runner.present,
            )
        return out

    def _store_snapshot(self, runner: _Runner, track_id: int) -> str | None:
        """Hand a person's best (blurred) view to ``snapshot_sink``; its reference goes in the event."""
        view = runner.snapshots.pop(track_id, None)
        if view is None or self.snapshot_sink is None:
            return None
        try:
            return self.snapshot_sink(runner.name, track_id, view)
        except Exception:
            log.exception("%s: storing the snapshot of track %d failed", runner.name, track_id)
            return None

    @property
    def sources(self) -> list[str]:
        """Names of the sources running now."""
        return [r.name for r in self._runners]

    def source_states(self) -> dict[str, str]:
        return {r.name: r.state for r in self._runners}

    # -- control -------------------------------------------------------------------------------------

    def add_source(self, source: str | SourceSpec, *, name: str | None = None, **options: Any) -> str:
        """Add a source (before or while running) and return its name. Raises :class:`SourceError` at
        once for a source that cannot exist (no such file, unknown kind) or a name already in use."""
        spec = source if isinstance(source, SourceSpec) else SourceSpec(uri=source, name=name, **options)
        runner = self._make_runner(spec)
        with self._lock:
            if runner.name in self._by_name:
                raise SourceError(f"a source named {runner.name!r} is already running")
            self._by_name[runner.name] = runner
        self._pending.put(("add", runner))
        self._wake.set()
        return runner.name

    def remove_source(self, name: str, *, wait: float = 2.0) -> bool:
        """Stop a source gracefully (its tracks end, its bucket is flushed); True when that was done
        within ``wait`` seconds. Raises KeyError for an unknown name."""
        with self._lock:
            runner = self._by_name.get(name)
        if runner is None:
            raise KeyError(f"no source named {name!r}")
        runner.stop.set()
        self._pending.put(("remove", name))
        self._wake.set()
        if not self.running:
            return False
        return runner.removed.wait(wait)

    def start(self) -> None:
        """Start capturing and analysing (in background threads); returns at once."""
        if self._thread is not None:
            raise RuntimeError("the engine is already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="maskwatch-analysis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Graceful stop: open tracks end, last buckets are flushed, then subscriptions end. Waits up to
        ``timeout`` seconds (0: only asks, e.g. from the thread that reads the events, which must keep
        reading to receive the final events); True when the analysis thread has finished.

        A subscriber that stops reading gets the final events for at most ``max(timeout, 5)`` seconds;
        after that, events it has no room for are dropped (with a warning) so shutdown cannot hang."""
        self._stop_deadline = time.monotonic() + max(timeout, 5.0)
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the engine has ended (all sources done with ``stop_when_done``, or :meth:`stop`)."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Start and wait until done (``stop_when_done``) or stopped; Ctrl-C stops gracefully."""
        self.start()
        try:
            while not self.join(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
            raise

    # -- building runners ----------------------------------------------------------------------------

    def detector_for(self, preset: str) -> MaskDetector:
        """The shared detector configured with a preset's views (models shared, settings per preset)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if preset not in self._detectors:
            self._detectors[preset] = self.detector.configured(scales=preset)
        return self._detectors[preset]

    def _make_runner(self, spec: SourceSpec) -> _Runner:
        config = self.config
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
        detector = self.detector_for(preset)
        source: ImageSource | VideoSource | StreamSource
        if kind == "image":
            source = ImageSource(paths)
        elif kind == "video":
            source = VideoSource(
                str(value),
                stride=spec.stride,
                target_fps=spec.target_fps,
                capture_factory=self._capture_factory,
                start=spec.start_frame,
            )
        else:
            source = StreamSource(
                value if isinstance(value, int) else str(value),
                target_fps=spec.target_fps,
                backoff=config.backoff,
                max_backoff=config.max_backoff,
                give_up_after=config.give_up_after,
                max_frames=spec.max_frames,
                capture_factory=self._capture_factory,
            )
        source.name = name
        runner = _Runner(self, spec, name, source, kind, detector)
        if isinstance(source, StreamSource):
            source.stop, source.on_status = runner.stop, runner.on_status
        return runner

    def _tracker_for(self, runner: _Runner) -> FaceTracker:
        """A source's tracker, made at its first frame (a video's frame rate is known once it is open)."""
        source, config = runner.source, self.config
        if isinstance(source, StreamSource):
            rate = runner.spec.target_fps or source.fps or 25.0
        else:
            rate = runner.output_fps
        return FaceTracker(
            self.classes,
            frame_rate=rate,
            min_frames=config.min_track_frames,
            keep_tracks=0,  # people leave as track_ended events; a 24/7 source keeps no list of them
            classify_every=None if runner.detector.classify_tta else config.classify_every,
            decided_votes=config.decided_votes,
            decided_probability=config.decided_probability,
            compliant_classes=self.compliant_classes,
        )

    # -- the analysis thread ---------------------------------------------------------------------------

    def _publish(self, item: Any, *, audience: str = "all") -> None:
        """Hand an item to the subscribers (``audience``: ``all``, ``frames`` — those that asked for
        AnalysedFrame objects — or ``plain``, the others), waiting while a queue is full (back-pressure),
        for a bounded time once stopping."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            if (audience == "frames" and not subscription.frames) or (audience == "plain" and subscription.frames):
                continue
            while True:
                try:
                    subscription.queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    if subscription.closed:
                        break
                    if self._stop.is_set() and time.monotonic() > self._stop_deadline:
                        log.warning("a subscriber is not reading; an event was not delivered to it")
                        break

    def _emit_status(self, runner: _Runner, state: str, reason: str | None = None, attempts: int = 0) -> None:
        if state == runner.state and state not in ("reconnecting",) and reason is None:
            return
        runner.state = state
        self._publish(SourceStatus(source=runner.name, state=state, kind=runner.kind, reason=reason, attempts=attempts))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._apply_control()
                self._wake.clear()
                batch: list[tuple[_Runner, Frame]] = []
                runners = self._runners
                if runners:
                    offset = self._rotation % len(runners)
                    self._rotation += 1
                    for runner in itertools.chain(runners[offset:], runners[:offset]):
                        self._drain_statuses(runner)
                        frame = runner.buffer.take()
                        if frame is not None:
                            batch.append((runner, frame))
                if batch:
                    try:
                        self._analyse(batch)
                    except Exception as exc:
                        log.exception("analysis of a round of %d frame(s) failed", len(batch))
                        for runner, frame in batch:
                            runner.source.stats.skip(f"{runner.name}: frame {frame.index}: {type(exc).__name__}: {exc}")
                now = self._clock()
                for runner in list(self._runners):
                    if runner.buffer.finished:
                        self._finish(runner, error=runner.buffer.error)
                    else:
                        self._tick(runner, now)
                if not batch:
                    if self.config.stop_when_done and not self._runners and self._pending.empty():
                        break
                    self._wake.wait(0.05)
        except Exception:
            log.exception("the stream engine's analysis failed")
        finally:
            self._shutdown()

    def _apply_control(self) -> None:
        while True:
            try:
                action, value = self._pending.get_nowait()
            except queue.Empty:
                return
            if action == "add":
                runner: _Runner = value
                if runner.stop.is_set():  # removed before it started
                    self._forget(runner)
                    continue
                self._runners.append(runner)
                self._emit_status(runner, "connecting")
                runner.start()
            elif action == "remove":
                for runner in [r for r in self._runners if r.name == value]:
                    self._finish(runner, reason="removed")

    def _drain_statuses(self, runner: _Runner) -> None:
        while True:
            try:
                state, reason, attempts = runner.statuses.get_nowait()
            except queue.Empty:
                return
            if state == "live":
                runner.last_frame_at = time.monotonic()
                runner.stalled = False
            self._emit_status(runner, state, reason, attempts)

    def _tick(self, runner: _Runner, now: float) -> None:
        """Flush a due stats bucket; report a live source that has stopped delivering."""
        while now >= runner.bucket.end:
            self._publish(runner.flush_bucket(now))
        if (
            runner.live
            and runner.state == "live"
            and not runner.stalled
            and time.monotonic() - runner.last_frame_at > self.config.stall_timeout
        ):
            runner.stalled = True
            self._emit_status(runner, "lost", f"no frame for {self.config.stall_timeout:g} s")

    def _finish(self, runner: _Runner, *, error: str | None = None, reason: str | None = None) -> None:
        """A source is done (ended, failed, removed or the engine stops): end its tracks, flush its
        bucket, report its summary and status."""
        if runner not in self._runners:
            return
        self._runners.remove(runner)
        runner.stop.set()
        runner.buffer.seal()
        self._drain_statuses(runner)
        now = self._clock()
        if runner.tracker is not None:
            runner.tracker.finish()
            self._publish_transitions(runner, runner.tracker.pop_transitions(), now)
        self._publish(runner.flush_bucket(now, final=True))
        summary = self._summary(runner, error)
        self.summaries[runner.name] = summary
        self._publish(summary)
        self._emit_status(runner, "failed" if error else "ended", error or reason or "done")
        self._forget(runner)

    def _forget(self, runner: _Runner) -> None:
        with self._lock:
            if self._by_name.get(runner.name) is runner:
                del self._by_name[runner.name]
        self._latest.pop(runner.name, None)
        runner.removed.set()

    def _summary(self, runner: _Runner, error: str | None) -> SourceSummary:
        from maskwatch.core.contract import compliance_rate

        stats = runner.source.stats
        people = None
        if runner.tracker is not None:
            s = runner.tracker.summary()
            people = PeopleSummary(
                n_people=s["n_tracks"],
                counts=s["counts"],
                compliance=_round(compliance_rate(s["counts"], self.classes, self.compliant_classes)),
                n_short_tracks_ignored=s["n_short_tracks_ignored"],
            )
        seconds = time.monotonic() - runner.started
        return SourceSummary(
            source=runner.name,
            kind=runner.kind,
            frames=runner.frames,
            skipped=stats.skipped,
            skipped_reasons=list(stats.reasons),
            dropped=runner.buffer.dropped,
            reconnects=stats.reconnects,
            attempts=getattr(stats, "attempts", 0),
            counts=dict(runner.counts),
            compliance=_round(compliance_rate(runner.counts, self.classes, self.compliant_classes)),
            people=people,
            seconds=round(seconds, 3),
            analysed_fps=round(runner.frames / seconds, 3) if seconds > 0 else None,
            lag=_lag_stats(list(runner.lags)),
            error=error,
        )

    def _shutdown(self) -> None:
        for runner in list(self._runners):
            self._finish(runner, reason="engine stopped")
        while True:  # sources added but never picked up
            try:
                action, value = self._pending.get_nowait()
            except queue.Empty:
                break
            if action == "add":
                value.stop.set()
                self._forget(value)
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscription in subscribers:
            subscription.ended.set()
            with contextlib.suppress(queue.Full):
                subscription.queue.put_nowait(_END)
        self._done.set()

    # -- analysing a round of frames ----------------------------------------------------------------------

    def _analyse(self, batch: list[tuple[_Runner, Frame]]) -> None:
        work = []
        groups: dict[int, tuple[Any, list[np.ndarray]]] = {}  # one batch per classifier (fp32 / INT8 presets)
        for runner, frame in batch:
            detector = runner.detector
            try:
                boxes, scores, marks = detector.find_faces(frame.image)
            except Exception as exc:
                runner.source.stats.skip(f"{runner.name}: frame {frame.index}: {type(exc).__name__}: {exc}")
                continue
            keep = scores >= detector.score_threshold
            boxes, scores, marks = boxes[keep], scores[keep], marks[keep]
            if runner.wants_tracker and runner.tracker is None:
                runner.tracker = self._tracker_for(runner)
            tracker = runner.tracker
            ids: list[int | None] = tracker.assign(boxes, scores) if tracker is not None else [None] * len(scores)
            need = [k for k, i in enumerate(ids) if tracker is None or tracker.wants_classification(i)]
            classifier = detector.active_classifier
            crops = groups.setdefault(id(classifier), (classifier, []))[1]
            first = len(crops)
            if need:
                crops.extend(detector.face_views(frame.image, boxes[need]))
            work.append((runner, frame, boxes, scores, marks, ids, need, id(classifier), first))
        probabilities = {
            key: np.asarray(classifier.predict_proba(crops), dtype=np.float64)
            if crops
            else np.zeros((0, len(self.classes)))
            for key, (classifier, crops) in groups.items()
        }
        now = self._clock()
        done = time.monotonic()
        for runner, frame, boxes, scores, marks, ids, need, key, first in work:
            views = runner.detector.views_per_face
            p = (
                probabilities[key][first : first + len(need) * views]
                .reshape(len(need), views, len(self.classes))
                .mean(axis=1)
            )
            self._finish_frame(runner, frame, boxes, scores, marks, ids, dict(zip(need, p, strict=True)), now, done)

    def _finish_frame(
        self,
        runner: _Runner,
        frame: Frame,
        boxes: np.ndarray,
        scores: np.ndarray,
        marks: np.ndarray,
        ids: list[int | None],
        classified: dict[int, np.ndarray],
        now: float,
        done: float,
    ) -> None:
        tracker, classes, gate = runner.tracker, self.classes, runner.detector.min_confidence
        faces: list[FaceResult] = []
        was_classified: list[bool] = []
        for k, (box, score, lm) in enumerate(zip(boxes, scores, marks, strict=True)):
            track_id = ids[k]
            if k in classified:
                p = classified[k]
            else:
                verdict = tracker.verdict(track_id) if tracker is not None and track_id is not None else None
                if verdict is None:
                    continue
                p = np.array([verdict[1][c] for c in classes])
            best = int(np.argmax(p))
            face = FaceResult(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                score=float(score),
                label=classes[best],
                probability=float(p[best]),
                probabilities={c: float(v) for c, v in zip(classes, p, strict=True)},
                landmarks=tuple((float(x), float(y)) for x, y in lm),
            )
            if tracker is not None and track_id is not None:
                face = tracker.observe(
                    track_id, face, frame.index, frame.timestamp, classified=k in classified, wall=now
                )
                if self.config.snapshots and tracker.tracks[track_id].best_box == face.box:
                    runner.snapshots[track_id] = _snapshot(frame.image, face.box, boxes, self.config.snapshot_blur)
            if k in classified and face.confidence < gate:
                continue
            faces.append(face)
            was_classified.append(k in classified)
        if tracker is not None:
            tracker.end_frame()
            self._publish_transitions(runner, tracker.pop_transitions(), now)
            for gone in [t for t in runner.snapshots if t not in tracker.tracks]:  # short tracks, never persons
                del runner.snapshots[gone]
        result = FrameResult(
            faces=faces,
            classes=list(classes),
            width=int(frame.image.shape[1]),
            height=int(frame.image.shape[0]),
            source=runner.name,
            frame=frame.index,
            timestamp=frame.timestamp,
            compliant_classes=tuple(self.compliant_classes),
        )
        runner.frames += 1
        for name, count in result.counts.items():
            runner.counts[name] = runner.counts.get(name, 0) + count
        lag = None
        if runner.live and frame.captured is not None:
            lag = max(0.0, done - frame.captured)
            runner.lags.append(lag)
        runner.last_frame_at = time.monotonic()
        runner.recent.append((runner.last_frame_at, lag))
        if runner.stalled:
            runner.stalled = False
            self._emit_status(runner, "live", "frames again")
        elif runner.state != "live":
            self._emit_status(runner, "live")
        while now >= runner.bucket.end:
            self._publish(runner.flush_bucket(now))
        bucket = runner.bucket
        bucket.frames += 1
        bucket.faces_classified += len(classified)
        bucket.present_max = max(bucket.present_max, len(faces))
        runner.present = len(faces)
        if lag is not None:
            bucket.lags.append(lag)
        with self._lock:
            want_frames = any(s.frames for s in self._subscribers)
        if want_frames or runner.live or self.config.emit_frames:
            event = _frame_event(runner, frame, result, was_classified, lag)
            analysed = AnalysedFrame(runner.name, frame, result, event, runner.output_fps, len(runner.source) or None)
            self._latest[runner.name] = analysed
            if want_frames:
                self._publish(analysed, audience="frames")
            if self.config.emit_frames:
                self._publish(event, audience="plain")

    def _publish_transitions(self, runner: _Runner, transitions: list[Transition], now: float) -> None:
        for t in transitions:
            track = t.track
            if t.kind == "started":
                self._publish(
                    TrackStarted(
                        source=runner.name,
                        track_id=track.track_id,
                        label=track.label,
                        probability=round(track.probability, 4),
                        frame=track.last_frame,
                        timestamp=_round(track.last_timestamp),
                        box=_box(track.best_box) or (0.0, 0.0, 0.0, 0.0),
                    )
                )
            elif t.kind == "changed":
                self._publish(
                    TrackChanged(
                        source=runner.name,
                        track_id=track.track_id,
                        previous_label=t.previous or "",
                        label=track.label,
                        probability=round(track.probability, 4),
                        frame=track.last_frame,
                        timestamp=_round(track.last_timestamp),
                    )
                )
            else:
                compliant = track.label in self.compliant_classes
                while now >= runner.bucket.end:
                    self._publish(runner.flush_bucket(now))
                runner.bucket.people[track.label] = runner.bucket.people.get(track.label, 0) + 1
                runner.bucket.compliant += int(compliant)
                first = track.first_seen if track.first_seen is not None else now
                last = track.last_seen if track.last_seen is not None else now
                self._publish(
                    TrackEnded(
                        source=runner.name,
                        track_id=track.track_id,
                        label=track.label,
                        probability=round(track.probability, 4),
                        probabilities={k: round(v, 4) for k, v in track.mean_probabilities.items()},
                        compliant=compliant,
                        votes=dict(track.frame_votes),
                        n_frames=track.n_frames,
                        n_classified=track.n_classified,
                        first_frame=track.first_frame,
                        last_frame=track.last_frame,
                        first_timestamp=_round(track.first_timestamp),
                        last_timestamp=_round(track.last_timestamp),
                        first_seen=_utc(first),
                        last_seen=_utc(last),
                        best_score=round(track.best_score, 4),
                        best_box=_box(track.best_box),
                        snapshot=self._store_snapshot(runner, track.track_id),
                    )
                )


def _snapshot(image: np.ndarray, box: Sequence[float], boxes: np.ndarray, blur: bool) -> np.ndarray:
    """A person's view: their face box grown by half its size on each side, cut from the frame, with every
    face in it blurred when ``blur`` (privacy by default)."""
    from maskwatch.detection.geometry import crop_box
    from maskwatch.detection.privacy import blur_faces

    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop_box(box, 0.5, w, h)
    if blur:
        inside = [
            (b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0)
            for b in boxes
            if b[2] > x0 and b[0] < x1 and b[3] > y0 and b[1] < y1
        ]
        return blur_faces(image[y0:y1, x0:x1], inside)
    return image[y0:y1, x0:x1].copy()


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _box(box: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    return None if box is None else tuple(round(float(v), 1) for v in box)  # type: ignore[return-value]


def _frame_event(
    runner: _Runner, frame: Frame, result: FrameResult, classified: list[bool], lag: float | None
) -> FrameAnalysed:
    faces = [
        FaceRecord(
            box=_box(f.box) or (0.0, 0.0, 0.0, 0.0),
            score=round(f.score, 4),
            label=f.label,
            probability=round(f.probability, 4),
            probabilities={k: round(v, 4) for k, v in f.probabilities.items()},
            confidence=round(f.confidence, 4),
            landmarks=[(round(x, 1), round(y, 1)) for x, y in f.landmarks],
            classified=c,
            track_id=f.track_id,
            track_label=f.track_label,
            track_probability=_round(f.track_probability),
        )
        for f, c in zip(result.faces, classified, strict=True)
    ]
    return FrameAnalysed(
        source=runner.name,
        frame=frame.index,
        timestamp=_round(frame.timestamp, 3),
        path=frame.source if runner.kind == "image" else None,
        width=result.width,
        height=result.height,
        n_faces=len(result.faces),
        counts=result.counts,
        compliance=_round(result.compliance),
        faces=faces,
        lag=_round(lag),
    )
