"""The stream engine: many sources at once, one face detector and one classifier, typed events out.

    >>> from maskwatch.stream import StreamEngine                               # doctest: +SKIP
    >>> engine = StreamEngine.load(stop_when_done=True)                          # doctest: +SKIP
    >>> engine.add_source("rtsp://door/stream", name="door")                     # doctest: +SKIP
    >>> engine.add_source("hall.mp4", name="hall")                               # doctest: +SKIP
    >>> events = engine.events()        # subscribe before start: nothing is missed  # doctest: +SKIP
    >>> engine.start()                                                           # doctest: +SKIP
    >>> for event in events:            # TrackStarted, TrackEnded, StatsBucket, ... until the engine ends
    ...     print(event.to_json())                                               # doctest: +SKIP

How it runs (one process, any number of sources), and where each part lives:

* **A capture thread per source** (:mod:`~maskwatch.stream.runner`) reads frames into that source's buffer
  (:mod:`~maskwatch.stream.buffers`): a live source keeps only its latest frame, a file a small queue
  that makes its reader wait (back-pressure).
* **One analysis thread** owns the models. Each round it takes at most one frame from every source that has
  one, round-robin (fair: a busy source cannot starve the others) and analyses them together
  (:mod:`~maskwatch.stream.analysis`: faces, ByteTrack ids, one classifier batch, the classification
  budget). Which detector a source runs comes from a detector factory (:mod:`~maskwatch.stream.detectors`).
* **Events** (:mod:`maskwatch.core.events`, built in :mod:`~maskwatch.stream.reporting`) go to every
  subscriber's bounded queue (:mod:`~maskwatch.stream.subscriptions`); a full queue makes the analysis wait
  (back-pressure; a live source then drops frames instead of lagging). Consumers iterate
  (:meth:`StreamEngine.events`) or register callbacks (:meth:`StreamEngine.subscribe`).
* **Control from any thread** (this module): :meth:`~StreamEngine.start`, :meth:`~StreamEngine.stop`
  (graceful: open tracks end, the last stats buckets are flushed; returns within about a second),
  :meth:`~StreamEngine.add_source` / :meth:`~StreamEngine.remove_source` while running. A source that fails
  or hangs never stops the others: its failure is a ``source_status`` event, its hang a ``lost`` one.
  Settings: :class:`~maskwatch.stream.config.EngineConfig`.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.core.contract import default_compliant_classes
from maskwatch.core.events import ENDED_BY_STOP, FrameAnalysed, SourceStatus, SourceSummary
from maskwatch.core.timeutil import utc
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.detection.presets import check_preset
from maskwatch.detection.results import FrameResult
from maskwatch.stream.analysis import FrameOutcome, analyse_round
from maskwatch.stream.config import EngineConfig, SourceSpec
from maskwatch.stream.detectors import DetectorFactory, PresetDetectors
from maskwatch.stream.reporting import frame_event, person_event
from maskwatch.stream.runner import SourceLive, SourceRunner, make_runner
from maskwatch.stream.sources import CaptureFactory, Frame, SourceError
from maskwatch.stream.subscriptions import Audience, Subscribers, Subscription
from maskwatch.stream.tracking import Transition

__all__ = ["AnalysedFrame", "EngineConfig", "SourceLive", "SourceSpec", "StreamEngine", "Subscription"]

log = logging.getLogger("maskwatch")


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


SnapshotSink = Callable[[str, int, np.ndarray], "str | None"]


class StreamEngine:
    """Runs sources concurrently on one shared :class:`~maskwatch.detection.pipeline.MaskDetector`.

    Args:
        detector: the face detector + classifier (its settings are the engine's defaults; presets per
            source share its models).
        config: :class:`EngineConfig` (``options``: fields of it, over ``config``).
        detectors: which detector a source of a preset runs (``preset -> MaskDetector``); default
            :class:`~maskwatch.stream.detectors.PresetDetectors` of ``detector``.
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
        detectors: DetectorFactory | None = None,
        capture_factory: CaptureFactory | None = None,
        clock: Callable[[], float] = time.time,
        snapshot_sink: SnapshotSink | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = EngineConfig(**options)
        elif options:
            config = EngineConfig.model_validate({**config.model_dump(), **options})
        self.config = config
        self.detector = detector
        self.detectors: DetectorFactory = detectors or PresetDetectors(detector)
        self.classes = list(detector.classes)
        compliant = getattr(detector, "compliant_classes", None)  # the model's; an empty list is its word too
        self.compliant_classes = list(default_compliant_classes(self.classes) if compliant is None else compliant)
        self._capture_factory = capture_factory
        self._clock = clock
        self.snapshot_sink = snapshot_sink
        self._runners: list[SourceRunner] = []
        self._pending: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._subscribers = Subscribers(give_up=self._past_stop_deadline)
        self._callbacks: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: dict[str, AnalysedFrame] = {}
        self._by_name: dict[str, SourceRunner] = {}  # every source added and not yet finished
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
        config: EngineConfig | None = None,
        **options: Any,
    ) -> StreamEngine:
        """An engine on :meth:`MaskDetector.load` (the bundled classifier and CenterFace by default), with
        ``config`` (and ``options``, fields of :class:`EngineConfig` over it)."""
        detector = MaskDetector.load(
            model, backend=backend, detector_model=detector_model, threads=threads, **(detector_options or {})
        )
        return cls(detector, config, **options)

    # -- consumers -----------------------------------------------------------------------------------

    def events(self, *, frames: bool = False, maxsize: int | None = None) -> Subscription:
        """Subscribe now (call before :meth:`start` to miss nothing) and iterate the result. With
        ``frames`` the subscription also gets an :class:`AnalysedFrame` per analysed frame, in order with
        the events (its ``event`` is the frame's record)."""
        size = maxsize or (self.config.frame_queue if frames else self.config.subscriber_queue)
        return self._subscribers.add(size, frames)

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

    def latest(self, name: str) -> AnalysedFrame | None:
        """The most recent analysed frame of a source (for live views)."""
        return self._latest.get(name)

    def source_stats(self) -> dict[str, SourceLive]:
        """Live figures per running source (dashboards poll this; buckets only come every interval)."""
        now = time.monotonic()
        return {runner.name: runner.live_figures(now) for runner in list(self._runners)}

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
        runner = make_runner(
            spec, config=self.config, detectors=self.detector_for, classes=self.classes, clock=self._clock,
            wake=self._wake, capture_factory=self._capture_factory,
        )  # fmt: skip
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

    def detector_for(self, preset: str) -> MaskDetector:
        """The detector a source of ``preset`` runs (from the detector factory; models shared)."""
        return self.detectors(check_preset(preset))

    # -- the analysis thread ---------------------------------------------------------------------------

    def _past_stop_deadline(self) -> bool:
        return self._stop.is_set() and time.monotonic() > self._stop_deadline

    def _publish(self, item: Any, *, audience: Audience = "all") -> None:
        self._subscribers.publish(item, audience)

    def _emit_status(
        self, runner: SourceRunner, state: str, reason: str | None = None, attempts: int = 0,
        retry_in: float | None = None,
    ) -> None:  # fmt: skip
        """Record a source's state and publish it: every change, every ``reconnecting`` attempt, a repeated
        state only with a new reason; a ``failed`` source's further attempts only update its live figures
        (:meth:`source_stats`), so a camera down for days does not flood its consumers."""
        repeated = state == runner.state
        next_attempt = None if retry_in is None else self._clock() + retry_in
        runner.state, runner.reason, runner.attempts, runner.next_attempt = state, reason, attempts, next_attempt
        if repeated and (state == "failed" or (state != "reconnecting" and reason is None)):
            return
        when = None if next_attempt is None else utc(next_attempt)
        status = SourceStatus(
            source=runner.name,
            state=state,
            kind=runner.kind,
            reason=reason,
            attempts=attempts,
            next_attempt=when,
            color_mode=runner.color.mode,
        )
        self._publish(status)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._apply_control()
                self._wake.clear()
                batch: list[tuple[SourceRunner, Frame]] = []
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
                    self._analyse(batch)
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

    def _analyse(self, batch: list[tuple[SourceRunner, Frame]]) -> None:
        try:
            outcomes = analyse_round(
                batch, compliant_classes=self.compliant_classes, snapshots=self.config.snapshots,
                snapshot_blur=self.config.snapshot_blur, clock=self._clock,
            )  # fmt: skip
            for outcome in outcomes:
                self._account(outcome)
        except Exception as exc:
            log.exception("analysis of a round of %d frame(s) failed", len(batch))
            for runner, frame in batch:
                runner.source.stats.skip(f"{runner.name}: frame {frame.index}: {type(exc).__name__}: {exc}")

    def _account(self, outcome: FrameOutcome) -> None:
        """Count an analysed frame and publish what it produced: people's events, due buckets, the frame."""
        runner, frame, result, now = outcome.runner, outcome.frame, outcome.result, outcome.wall
        self._publish_people(runner, outcome.transitions, now)
        runner.frames += 1
        for name, count in result.counts.items():
            runner.counts[name] = runner.counts.get(name, 0) + count
        lag = None
        if runner.live and frame.captured is not None:
            lag = max(0.0, outcome.done - frame.captured)
            runner.lags.append(lag)
        runner.last_frame_at = time.monotonic()
        runner.recent.append((runner.last_frame_at, lag))
        if runner.stalled:
            runner.stalled = False
            self._emit_status(runner, "live", "frames again")
        elif runner.state != "live":
            self._emit_status(runner, "live")
        for due in runner.due_buckets(now):
            self._publish(due)
        bucket = runner.bucket
        bucket.frames += 1
        bucket.faces_classified += int(result.candidates.classified.sum())
        bucket.present_max = max(bucket.present_max, len(result.faces))
        runner.present = len(result.faces)
        if lag is not None:
            bucket.lags.append(lag)
        want_frames = self._subscribers.want_frames
        if want_frames or runner.live or self.config.emit_frames:
            path = frame.source if runner.kind == "image" else None
            event = frame_event(runner.name, frame.index, frame.timestamp, path, result, lag)
            analysed = AnalysedFrame(runner.name, frame, result, event, runner.output_fps, len(runner.source) or None)
            self._latest[runner.name] = analysed
            if want_frames:
                self._publish(analysed, audience="frames")
            if self.config.emit_frames:
                self._publish(event, audience="plain")

    def _publish_people(self, runner: SourceRunner, transitions: Sequence[Transition], now: float) -> None:
        """People's events; an ended person is counted in the bucket holding ``now`` (flushing due ones)."""
        for t in transitions:
            snapshot = None
            if t.kind == "ended":
                for bucket in runner.due_buckets(now):
                    self._publish(bucket)
                label = t.track.label
                runner.bucket.people[label] = runner.bucket.people.get(label, 0) + 1
                runner.bucket.compliant += int(label in self.compliant_classes)
                snapshot = self._store_snapshot(runner, t.track.track_id)
            self._publish(
                person_event(runner.name, t, now=now, compliant_classes=self.compliant_classes, snapshot=snapshot)
            )

    def _store_snapshot(self, runner: SourceRunner, track_id: int) -> str | None:
        """Hand a person's best (blurred) view to ``snapshot_sink``; its reference goes in the event."""
        view = runner.snapshots.pop(track_id, None)
        if view is None or self.snapshot_sink is None:
            return None
        try:
            return self.snapshot_sink(runner.name, track_id, view)
        except Exception:
            log.exception("%s: storing the snapshot of track %d failed", runner.name, track_id)
            return None

    def _apply_control(self) -> None:
        while True:
            try:
                action, value = self._pending.get_nowait()
            except queue.Empty:
                return
            if action == "add":
                runner: SourceRunner = value
                if runner.stop.is_set():  # removed before it started
                    self._forget(runner)
                    continue
                self._runners.append(runner)
                self._emit_status(runner, "connecting")
                runner.start()
            elif action == "remove":
                for runner in [r for r in self._runners if r.name == value]:
                    self._finish(runner, reason="removed")

    def _drain_statuses(self, runner: SourceRunner) -> None:
        while True:
            try:
                report = runner.statuses.get_nowait()
            except queue.Empty:
                return
            if report.state == "live":
                runner.last_frame_at = time.monotonic()
                runner.stalled = False
            self._emit_status(runner, report.state, report.reason, report.attempts, report.retry_in)

    def _tick(self, runner: SourceRunner, now: float) -> None:
        """Flush a due stats bucket; report a live source that has stopped delivering."""
        for bucket in runner.due_buckets(now):
            self._publish(bucket)
        if (
            runner.live
            and runner.state == "live"
            and not runner.stalled
            and time.monotonic() - runner.last_frame_at > self.config.stall_timeout
        ):
            runner.stalled = True
            self._emit_status(runner, "lost", f"no frame for {self.config.stall_timeout:g} s")

    def _finish(self, runner: SourceRunner, *, error: str | None = None, reason: str | None = None) -> None:
        """A source is done (ended, failed, removed or the engine stops): end its tracks, flush its
        bucket, report its summary and status."""
        if runner not in self._runners:
            return
        self._runners.remove(runner)
        runner.close(2.0)  # its decoder process ends now; a file's capture thread is joined
        self._drain_statuses(runner)
        now = self._clock()
        if runner.tracker is not None:
            runner.tracker.finish()
            self._publish_people(runner, runner.tracker.pop_transitions(), now)
        self._publish(runner.flush_bucket(now, final=True))
        summary = runner.summary(error, self.compliant_classes)
        self.summaries[runner.name] = summary
        self._publish(summary)
        self._emit_status(runner, "failed" if error else "ended", error or reason or "done")
        self._forget(runner)

    def _forget(self, runner: SourceRunner) -> None:
        with self._lock:
            if self._by_name.get(runner.name) is runner:
                del self._by_name[runner.name]
        self._latest.pop(runner.name, None)
        runner.removed.set()

    def _shutdown(self) -> None:
        for runner in list(self._runners):
            self._finish(runner, reason=ENDED_BY_STOP)
        while True:  # sources added but never picked up
            try:
                action, value = self._pending.get_nowait()
            except queue.Empty:
                break
            if action == "add":
                value.stop.set()
                self._forget(value)
        self._subscribers.end()
        self._done.set()
