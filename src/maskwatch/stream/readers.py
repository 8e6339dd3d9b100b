"""Where a source is decoded, and what restarts it: a capture thread of this process (:class:`ThreadReader`)
or a decoder process of its own (:class:`ProcessReader`, the child in :mod:`~maskwatch.stream.decoder`).
Either one fills its runner's :class:`~maskwatch.stream.buffers.FrameBuffer` with
:class:`~maskwatch.stream.sources.Frame` objects and reports :class:`~maskwatch.stream.sources.StatusReport`
objects, so the analysis side never knows which one runs.

Which one (:func:`~maskwatch.stream.runner.make_runner`): live sources (streams, webcams, files played as
cameras) decode in a process of their own (``engine.decoder: process``, the default on Linux); files
analysed frame by frame (``detect``, jobs) in a thread, where back-pressure needs every frame and nothing can
hang on a network; and any source when the engine was given an in-process capture factory (tests' fakes) or
``engine.decoder: thread``.

Restart policy of a live source: the stream itself reconnects forever (:class:`~maskwatch.stream.sources.
StreamSource`); around it, a decoder that crashes (the child died, or an unexpected error in the thread) or
hangs (the child said nothing for ``hang_after`` seconds: it is killed) is started again after a wait on the
same capped exponential backoff, reported ``reconnecting`` with the reason and the next attempt. Nothing
stops it but the runner's ``stop`` (the camera removed, disabled or the engine stopping); a file that ends
or a one-shot stream that gave up (``give_up_after``) ends the reader with its error.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from maskwatch.core.backoff import Backoff
from maskwatch.core.redaction import redact
from maskwatch.stream.buffers import FrameBuffer
from maskwatch.stream.decoder import DecoderProcess, DecoderProtocolError, describe_exit
from maskwatch.stream.sources import (
    Frame,
    ImageSource,
    SourceError,
    SourceJob,
    SourceStats,
    StatusReport,
    StreamSource,
    VideoSource,
)

__all__ = ["ProcessReader", "Reader", "ThreadReader"]

log = logging.getLogger("maskwatch")

Report = Callable[[StatusReport], None]
HEALTHY_RUN_S = 30.0  # a decoder that ran this long before it crashed restarts at the first backoff step again


class Reader:
    """Decodes one source into ``buffer`` in a thread (:meth:`start`), restarting a live one that crashes."""

    kind = "thread"

    def __init__(
        self,
        job: SourceJob,
        source: ImageSource | VideoSource | StreamSource,
        buffer: FrameBuffer,
        stop: threading.Event,
        report: Report,
        *,
        live: bool,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.job, self.source, self.buffer, self.stop, self.report = job, source, buffer, stop, report
        self.live = live
        self.backoff, self.max_backoff = backoff, max_backoff
        self.restarts = 0  # decoders started again after a crash or hang
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"maskwatch-{self.kind}-{self.job.name}", daemon=True)
        self.thread.start()

    def close(self, timeout: float = 2.0) -> bool:
        """After ``stop`` is set: wait up to ``timeout`` s for the reader to end; True when it did. A live
        source's capture thread is not waited for: it may be inside a network read (up to the read timeout)
        and ends by itself after it (a decoder process is ended at once instead)."""
        self.buffer.seal()
        if self.thread is None:
            return True
        self.thread.join(timeout if self.kind != "capture" or not self.live else 0.0)
        return not self.thread.is_alive()

    def _run(self) -> None:
        schedule = Backoff(self.backoff, self.max_backoff)
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                reason = self._decode()
                if reason is None or self.stop.is_set():
                    return
                if time.monotonic() - started >= HEALTHY_RUN_S:
                    schedule.reset()
                wait = schedule.next()
                self.restarts += 1
                log.warning("%s: decoder %s; restarting it in %.1f s", self.job.name, reason, wait)
                self.report(StatusReport("reconnecting", f"decoder {reason}", self.restarts, wait))
                if self.stop.wait(wait):
                    break
        finally:
            if not self.buffer.closed:  # (_decode closes it itself, with the error if any)
                self.buffer.close()

    def _decode(self) -> str | None:
        """Decode until the source ends (None: the buffer is closed, with the error if any) or crashes (why,
        for a live source, which is then restarted)."""
        raise NotImplementedError


class ThreadReader(Reader):
    """Decodes in a capture thread of this process (a source's own iterator)."""

    kind = "capture"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.source, StreamSource):
            self.source.stop, self.source.on_status = self.stop, self.report

    def _decode(self) -> str | None:
        try:
            if isinstance(self.source, VideoSource):
                self.source.probe()
            if self.job.kind != "stream":
                self.report(StatusReport("live"))
            for frame in self.job.frames(self.source, self.stop):
                if not self.buffer.put(frame, self.stop):
                    break
            self.buffer.close()
        except SourceError as exc:
            self.buffer.close(str(exc))
        except Exception as exc:
            log.exception("%s: capture failed", self.job.name)
            if not self.live:
                self.buffer.close(f"{type(exc).__name__}: {exc}")
                return None
            return f"failed ({type(exc).__name__}: {redact(str(exc))})"
        return None


class ProcessReader(Reader):
    """Decodes in a child process of its own (:class:`~maskwatch.stream.decoder.DecoderProcess`); this thread
    relays its frames and states, and restarts it when it dies or stays silent for ``hang_after`` seconds."""

    kind = "decoder"

    def __init__(self, *args: Any, hang_after: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hang_after = hang_after
        self.child: DecoderProcess | None = None  # the running decoder (tests read its pid)
        self._base = SourceStats()  # the counters of the decoders before the running one
        if isinstance(self.source, VideoSource):  # never opened here: the decoder says what it found
            self.source.describe(30.0, None, 0, 0)

    def close(self, timeout: float = 2.0) -> bool:
        child = self.child
        if child is not None:
            child.terminate()
        return super().close(timeout)

    def _decode(self) -> str | None:
        child = DecoderProcess(dataclasses.asdict(self.job), self.job.name)
        try:
            child.start()
        except OSError as exc:
            return f"could not be started ({exc})"
        self.child = child
        self._base = dataclasses.replace(self.source.stats, reasons=list(self.source.stats.reasons))
        try:
            return self._relay(child)
        finally:
            self.child = None
            child.stop()

    def _relay(self, child: DecoderProcess) -> str | None:
        """Apply the child's messages one at a time, in order, so its last words (``end``, ``crash``) always
        count before its exit does; a child holds at most one frame out, so nothing queues up to skip."""
        heard = time.monotonic()
        while not self.stop.is_set():
            try:
                message = child.recv(0.25)
                if message is None:
                    if time.monotonic() - heard > self.hang_after:
                        child.kill()
                        return f"hung (no word for {time.monotonic() - heard:.0f} s; killed)"
                    continue
                heard = time.monotonic()
                outcome = self._apply(child, message)
            except EOFError:
                return f"exited ({describe_exit(child.wait())})"
            except DecoderProtocolError as exc:
                child.kill()
                return f"broke the protocol ({exc}; killed)"
            if outcome is not None:
                return outcome or None
        return None

    def _apply(self, child: DecoderProcess, message: dict[str, Any]) -> str | None:
        """Apply one message of the child; '' when its source ended (buffer closed), the reason when it
        crashed, None to go on. A frame waits in the buffer until the analysis takes it (or a newer one
        supersedes it): either gives its slot back."""
        self._count(message)
        kind = message["t"]
        if kind == "frame":
            frame, slot = self._frame(child, message)
            self.buffer.put(frame, self.stop, release=functools.partial(child.free, slot))
        elif kind == "status":
            fps = message.get("fps")
            if isinstance(self.source, StreamSource) and isinstance(fps, (int, float)) and 0 < fps < 1000:
                self.source.fps = float(fps)
            self.report(_status(message))
        elif kind == "info" and isinstance(self.source, VideoSource):
            self.source.describe(float(message.get("fps") or 0), _int(message.get("frame_count")),
                                 _int(message.get("width")) or 0, _int(message.get("height")) or 0)  # fmt: skip
        elif kind == "end":
            error = message.get("error")
            self.buffer.close(redact(str(error)) if error else None)
            return ""
        elif kind == "crash":
            return f"crashed ({redact(str(message.get('error')))[:300]})"
        return None

    def _frame(self, child: DecoderProcess, message: dict[str, Any]) -> tuple[Frame, int]:
        """The frame a message announces, copied out, and its slot (the child's again once the analysis
        takes the frame: the buffer's ``release``)."""
        image, slot = child.frame(message)
        timestamp, captured = message.get("timestamp"), message.get("captured")
        frame = Frame(
            image,
            source=str(message.get("source") or self.job.name),
            index=_int(message.get("index")) or 0,
            timestamp=float(timestamp) if isinstance(timestamp, (int, float)) else None,
            kind=str(message.get("kind") or "stream"),
            captured=float(captured) if isinstance(captured, (int, float)) else time.monotonic(),
        )
        return frame, slot

    def _count(self, message: dict[str, Any]) -> None:
        """The child's counters (since it started) over those of the decoders before it; its own drops."""
        dropped = _int(message.get("dropped"))
        if dropped:
            self.buffer.count_dropped(dropped)
        stats = message.get("stats")
        if not isinstance(stats, dict):
            return
        mine, base = self.source.stats, self._base
        for key in ("frames", "skipped", "reconnects", "attempts"):
            setattr(mine, key, getattr(base, key) + (_int(stats.get(key)) or 0))
        reasons = stats.get("reasons")
        if isinstance(reasons, list):
            for reason in reasons[:100]:
                if len(mine.reasons) < 100:
                    mine.reasons.append(redact(str(reason))[:500])


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _status(message: dict[str, Any]) -> StatusReport:
    """A child's status message, checked."""
    state = str(message.get("state"))
    if state not in ("live", "lost", "reconnecting", "failed"):
        raise DecoderProtocolError(f"unknown state {state[:40]!r}")
    reason = message.get("reason")
    retry_in = message.get("retry_in")
    return StatusReport(
        state,
        redact(str(reason))[:500] if reason else None,
        _int(message.get("attempts")) or 0,
        float(retry_in) if isinstance(retry_in, (int, float)) and retry_in >= 0 else None,
    )
