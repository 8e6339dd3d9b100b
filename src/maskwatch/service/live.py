"""Live data for the dashboard: a fan-out hub for server-sent events, each camera's current state, and
annotated, face-blurred JPEG frames."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from maskwatch.core.redaction import redact
from maskwatch.detection.drawing import draw_result
from maskwatch.detection.privacy import blur_faces

SSE_TYPES = ("track_started", "track_ended", "stats", "source_status")


class Hub:
    """Publish from any thread; each SSE client reads its own bounded asyncio queue (a slow client loses
    messages, counted, and never slows the others)."""

    def __init__(self, maxsize: int = 1000):
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
        self, hello: dict[str, Any], stopped: Any = None, keepalive: float = 15.0, limit: int | None = None
    ) -> AsyncIterator[str]:
        """The SSE text of one client: a hello, then every message, keep-alive comments when quiet; ends
        when ``stopped()`` turns true (service shutdown) or after ``limit`` messages (tests)."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[str] = asyncio.Queue(self.maxsize)
        with self._lock:
            self._clients.append((loop, q))
        try:
            yield f"retry: 2000\nevent: hello\ndata: {json.dumps(hello, default=str)}\n\n"
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


@dataclass
class CameraLive:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "kind": self.kind,
            "fps": self.fps,
            "lag_p50": self.lag_p50,
            "lag_p95": self.lag_p95,
            "frames_dropped": self.dropped,
            "people_since_start": self.people,
            "compliant_since_start": self.compliant,
            "people_now": self.people_now,
            "last_analysed": self.last_analysed,
        }


class LiveState:
    """Each camera's state as the engine last reported it."""

    def __init__(self) -> None:
        self.cameras: dict[str, CameraLive] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> CameraLive:
        with self._lock:
            return self.cameras.setdefault(name, CameraLive())

    def forget(self, name: str) -> None:
        with self._lock:
            self.cameras.pop(name, None)

    def apply_live(self, stats: dict[str, Any]) -> None:
        """The engine's live figures (``StreamEngine.source_stats()``, last 10 s): FPS, lag p95, people in
        view, last analysed frame; they replace the stats buckets' values, which come once per interval."""
        now = time.time()
        for name, source in stats.items():
            if name not in self.cameras:
                continue  # a camera removed meanwhile (or a job's source)
            live = self.get(name)
            live.fps, live.lag_p95, live.people_now = source.analysed_fps, source.lag_p95, source.people_now
            live.last_analysed = None if source.last_analysed is None else source.last_analysed.timestamp()
            live.live_at = now
        for name, live in list(self.cameras.items()):
            if name not in stats and live.live_at is not None:  # stopped: no live figures any more
                live.fps, live.people_now, live.live_at = 0.0, 0, None

    def observe(self, event: Any) -> None:
        live = self.get(event.source)
        live.last_event = time.time()
        if event.type == "source_status":
            live.state, live.reason, live.kind, live.since = (
                event.state,
                redact(event.reason) if event.reason else None,
                event.kind,
                time.time(),
            )
        elif event.type == "stats":
            live.lag_p50 = event.lag.p50
            if live.live_at is None or time.time() - live.live_at > 10.0:  # no live figures (a remote camera)
                live.fps, live.lag_p95 = event.analysed_fps, event.lag.p95
            live.dropped += max(0, event.frames_dropped)
        elif event.type == "track_ended":
            live.people += 1
            live.compliant += int(event.compliant)


def event_for_client(event: Any) -> dict[str, Any]:
    data = event.to_dict()
    if "reason" in data:
        data["reason"] = redact(data["reason"]) if data["reason"] else data["reason"]
    return data


def render_jpeg(
    image_rgb: np.ndarray,
    result: Any,
    *,
    blur: bool = True,
    annotate: bool = True,
    quality: int = 80,
    max_side: int | None = 960,
) -> bytes:
    """The frame with every face blurred (unless ``blur`` is False) and the detections drawn, as JPEG."""
    image = image_rgb
    if blur and result is not None and result.faces:
        image = blur_faces(image, result.candidates)
    if annotate and result is not None:
        image = draw_result(image, result)
    if max_side and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        image = cv2.resize(
            image, (round(image.shape[1] * scale), round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()
