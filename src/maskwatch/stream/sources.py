"""Where frames come from: images, folders, globs, video files, webcams and network streams (torch-free).

Every source is turned into an iterator of :class:`Frame` (an RGB array plus where it came from), so the
engine (:mod:`maskwatch.stream.engine`, which runs each source's iterator in its own capture thread) never
cares what it is reading. Still images go through maskwatch's one image decoder
(:func:`maskwatch.data.images.decode_rgb`: EXIF orientation, alpha on white, the pixel limit); OpenCV's
``cv2.VideoCapture`` (FFmpeg) reads video files, ``rtsp://`` and ``http(s)://`` streams such as MJPEG.

* **Images** that cannot be decoded are skipped and counted (``SourceStats.skipped``), never a crash.
* Nothing is opened when a source is made: a missing or broken video fails when it is read (in its
  capture thread), so one bad file is reported as that source's failure and the others go on.
* **Video files**: ``stride`` keeps every N-th frame (the others are grabbed, not decoded) or
  ``target_fps`` derives the stride from the file's frame rate. A frame that fails to decode before the
  file's end is skipped and counted; many failures in a row end the file.
* **Live sources** (``webcam:N``, ``rtsp://``, ``http(s)://``): a dropped connection is reopened with
  exponential backoff (:class:`~maskwatch.core.backoff.Backoff`: ``backoff``, doubling up to ``max_backoff``
  seconds, each wait spread by ``jitter`` so cameras that dropped together do not retry in lockstep) until
  a frame arrives again;
  when none has arrived for ``give_up_after`` seconds the source raises :class:`StreamLostError`, whose
  message says what was tried. ``target_fps`` drops frames by their arrival time. Network streams are
  opened with FFmpeg open/read timeouts (the give-up time), so a server that accepts the connection and
  then sends nothing cannot hang a reader past it; ``webcam:N`` without ``/dev/videoN`` fails at once.
  ``on_status`` hears every state change (``live``, ``lost``, ``reconnecting``) for the engine's events.
* **FFmpeg's protocols are restricted per kind of source** (:func:`open_capture`): a video file may use
  the ``file`` protocol only (a playlist or concat file disguised as a video cannot reach the network),
  a network stream only network protocols (it cannot read local files). OpenCV passes
  ``$OPENCV_FFMPEG_CAPTURE_OPTIONS`` to FFmpeg at each open, so it is set per open; opens of different
  kinds take turns (a file open may wait for a network open in flight, at most its open timeout).

    >>> for frame in VideoSource("clip.mp4", stride=2):                    # doctest: +SKIP
    ...     print(frame.source, frame.index, frame.image.shape)
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from maskwatch.core.backoff import Backoff
from maskwatch.core.redaction import redact

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "ImageSource",
    "SourceError",
    "SourceJob",
    "SourceStats",
    "StatusReport",
    "StreamLostError",
    "StreamSource",
    "VideoSource",
    "ffmpeg_options",
    "open_capture",
    "parse_source",
]

log = logging.getLogger("maskwatch")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
MAX_BAD_FRAMES_IN_A_ROW = 25  # a video file whose frames keep failing this often has ended (or is broken)


class SourceError(RuntimeError):
    """A source that cannot be read at all (missing file, unknown kind, camera that never opens)."""


class StreamLostError(SourceError):
    """A live source dropped and did not come back within its give-up time."""


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use (tests inject fakes with the same methods)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's names
    def read(self) -> tuple[bool, Any]: ...
    def grab(self) -> bool: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[Any], Capture]


#: FFmpeg protocols each kind of source may use (``protocol_whitelist``)
FFMPEG_PROTOCOLS = {
    "file": "file",
    "network": "rtsp,rtsps,rtp,srtp,udp,tcp,tls,http,https,httpproxy,rtmp,rtmps,crypto",
}
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def ffmpeg_options(kind: str, base: str | None) -> str:
    """``$OPENCV_FFMPEG_CAPTURE_OPTIONS`` for opens of ``kind`` (``file`` or ``network``): the user's own
    options (``base``) with our ``protocol_whitelist``; RTSP over TCP unless the user chose (OpenCV's
    default when the variable is unset)."""
    options = [o for o in (base or "").split("|") if o and not o.startswith("protocol_whitelist;")]
    if base is None:
        options.append("rtsp_transport;tcp")
    options.append(f"protocol_whitelist;{FFMPEG_PROTOCOLS[kind]}")
    return "|".join(options)


class _KindGate:
    """Opens of one kind run together under that kind's FFmpeg options (set by the first, put back by the
    last); another kind waits until they are done, and once it waits no new open of the running kind
    starts, so neither kind starves."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._kind: str | None = None
        self._active = 0
        self._waiting: dict[str, int] = {}
        self._saved: str | None = None

    def _may_enter(self, kind: str) -> bool:
        if self._kind is None:
            return True
        others_wait = any(n for k, n in self._waiting.items() if k != kind)
        return self._kind == kind and not others_wait

    def enter(self, kind: str) -> None:
        with self._cond:
            self._waiting[kind] = self._waiting.get(kind, 0) + 1
            while not self._may_enter(kind):
                self._cond.wait()
            self._waiting[kind] -= 1
            if self._active == 0:
                self._saved = os.environ.get(FFMPEG_OPTIONS_ENV)
                os.environ[FFMPEG_OPTIONS_ENV] = ffmpeg_options(kind, self._saved)
            self._kind = kind
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._kind = None
                if self._saved is None:
                    os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                else:
                    os.environ[FFMPEG_OPTIONS_ENV] = self._saved
            self._cond.notify_all()


_GATE = _KindGate()


def open_capture(target: str, kind: str, params: Sequence[int] = ()) -> Capture:
    """``cv2.VideoCapture(target, CAP_FFMPEG, params)`` with FFmpeg limited to ``kind``'s protocols
    (:data:`FFMPEG_PROTOCOLS`); the user's ``$OPENCV_FFMPEG_CAPTURE_OPTIONS`` is kept and put back after."""
    _GATE.enter(kind)
    try:
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, list(params))
    finally:
        _GATE.leave()


def _default_capture(target: Any) -> Capture:
    """A video file through FFmpeg limited to local files, or a webcam (looked up at call time, so tests
    can replace this function)."""
    if isinstance(target, int):
        return cv2.VideoCapture(target)
    return open_capture(str(target), "file")


@dataclass
class Frame:
    """One RGB image to analyse and where it came from."""

    image: np.ndarray  # HxWx3 uint8 RGB
    source: str  # the path or URL (``webcam:N`` for cameras)
    index: int  # frame number in its source (0 for a still image)
    timestamp: float | None = None  # seconds from the start of a video (position or arrival time)
    kind: str = "image"  # image | video | stream
    captured: float | None = None  # time.monotonic() when it was read (capture-to-result lag)


@dataclass
class SourceStats:
    """What a source delivered and what it had to leave out."""

    frames: int = 0  # frames (or images) delivered
    skipped: int = 0  # unreadable images or frames, skipped
    reconnects: int = 0  # successful reopenings of a live source
    attempts: int = 0  # reopening attempts of a live source (successful or not)
    reasons: list[str] = field(default_factory=list)  # one line per skipped item (capped)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 100:
            self.reasons.append(reason)


def _bgr_to_rgb(frame: Any) -> np.ndarray | None:
    """A decoded OpenCV frame as RGB uint8, or None when it is not a usable image."""
    if not isinstance(frame, np.ndarray) or frame.size == 0 or frame.dtype != np.uint8:
        return None
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        return None
    code = cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(frame, code)


# --------------------------------------------------------------------------------------------------------
# still images


class ImageSource:
    """Still images from a list of paths, decoded by :func:`maskwatch.data.images.decode_rgb` (EXIF
    orientation applied, transparency on white, the configured pixel limit), the decoder of the training
    loaders and the Python API, so an image gives the same pixels everywhere."""

    kind = "image"

    def __init__(self, paths: Sequence[str | os.PathLike[str]]):
        self.paths = [str(p) for p in paths]
        self.stats = SourceStats()
        self.name = self.paths[0] if len(self.paths) == 1 else f"{len(self.paths)} images"

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        from maskwatch.data.images import BadImageError, decode_rgb

        for path in self.paths:
            try:
                rgb = decode_rgb(path)
            except BadImageError as exc:
                self.stats.skip(f"{path}: {exc.reason}")
                continue
            self.stats.frames += 1
            yield Frame(rgb, path, 0, None, "image", time.monotonic())


# --------------------------------------------------------------------------------------------------------
# video files


class VideoSource:
    """Frames of a video file; every ``stride``-th one, or about ``target_fps`` per second of video, from
    frame ``start`` on (a restarted edge agent resumes a file where it stopped).

    The file is opened (and its frame rate, length and size read) on first use, not when the source is
    made: :meth:`probe` raises :class:`SourceError` for a file that is missing or not a readable video.
    """

    kind = "video"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stride: int = 1,
        target_fps: float | None = None,
        capture_factory: CaptureFactory | None = None,
        start: int = 0,
    ):
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if target_fps is not None and target_fps <= 0:
            raise ValueError(f"target_fps must be > 0, got {target_fps}")
        self.path = str(path)
        self.name = self.path
        self.stats = SourceStats()
        self._factory = capture_factory or _default_capture
        self._stride = stride
        self._target_fps = target_fps
        self._start = max(0, int(start))  # frames before it are skipped (grabbed, not decoded)
        self._probed = False
        self.fps = 30.0
        self.frame_count: int | None = None
        self.width = self.height = 0

    def probe(self) -> None:
        """Open the file once and read its frame rate, length and size (:class:`SourceError` if unusable)."""
        if self._probed:
            return
        capture = self._factory(self.path)
        try:
            if not capture.isOpened():
                raise SourceError(f"cannot open video {self.path} (missing, unsupported codec or not a video)")
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = fps if 0 < fps < 1000 else 30.0
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.frame_count = count if count > 0 else None
            self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        finally:
            capture.release()
        self._probed = True

    def describe(self, fps: float, frame_count: int | None, width: int, height: int) -> None:
        """Take what a decoder process found when it probed the file, so this copy never opens it."""
        self.fps = fps if 0 < fps < 1000 else 30.0
        self.frame_count = frame_count if frame_count and frame_count > 0 else None
        self.width, self.height = int(width), int(height)
        self._probed = True

    @property
    def stride(self) -> int:
        """Keep every N-th frame (derived from ``target_fps`` and the file's frame rate when given)."""
        if self._target_fps:
            self.probe()
            return max(1, round(self.fps / self._target_fps))
        return self._stride

    @property
    def output_fps(self) -> float:
        """Frame rate of the kept frames (what an annotated output video should play at)."""
        self.probe()
        return self.fps / self.stride

    def __len__(self) -> int:
        """Frames that will be kept (an estimate when the container does not say its length; 0 unknown)."""
        try:
            self.probe()
        except SourceError:
            return 0
        return -(-self.frame_count // self.stride) if self.frame_count else 0

    def __iter__(self) -> Iterator[Frame]:
        self.probe()
        stride = self.stride
        capture = self._factory(self.path)
        if not capture.isOpened():
            raise SourceError(f"cannot open video {self.path}")
        index = 0
        failed: list[int] = []  # kept frames that failed to decode: damage if a good frame follows, else the end
        try:
            while True:
                keep = index % stride == 0 and index >= self._start
                if keep:
                    ok, raw = capture.read()
                    rgb = _bgr_to_rgb(raw) if ok else None
                else:
                    ok, rgb = capture.grab(), None
                if not ok or (keep and rgb is None):
                    if self.frame_count is None or index >= self.frame_count:
                        return  # the end (containers may overstate their length: trailing failures are not counted)
                    failed.append(index)
                    if len(failed) > MAX_BAD_FRAMES_IN_A_ROW:
                        self.stats.skip(
                            f"{self.path}: stopped after {len(failed)} unreadable frames in a row "
                            f"at frame {index} of {self.frame_count}"
                        )
                        return
                    index += 1
                    continue
                for bad in failed:
                    if bad % stride == 0:
                        self.stats.skip(f"{self.path}: frame {bad} unreadable")
                failed.clear()
                if keep and rgb is not None:
                    self.stats.frames += 1
                    yield Frame(rgb, self.path, index, index / self.fps, "video", time.monotonic())
                index += 1
        finally:
            capture.release()
            self._start = 0  # a looped file starts again from its first frame


# --------------------------------------------------------------------------------------------------------
# live sources


@dataclass(frozen=True)
class StatusReport:
    """What a live source says about itself: ``state`` (``live``, ``lost``, ``reconnecting``, ``failed``), why,
    how many reopening attempts failed since it was last live, and when it tries next (``retry_in`` seconds)."""

    state: str
    reason: str | None = None
    attempts: int = 0
    retry_in: float | None = None
    fps: float | None = None  # the stream's own frame rate, when it says (``live``)


StatusCallback = Callable[[StatusReport], None]


def _network_capture(target: Any, timeout: float) -> Capture:
    """``cv2.VideoCapture`` through FFmpeg with open and read timeouts (a silent server cannot hang a read)."""
    ms = int(max(1.0, timeout) * 1000)
    return open_capture(
        str(target), "network", [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    )


class StreamSource:
    """A webcam or network stream that reconnects, forever by default, with capped exponential backoff.

    A dropped stream is reopened after waits that double from ``backoff`` up to ``max_backoff`` (each spread by
    ``jitter``); every failed attempt is reported (``reconnecting``, with the reason and the next attempt), and
    once the source has been down for ``failed_after`` seconds it is reported ``failed``, still with the reason
    and the next attempt: it keeps trying. Only ``give_up_after`` (one-shot runs such as ``maskwatch detect``)
    or ``stop`` ends it.

    Args:
        target: a camera index (``0``) or a URL (``rtsp://...``, ``http://.../video.mjpg``).
        target_fps: keep at most about this many frames per second of arrival time (``None``: all).
        backoff: first wait before reopening a dropped source, in seconds; doubled after each failed try.
        max_backoff: the longest wait between two tries.
        jitter: each wait spread by up to this fraction (0: exact waits).
        read_timeout: the FFmpeg open and read timeout of network streams (a server that accepts and then says
            nothing cannot hang a read longer).
        failed_after: report ``failed`` (still retrying) once no frame has arrived for this many seconds.
        give_up_after: raise :class:`StreamLostError` once no frame has arrived for this many seconds
            (``None``: never, the default of a camera).
        max_frames: stop after this many delivered frames (``None``: run until stopped).
        capture_factory: opens the source (default: ``cv2.VideoCapture``, with FFmpeg timeouts for URLs);
            tests pass a fake.
        clock / sleep: time functions (tests pass fakes so no real time passes).
        stop: an event that ends the iteration (and any backoff wait) as soon as it is set.
        on_status: called with a :class:`StatusReport` on every state change and every failed attempt.
        on_progress: called after every read and at least once a second while waiting (a decoder process
            sends its heartbeat from it: silence then means a hung read).
    """

    kind = "stream"

    def __init__(
        self,
        target: int | str,
        *,
        target_fps: float | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        jitter: float = 0.1,
        read_timeout: float = 10.0,
        failed_after: float = 30.0,
        give_up_after: float | None = None,
        max_frames: int | None = None,
        capture_factory: CaptureFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        on_status: StatusCallback | None = None,
        on_progress: Callable[[], None] | None = None,
    ):
        if backoff <= 0 or max_backoff < backoff:
            raise ValueError(f"need 0 < backoff <= max_backoff, got {backoff}, {max_backoff}")
        for option, value in (("read_timeout", read_timeout), ("failed_after", failed_after)):
            if value <= 0:
                raise ValueError(f"{option} must be > 0, got {value}")
        if give_up_after is not None and give_up_after <= 0:
            raise ValueError(f"give_up_after must be > 0 or None, got {give_up_after}")
        self.target = target
        self.name = f"webcam:{target}" if isinstance(target, int) else redact(str(target))
        self.target_fps = target_fps
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.jitter = float(jitter)
        Backoff(self.backoff, self.max_backoff, self.jitter)  # checks the schedule now, not at the first drop
        self.failed_after = float(failed_after)
        self.give_up_after = None if give_up_after is None else float(give_up_after)
        # a one-shot run's give-up time also bounds each open and read
        self.read_timeout = min(float(read_timeout), self.give_up_after or math.inf)
        self.max_frames = max_frames
        self.stats = SourceStats()
        self.fps: float | None = None
        self.frame_count = None
        if capture_factory is None:
            capture_factory = (
                _default_capture if isinstance(target, int) else (lambda url: _network_capture(url, self.read_timeout))
            )
        self._factory = capture_factory
        self._clock = clock
        self._sleep = sleep
        self.stop = stop
        self.on_status = on_status
        self.on_progress = on_progress

    @property
    def output_fps(self) -> float:
        if self.target_fps:
            return float(self.target_fps)
        return self.fps or 25.0

    def __len__(self) -> int:
        return self.max_frames or 0

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _wait(self, seconds: float) -> None:
        """Wait (ended early by ``stop``), telling ``on_progress`` at least once a second."""
        end = self._clock() + seconds
        while not self._stopped():
            left = end - self._clock()
            if left <= 0:
                return
            step = min(left, 1.0) if self.on_progress is not None else left
            if self.stop is not None and self._sleep is time.sleep:
                self.stop.wait(step)
            else:
                self._sleep(step)
            self._progress()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _status(self, state: str, reason: str | None = None, attempts: int = 0, retry_in: float | None = None) -> None:
        if self.on_status is not None:
            fps = self.fps if state == "live" else None
            self.on_status(StatusReport(state, reason, attempts, None if retry_in is None else round(retry_in, 3), fps))

    def _open(self) -> tuple[Capture | None, str]:
        """The opened source, or None and why not."""
        if isinstance(self.target, int) and os.name == "posix" and self._factory is _default_capture:
            device = Path(f"/dev/video{self.target}")
            if not device.exists():
                if self.give_up_after is not None:  # a one-shot run: say so at once
                    raise StreamLostError(f"{self.name}: no camera {device} on this machine")
                return None, f"no camera {device} on this machine"
        try:
            capture = self._factory(self.target)
        except Exception as exc:
            log.debug("opening %s failed: %s", self.name, exc)
            return None, f"could not open it ({type(exc).__name__})"
        if capture.isOpened():
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            if 0 < fps < 1000:
                self.fps = fps
            return capture, ""
        capture.release()
        return None, "could not open it"

    def _reconnect(self, since: float, reason: str) -> Capture | None:
        """Reopen the source with capped exponential backoff until it opens (None when ``stop`` is set
        meanwhile); reported ``reconnecting``, then ``failed`` once down ``failed_after`` seconds. With
        ``give_up_after``, :class:`StreamLostError` once down that long."""
        schedule, attempts = Backoff(self.backoff, self.max_backoff, self.jitter), 0
        while not self._stopped():
            down = self._clock() - since
            if self.give_up_after is not None and down >= self.give_up_after:
                raise StreamLostError(
                    f"stream {self.name} lost ({reason}); no frame for {down:.1f} s after {attempts} "
                    f"reconnection attempt(s) with backoff {self.backoff:g}-{self.max_backoff:g} s; gave up "
                    f"after {self.give_up_after:g} s"
                )
            wait = schedule.next()
            if self.give_up_after is not None:
                wait = min(wait, max(0.0, self.give_up_after - down))
            if down >= self.failed_after:
                self._status("failed", f"no frame for {down:.0f} s: {reason}", attempts, wait)
            else:
                self._status("reconnecting", reason, attempts, wait)
                if down + wait > self.failed_after:  # it becomes failed during this wait: said when it does
                    self._wait(self.failed_after - down)
                    if self._stopped():
                        return None
                    wait -= self.failed_after - down
                    down = self._clock() - since
                    self._status("failed", f"no frame for {down:.0f} s: {reason}", attempts, wait)
            self._wait(wait)
            if self._stopped():
                return None
            attempts += 1
            self.stats.attempts += 1
            capture, why = self._open()
            if capture is not None:
                log.warning("%s: reconnected after %d attempt(s)", self.name, attempts)
                return capture
            reason = why
            log.info("%s: reconnection attempt %d failed; next in about %.1f s", self.name, attempts, schedule.current)
        return None

    def __iter__(self) -> Iterator[Frame]:
        start = self._clock()
        capture, why = self._open()
        if capture is None:
            capture = self._reconnect(start, why)
            if capture is None:
                return
        self._status("live")
        last_good = self._clock()
        last_kept: float | None = None
        index = 0
        try:
            while (self.max_frames is None or self.stats.frames < self.max_frames) and not self._stopped():
                ok, raw = capture.read()
                self._progress()
                rgb = _bgr_to_rgb(raw) if ok else None
                now = self._clock()
                if rgb is None:
                    if ok:
                        self.stats.skip(f"{self.name}: frame {index} unreadable")
                        index += 1
                        if now - last_good < self.read_timeout:
                            continue
                        why = f"only unreadable frames for {now - last_good:.1f} s"
                    else:
                        why = "read failed"
                    capture.release()
                    capture = None
                    log.warning("%s: no frame (%s); reconnecting", self.name, why)
                    self._status("lost", why)
                    capture = self._reconnect(last_good, why)
                    if capture is None:
                        return
                    self.stats.reconnects += 1
                    self._status("live")
                    continue
                last_good = now
                if self.target_fps and last_kept is not None and now - last_kept < 1.0 / self.target_fps - 1e-6:
                    index += 1
                    continue
                last_kept = now
                self.stats.frames += 1
                yield Frame(rgb, self.name, index, now - start, "stream", time.monotonic())
                index += 1
        finally:
            if capture is not None:
                capture.release()


# --------------------------------------------------------------------------------------------------------
# a source to read, and how to play it


@dataclass
class SourceJob:
    """Everything needed to open one source and play it as the engine reads it, in plain values (JSON), so a
    decoder process (:mod:`maskwatch.stream.decoder`) can make the same source as a capture thread.

    ``kind``: ``image`` (``target``: a list of paths), ``video`` (a path) or ``stream`` (a URL or a webcam
    number). ``realtime`` plays a file as a camera would deliver it; ``loop`` starts it again at its end;
    still images played ``realtime`` are a slideshow (each held ``hold`` seconds at ``target_fps``, 5 by
    default). The reconnection settings are :class:`StreamSource`'s."""

    kind: str
    target: Any
    name: str
    stride: int = 1
    target_fps: float | None = None
    realtime: bool = False
    loop: bool = False
    hold: float = 4.0
    max_frames: int | None = None
    start_frame: int = 0  # a video file starts here (a restarted agent resumes where it stopped)
    backoff: float = 0.5
    max_backoff: float = 8.0
    read_timeout: float = 10.0
    failed_after: float = 30.0
    give_up_after: float | None = None

    def make(self, capture_factory: CaptureFactory | None = None) -> ImageSource | VideoSource | StreamSource:
        """The source (nothing is opened yet)."""
        source: ImageSource | VideoSource | StreamSource
        if self.kind == "image":
            source = ImageSource(list(self.target))
        elif self.kind == "video":
            source = VideoSource(
                str(self.target),
                stride=self.stride,
                target_fps=self.target_fps,
                capture_factory=capture_factory,
                start=self.start_frame,
            )
        else:
            source = StreamSource(
                self.target if isinstance(self.target, int) else str(self.target),
                target_fps=self.target_fps,
                backoff=self.backoff,
                max_backoff=self.max_backoff,
                read_timeout=self.read_timeout,
                failed_after=self.failed_after,
                give_up_after=self.give_up_after,
                max_frames=self.max_frames,
                capture_factory=capture_factory,
            )
        source.name = self.name
        return source

    def frames(self, source: ImageSource | VideoSource | StreamSource, stop: threading.Event) -> Iterator[Frame]:
        """The frames of ``source`` as the engine reads them (real time, loops, slideshow, ``max_frames``);
        ends early when ``stop`` is set."""
        delivered, limit = 0, self.max_frames
        slideshow = self.kind == "image" and self.realtime
        while True:
            begin = time.monotonic()
            first: float | None = None  # the first frame's timestamp (a file may start further in)
            frames_before = source.stats.frames
            for frame in self._slideshow(source) if slideshow else source:
                if self.realtime and frame.timestamp is not None:  # play as a camera would deliver it
                    first = frame.timestamp if first is None else first
                    delay = begin + frame.timestamp - first - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    frame = dataclasses.replace(frame, captured=time.monotonic())
                yield frame
                delivered += 1
                if stop.is_set() or (limit is not None and delivered >= limit):
                    return
            if not self.loop or stop.is_set() or source.stats.frames == frames_before:
                return

    def _slideshow(self, images: Iterable[Frame]) -> Iterator[Frame]:
        """Still images as a slow video: each repeated for ``hold`` seconds at ``target_fps`` (5)."""
        rate = self.target_fps or 5.0
        repeats = max(1, round(self.hold * rate))
        index = 0
        for image in images:
            for _ in range(repeats):
                yield dataclasses.replace(image, index=index, timestamp=index / rate, kind="video")
                index += 1


# --------------------------------------------------------------------------------------------------------
# parsing what the user typed


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def parse_source(spec: str) -> tuple[str, Any]:
    """Classify one SOURCE argument: ``("webcam", 0)``, ``("stream", url)``, ``("video", path)``,
    ``("image", path)``, or ``("files", [paths])`` for a folder (recursive) or a glob."""
    text = spec.strip()
    if text.lower().startswith("webcam:"):
        number = text.split(":", 1)[1]
        if not number.isdigit():
            raise SourceError(f"{spec!r}: expected webcam:N with a camera number, e.g. webcam:0")
        return "webcam", int(number)
    if text.lower().startswith(STREAM_SCHEMES):
        return "stream", text
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and _media_kind(p))
        return "files", files
    if path.is_file():
        kind = _media_kind(path)
        if kind is None:
            raise SourceError(
                f"{spec}: unknown file type {path.suffix!r} (images: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}; videos: {', '.join(sorted(VIDEO_EXTENSIONS))})"
            )
        return kind, path
    if _has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
        return "files", [p for p in matches if p.is_file() and _media_kind(p)]
    raise SourceError(f"{spec}: no such file or folder (and not webcam:N, rtsp:// or http(s)://)")
