"""Live data for the dashboard: a fan-out hub for server-sent events, each camera's state as the engine last
reported it, and the 1-second loop that refreshes the engine's live figures and pushes a ``live`` message
(:class:`LiveSnapshot`) to every SSE client.

:class:`Live` is the component (started after the engine, stopped before it); :class:`Hub` and
:class:`LiveState` are its parts, also handed to the event pipeline and the alert engine (which publish).
Live views are encoded once per analysed frame and blur mode (:class:`FrameJpegs`) and shared by every
viewer; the streams a token may hold open at once are capped (:class:`StreamSlots`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from maskwatch.core.names import NODE_SEPARATOR
from maskwatch.core.redaction import redact

if TYPE_CHECKING:
    from maskwatch.service.metrics import Metrics
    from maskwatch.service.storage.cameras import StoredStatus
    from maskwatch.service.storage.ingest import Ingestor
    from maskwatch.stream import AnalysedFrame, StreamEngine

__all__ = [
    "SSE_TYPES",
    "CameraLive",
    "CameraNow",
    "FrameJpegs",
    "Hub",
    "Live",
    "LiveSnapshot",
    "LiveState",
    "StreamSlots",
    "event_for_client",
]

log = logging.getLogger("maskwatch.service")

#: engine event types pushed to SSE clients as they come (besides ``alert`` and ``live``)
SSE_TYPES = ("track_started", "track_ended", "stats", "source_status")


class Hub:
    """Publish from any thread; each SSE client reads its own bounded asyncio queue (a slow client loses
    messages, counted, and never slows the others)."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._clients: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = []
        self._lock = threading.Lock()
        self.dropped = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, kind: str, data: Any) -> None:
        message = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
        with self._lock:
            clients = list(self._clients)
        for loop, q in clients:
            try:
                loop.call_soon_threadsafe(self._put, q, message)
            except RuntimeError:  # loop closed
                self._remove(loop, q)

    def _put(self, q: asyncio.Queue[str], message: str) -> None:
        try:
            q.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    def _remove(self, loop: asyncio.AbstractEventLoop, q: asyncio.Queue[str]) -> None:
        with self._lock:
            if (loop, q) in self._clients:
                self._clients.remove((loop, q))

    async def stream(
        self,
        hello: Mapping[str, Any],
        stopped: Callable[[], bool] | None = None,
        keepalive: float = 15.0,
        limit: int | None = None,
    ) -> AsyncIterator[str]:
        """The SSE text of one client: a hello, then every message, keep-alive comments when quiet; ends
        when ``stopped()`` turns true (service shutdown) or after ``limit`` messages (tests)."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[str] = asyncio.Queue(self.maxsize)
        with self._lock:
            self._clients.append((loop, q))
        try:
            yield f"retry: 2000\nevent: hello\ndata: {json.dumps(dict(hello), default=str)}\n\n"
            quiet, sent = 0.0, 0
            while not (stopped is not None and stopped()) and (limit is None or sent < limit):
                try:
                    yield await asyncio.wait_for(q.get(), 1.0)
                    quiet, sent = 0.0, sent + 1
                except TimeoutError:
                    quiet += 1.0
                    if quiet >= keepalive:
                        quiet = 0.0
                        yield ": keepalive\n\n"
        finally:
            self._remove(loop, q)


class StreamSlots:
    """Live streams (MJPEG views and SSE) each API token holds open, at most ``per_key`` at once."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def open(self, key: Hashable) -> Callable[[], None] | None:
        """A slot for ``key``: its release function (safe to call more than once), or None when ``key``
        holds ``per_key`` streams already."""
        with self._lock:
            if self._open.get(key, 0) >= self.per_key:
                return None
            self._open[key] = self._open.get(key, 0) + 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                left = self._open.get(key, 0) - 1
                if left > 0:
                    self._open[key] = left
                else:
                    self._open.pop(key, None)

        return release

    def held(self, key: Hashable) -> int:
        with self._lock:
            return self._open.get(key, 0)


async def released_after(parts: AsyncIterator[Any], release: Callable[[], None]) -> AsyncIterator[Any]:
    """``parts``, then ``release()`` when the stream ends, fails or the client leaves (and, should the
    response never start, when the generator is collected)."""

    async def run() -> AsyncIterator[Any]:
        try:
            async for part in parts:
                yield part
        finally:
            release()

    stream = run()
    weakref.finalize(stream, release)
    return stream


class FrameJpegs:
    """The JPEG of each camera's latest analysed frame, per blur mode, encoded once and shared: every
    MJPEG viewer and ``latest.jpg`` of a camera get the same bytes, so N viewers cost one encode per frame.
    ``render(frame, blur)`` is the one place that blurs and encodes (:func:`maskwatch.service.media.render_jpeg`);
    this class only decides how often it runs."""

    def __init__(self, render: Callable[[AnalysedFrame, bool], bytes]) -> None:
        self.render = render
        self.encoded = 0  # encodes so far (tests, metrics)
        self._latest: dict[tuple[str, bool], tuple[AnalysedFrame, bytes]] = {}
        self._locks: dict[tuple[str, bool], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str, frame: AnalysedFrame, blur: bool) -> bytes:
        """``frame``'s JPEG (``blur``: faces blurred), encoded now only if nobody asked for it before."""
        key = (name, blur)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # viewers of one camera wait for the one encode instead of each doing it
            hit = self._latest.get(key)
            if hit is not None and hit[0] is frame:
                return hit[1]
            data = self.render(frame, blur)
            self.encoded += 1
            self._latest[key] = (frame, data)
            return data

    def forget(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self._latest if k[0] == name]:
                self._latest.pop(key, None)


class LiveFigures(Protocol):
    """A running source's figures over the last 10 s (``StreamEngine.source_stats()`` values)."""

    @property
    def analysed_fps(self) -> float: ...

    @property
    def lag_p95(self) -> float | None: ...

    @property
    def people_now(self) -> int: ...

    @property
    def last_analysed(self) -> datetime | None: ...

    @property
    def next_attempt(self) -> datetime | None: ...


class CameraNow(BaseModel):
    """A camera now: its state as last reported and the engine's figures over the last 10 s."""

    state: str = Field(description="connecting, live, lost, reconnecting, ended, failed or disabled")
    reason: str | None = Field(None, description="why it is not live (credentials hidden)")
    since: float = Field(description="when it entered that state (epoch seconds)")
    next_attempt: float | None = Field(None, description="a camera down: when it tries again (it never gives up)")
    kind: str | None = Field(None, description="stream, webcam, video, image, files")
    fps: float | None = None
    lag_p50: float | None = None
    lag_p95: float | None = None
    frames_dropped: int = 0
    people_since_start: int = 0
    compliant_since_start: int = 0
    people_now: int = 0
    last_analysed: float | None = None
    present: int = Field(0, description="people in view now")
    lag_now: float | None = Field(None, description="lag p95 over the last 10 s")
    fps_now: float | None = Field(None, description="analysed FPS over the last 10 s")
    compliance_now: float | None = Field(None, description="compliance of the latest frame (within 10 s)")


class LiveSnapshot(BaseModel):
    """Every camera now, firing alerts and ingest health: the ``live`` SSE message and the overview's base."""

    time: float
    cameras: dict[str, CameraNow]
    alerts_firing: int
    ingest_backlog: int
    database_ok: bool


@dataclass
class CameraLive:
    """A camera's state as the engine last reported it (events and live figures)."""

    state: str = "connecting"
    reason: str | None = None
    since: float = field(default_factory=time.time)
    kind: str | None = None
    fps: float | None = None
    lag_p50: float | None = None
    lag_p95: float | None = None
    dropped: int = 0
    people: int = 0  # people counted since the service started
    compliant: int = 0
    last_event: float | None = None
    people_now: int = 0  # people in view now (engine's live figures)
    last_analysed: float | None = None  # wall time of the latest analysed frame
    live_at: float | None = None  # when the engine's live figures (last 10 s) were last applied
    open_tracks: set[int] = field(default_factory=set)  # people in view by their events (a remote camera)
    next_attempt: float | None = None  # when a camera that is down tries again (it never gives up)
    state_ts: float = 0.0  # the time of the status event that set ``state`` (compared with the stored one)


class LiveState:
    """Each camera's state as the engine last reported it."""

    def __init__(self) -> None:
        self.cameras: dict[str, CameraLive] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> CameraLive:
        with self._lock:
            return self.cameras.setdefault(name, CameraLive())

    def set_state(self, name: str, state: str, reason: str | None = None) -> None:
        live = self.get(name)
        live.state, live.reason = state, reason

    def forget(self, name: str) -> None:
        with self._lock:
            self.cameras.pop(name, None)

    def apply_live(self, stats: Mapping[str, LiveFigures]) -> None:
        """The engine's live figures (``StreamEngine.source_stats()``, last 10 s): FPS, lag p95, people in
        view, last analysed frame; they replace the stats buckets' values, which come once per interval."""
        now = time.time()
        for name, source in stats.items():
            if name not in self.cameras:
                continue  # a camera removed meanwhile (or a job's source)
            live = self.get(name)
            live.fps, live.lag_p95, live.people_now = source.analysed_fps, source.lag_p95, source.people_now
            live.last_analysed = None if source.last_analysed is None else source.last_analysed.timestamp()
            live.next_attempt = None if source.next_attempt is None else source.next_attempt.timestamp()
            live.live_at = now
        for name, live in list(self.cameras.items()):
            if name not in stats and live.live_at is not None:  # stopped: no live figures any more
                live.fps, live.people_now, live.live_at = 0.0, 0, None

    def adopt_stored(self, statuses: Mapping[str, StoredStatus]) -> int:
        """Remote cameras this worker knows take the stored state when it is newer than the one it saw: with a
        shared subscription each worker receives only some of a node's messages, so the one that missed a
        camera's return showed it failed for good (the chaos soak found it). Returns how many changed."""
        changed = 0
        for name, status in statuses.items():
            live = self.cameras.get(name) if NODE_SEPARATOR in name else None
            if live is None or status.ts <= live.state_ts:
                continue
            live.state, live.reason, live.since, live.state_ts = status.state, status.reason, status.since, status.ts
            live.next_attempt = None
            if status.state != "live":
                live.open_tracks.clear()
            changed += 1
        return changed

    def observe(self, event: Any) -> None:
        live = self.get(event.source)
        live.last_event = time.time()
        # a remote camera's older status (late, re-sent) is ignored; a local camera's come in order
        newer = NODE_SEPARATOR not in event.source or event.time.timestamp() >= live.state_ts
        if event.type == "source_status" and newer:
            live.state, live.reason, live.kind, live.since, live.state_ts = (
                event.state,
                redact(event.reason) if event.reason else None,
                event.kind,
                time.time(),
                event.time.timestamp(),
            )
            if event.state != "live":
                live.open_tracks.clear()
            live.next_attempt = None if event.next_attempt is None else event.next_attempt.timestamp()
        elif event.type == "track_started":
            live.open_tracks.add(event.track_id)
        elif event.type == "stats":
            live.lag_p50 = event.lag.p50
            if live.live_at is None or time.time() - live.live_at > 10.0:  # no live figures (a remote camera)
                live.fps, live.lag_p95 = event.analysed_fps, event.lag.p95
            live.dropped += max(0, event.frames_dropped)
        elif event.type == "track_ended":
            live.people += 1
            live.compliant += int(event.compliant)
            live.open_tracks.discard(event.track_id)


def _render(frame: AnalysedFrame, blur: bool) -> bytes:
    from maskwatch.service.media import render_jpeg

    return render_jpeg(frame.frame.image, frame.result, blur=blur)


def event_for_client(event: Any) -> dict[str, Any]:
    """An engine event as pushed to SSE clients (any reason with credentials hidden)."""
    data: dict[str, Any] = event.to_dict()
    if data.get("reason"):
        data["reason"] = redact(data["reason"])
    return data


class Live:
    """The live view of the cameras: ``state`` (per camera), ``hub`` (SSE), the engine's latest frames and
    figures, and a loop (1 s) that refreshes them, updates the Prometheus gauges and pushes ``live``.

    ``firing`` and ``ingest`` say how many alerts fire and how storage keeps up (the snapshot shows both);
    ``stored`` reads every camera's stored state, which remote cameras take every ``stored_every`` seconds when
    it is newer (:meth:`LiveState.adopt_stored`)."""

    def __init__(
        self,
        engine: StreamEngine,
        state: LiveState,
        hub: Hub,
        metrics: Metrics,
        *,
        firing: Callable[[], int],
        ingest: Ingestor,
        every: float = 1.0,
        render: Callable[[AnalysedFrame, bool], bytes] | None = None,
        streams_per_token: int = 8,
        stored: Callable[[], Mapping[str, StoredStatus]] | None = None,
        stored_every: float = 5.0,
    ) -> None:
        self.stored, self.stored_every = stored, stored_every
        self._stored_read = 0.0
        self.engine = engine
        self.jpegs = FrameJpegs(render or _render)
        self.streams = StreamSlots(streams_per_token)
        self.state = state
        self.hub = hub
        self.metrics = metrics
        self.firing = firing
        self.ingest = ingest
        self.every = every
        self.closing = threading.Event()  # set by stop(): SSE streams and MJPEG views end
        self._thread: threading.Thread | None = None

    def latest(self, name: str) -> AnalysedFrame | None:
        """The camera's latest analysed frame (pixels and result), None before the first."""
        return self.engine.latest(name)

    def jpeg(self, name: str, *, blur: bool) -> tuple[AnalysedFrame, bytes] | None:
        """The camera's latest analysed frame and its JPEG (encoded once, shared by every viewer); None
        before the first frame."""
        frame = self.engine.latest(name)
        if frame is None:
            return None
        return frame, self.jpegs.get(name, frame, blur)

    def refresh(self) -> Mapping[str, LiveFigures]:
        """The engine's live figures (last 10 s) into the live state and the Prometheus gauges."""
        stats = self.engine.source_stats()
        self.state.apply_live(stats)
        self.metrics.observe_live(stats)
        return stats

    def snapshot(self) -> LiveSnapshot:
        """Each camera now (the engine's figures over the last 10 s): state, people in view, FPS, lag p95,
        compliance of its latest frame."""
        stats = self.refresh()
        now = time.time()
        cameras = {}
        for name, live in list(self.state.cameras.items()):
            source = stats.get(name)
            latest = self.engine.latest(name)
            compliance = None
            if latest is not None and now - latest.event.time.timestamp() < 10:
                compliance = latest.event.compliance
            cameras[name] = CameraNow(
                state=live.state,
                reason=live.reason,
                since=live.since,
                next_attempt=live.next_attempt if live.state in ("reconnecting", "failed") else None,
                kind=live.kind,
                fps=live.fps,
                lag_p50=live.lag_p50,
                lag_p95=live.lag_p95,
                frames_dropped=live.dropped,
                people_since_start=live.people,
                compliant_since_start=live.compliant,
                people_now=live.people_now,
                last_analysed=live.last_analysed,
                # a camera of this engine: people in its latest frame; a remote one: its open tracks
                present=len(live.open_tracks) if source is None else source.people_now,
                lag_now=None if source is None else source.lag_p95,
                fps_now=None if source is None else source.analysed_fps,
                compliance_now=compliance,
            )
        return LiveSnapshot(
            time=now,
            cameras=cameras,
            alerts_firing=self.firing(),
            ingest_backlog=self.ingest.backlog,
            database_ok=self.ingest.healthy,
        )

    # -- lifetime ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.closing.clear()
        self._thread = threading.Thread(target=self._run, name="maskwatch-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.closing.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def adopt_stored(self) -> None:
        """Remote cameras' stored states (see :meth:`LiveState.adopt_stored`); quiet while the database is
        down (the ingest reports that)."""
        if self.stored is None:
            return
        self._stored_read = time.monotonic()
        try:
            statuses = self.stored()
        except Exception as exc:
            log.debug("stored camera states not read: %s", type(exc).__name__)
            return
        self.state.adopt_stored(statuses)

    def _run(self) -> None:
        while not self.closing.wait(self.every):
            if time.monotonic() - self._stored_read >= self.stored_every:
                self.adopt_stored()
            try:
                self.metrics.ingest_backlog.set(self.ingest.backlog)
                self.metrics.ingest_dropped.set(self.ingest.dropped)
                if self.hub.clients:
                    self.hub.publish("live", self.snapshot().model_dump())
                else:
                    self.refresh()
            except Exception:
                log.exception("live update failed")
