"""One live source decoded in a child process of its own (``python -m maskwatch.stream.decoder``), and the
parent's handle on it (:class:`DecoderProcess`, driven by :class:`~maskwatch.stream.readers.ProcessReader`).

Why a process per camera: a decoder that crashes (FFmpeg on a broken stream), hangs inside a read or leaks
takes only its own camera down; the analysis process, the other cameras and the ingest carry on, and the
camera is restarted. No thread of the analysis process is ever inside OpenCV's FFmpeg reader, so none is
left there when the process exits (the abort at shutdown, issue 18).

The wire between the two (one child per camera):

* a Unix socket pair carries small JSON messages framed by :class:`multiprocessing.connection.Connection`.
  Never pickles: the child parses untrusted network streams, so the parent believes only the checked fields
  of what it says;
* the pixels travel through shared memory (a Linux ``memfd`` the parent makes and hands to the child): one
  slot, one RGB frame. The child writes a frame there and says ``frame`` (slot, size, index, times); the
  parent copies it out into its frame buffer and gives the slot back (``free``) only when its analysis
  takes that frame (or the buffer forgets it). Meanwhile the child decodes on but writes and announces
  nothing: it skips those frames and says how many (counted as dropped, as the frame buffer's latest-wins
  would have). So a camera faster than its analysis costs one hand-over per *analysed* frame, not one per
  decoded frame (the wake-ups, messages and copies of frames nobody analyses were most of what a process
  per camera cost over a thread: BENCHMARKS.md). The price is freshness: the analysed frame is the first
  one decoded after the last was taken, not the newest. A bigger frame (the camera changed its resolution)
  grows the memory.
* the child also says ``status`` (live, lost, reconnecting, failed: :class:`~maskwatch.stream.sources.
  StatusReport`), ``info`` (a file's frame rate and length), ``beat`` (at least once a second while it makes
  progress: silence means a hung read), ``end`` (its source ended, with the error if it failed) and
  ``crash`` (an unexpected error; it then exits 1). Counters (frames, skipped, reconnection attempts) ride
  along with every message.

The child dies with its parent: it watches the socket (end of file: the parent is gone) and asks Linux to
kill it when the parent's thread that started it ends (``PR_SET_PDEATHSIG``). It ignores SIGINT (a Ctrl-C in
a terminal is the parent's to handle) and dies at once on SIGTERM (the parent's stop); it never runs the
interpreter's teardown (``os._exit``), so nothing unwinds through FFmpeg.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

__all__ = ["SLOTS", "DecoderProcess", "DecoderProtocolError", "main", "process_decoding_unavailable"]

log = logging.getLogger("maskwatch")

SLOTS = 1  # frames in shared memory: the child hands over the next one only once the parent gave this back
MAX_MESSAGE = 1 << 16  # bytes: a longer message is a broken child
MAX_SIDE = 16384  # pixels: a frame wider or taller than this is a broken child
MESSAGE_TYPES = frozenset({"frame", "status", "info", "beat", "end", "crash"})


class DecoderProtocolError(RuntimeError):
    """The child said something it should not (malformed, out of range): it is killed and restarted."""


def process_decoding_unavailable() -> str | None:
    """Why decoder processes cannot run here (None when they can): they need Linux's ``memfd``."""
    if not hasattr(os, "memfd_create"):
        return "this platform has no memfd_create (decoder processes need Linux)"
    return None


def describe_exit(code: int | None) -> str:
    """``exit status 1`` / ``killed by SIGKILL``."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# -- the parent's side ------------------------------------------------------------------------------------


class DecoderProcess:
    """The parent's handle on one decoder child: :meth:`start` it with a job (a
    :class:`~maskwatch.stream.sources.SourceJob` as a dict), :meth:`recv` its messages, copy a frame out
    with :meth:`frame`, :meth:`stop` it."""

    def __init__(self, job: dict[str, Any], name: str) -> None:
        self.job = job
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._memory = -1
        self._map: mmap.mmap | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the child and send it its job (OSError when it cannot be started)."""
        ours, theirs = socket.socketpair()
        try:
            self._memory = os.memfd_create("maskwatch-frames", os.MFD_CLOEXEC)
            cmd = [
                sys.executable, "-m", "maskwatch.stream.decoder", "--socket", str(theirs.fileno()),
                "--memory", str(self._memory), "--parent", str(os.getpid()), "--camera", self.name,
            ]  # fmt: skip
            # its own session: a Ctrl-C in the terminal reaches the parent only, which stops the child
            self.process = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(), self._memory), stdin=subprocess.DEVNULL, start_new_session=True
            )
        except BaseException:
            ours.close()
            self._close_memory()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._send({"t": "job", "job": self.job})

    def _send(self, message: dict[str, Any]) -> None:
        conn = self._conn  # (the analysis thread frees slots while the relay thread may be stopping the child)
        if conn is None:
            return
        try:
            with self._lock:
                conn.send_bytes(json.dumps(message).encode())
        except OSError:
            pass  # the child is gone: recv() says so

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The child's next message, or None when it said nothing for ``timeout`` seconds. EOFError when it
        is gone; :class:`DecoderProtocolError` when it said something malformed."""
        if self._conn is None:
            raise EOFError("not started")
        if not self._conn.poll(timeout):
            return None
        try:
            data = self._conn.recv_bytes(MAX_MESSAGE)
        except ConnectionResetError as exc:  # the child died with a message unread
            raise EOFError("the decoder is gone") from exc
        except OSError as exc:  # longer than MAX_MESSAGE (the connection is then unusable)
            raise DecoderProtocolError(f"unreadable message ({exc})") from exc
        try:
            message = json.loads(data)
        except ValueError as exc:
            raise DecoderProtocolError("a message that is not JSON") from exc
        if not isinstance(message, dict) or message.get("t") not in MESSAGE_TYPES:
            raise DecoderProtocolError("a message of no known type")
        return message

    def frame(self, message: dict[str, Any]) -> tuple[np.ndarray, int]:
        """Copy the frame a ``frame`` message announces out of shared memory (HxWx3 uint8 RGB); with its
        slot, which stays the parent's (the child hands over nothing more) until :meth:`free`."""
        slot, slot_bytes, nbytes, shape = self._where(message)
        end = slot * slot_bytes + nbytes
        if self._map is None or len(self._map) < end:
            self._remap(end)
        assert self._map is not None
        view = np.frombuffer(self._map, np.uint8, count=nbytes, offset=slot * slot_bytes)
        image = view.reshape(shape).copy()
        del view  # a live view would keep the map from being closed
        return image, slot

    def free(self, slot: int) -> None:
        """Give a slot back to the child: its frame was analysed or superseded, so the child may hand over
        the next one."""
        self._send({"t": "free", "slot": slot})

    @staticmethod
    def _where(message: dict[str, Any]) -> tuple[int, int, int, tuple[int, int, int]]:
        try:
            slot, slot_bytes = int(message["slot"]), int(message["slot_bytes"])
            height, width = int(message["height"]), int(message["width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DecoderProtocolError(f"a frame message without its place ({exc})") from exc
        nbytes = height * width * 3
        if not (0 <= slot < SLOTS and 0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE and nbytes <= slot_bytes):
            raise DecoderProtocolError(f"a frame out of range (slot {slot}, {width}x{height}, {slot_bytes} B)")
        return slot, slot_bytes, nbytes, (height, width, 3)

    def _remap(self, needed: int) -> None:
        size = os.fstat(self._memory).st_size
        if size < needed:
            raise DecoderProtocolError(f"a frame beyond the shared memory ({needed} > {size} B)")
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._memory, size, prot=mmap.PROT_READ)

    def kill(self) -> None:
        """SIGKILL now (a hung child)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def terminate(self) -> None:
        """SIGTERM now (the child dies at once: it has nothing to save)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self, grace: float = 2.0) -> int | None:
        """End the child (SIGTERM, then SIGKILL after ``grace`` seconds), reap it and free everything; its exit
        status."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(grace)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._map is not None:
            self._map.close()
            self._map = None
        self._close_memory()
        return code

    def wait(self, timeout: float = 2.0) -> int | None:
        """The child's exit status once it has ended (None if it is still running after ``timeout``)."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _close_memory(self) -> None:
        if self._memory >= 0:
            os.close(self._memory)
            self._memory = -1


# -- the child's side -------------------------------------------------------------------------------------


class _Child:
    """The decoder: plays its source (:meth:`~maskwatch.stream.sources.SourceJob.frames`) into shared memory
    and tells the parent."""

    def __init__(self, conn: Connection, memory: int, job: dict[str, Any]) -> None:
        from maskwatch.stream.sources import SourceJob

        self.conn = conn
        self.memory = memory
        self.job = SourceJob(**job)
        self.free = set(range(SLOTS))
        self.cond = threading.Condition()
        self.lock = threading.Lock()
        self.map: mmap.mmap | None = None
        self.slot_bytes = 0
        self.dropped = 0
        self.last_sent = 0.0
        self.reasons_sent = 0
        self.stop = threading.Event()
        self.stats: Any = None

    # talking to the parent

    def send(self, message: dict[str, Any]) -> None:
        """Send a message with the counters; the parent being gone ends this process."""
        if self.stats is not None:
            reasons = self.stats.reasons[self.reasons_sent :]
            self.reasons_sent = len(self.stats.reasons)
            message["stats"] = {
                "frames": self.stats.frames,
                "skipped": self.stats.skipped,
                "reconnects": self.stats.reconnects,
                "attempts": self.stats.attempts,
                "reasons": reasons,
            }
        message["dropped"], self.dropped = self.dropped, 0
        try:
            with self.lock:
                self.conn.send_bytes(json.dumps(message).encode())
        except OSError:
            os._exit(0)
        self.last_sent = time.monotonic()

    def listen(self) -> None:
        """The parent's words (slots given back); its end of the socket closing means it is gone."""
        try:
            while True:
                message = json.loads(self.conn.recv_bytes(MAX_MESSAGE))
                if isinstance(message, dict) and message.get("t") == "free":
                    with self.cond:
                        self.free.add(int(message["slot"]) % SLOTS)
                        self.cond.notify_all()
        except (EOFError, OSError, ValueError, KeyError, TypeError):
            pass
        os._exit(0)

    def beat(self) -> None:
        if time.monotonic() - self.last_sent >= 1.0:
            self.send({"t": "beat"})

    def status(self, report: Any) -> None:
        self.send({"t": "status", "state": report.state, "reason": report.reason, "attempts": report.attempts,
                   "retry_in": report.retry_in, "fps": report.fps})  # fmt: skip

    # frames into shared memory

    def _grow(self, nbytes: int) -> None:
        """Room for frames of ``nbytes`` in every slot, once the parent has given every slot back."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.free) == SLOTS, timeout=10.0):
                raise RuntimeError("the parent kept the frame slots for 10 s")
            slot_bytes = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
            if self.map is not None:
                self.map.close()
            os.ftruncate(self.memory, SLOTS * slot_bytes)
            self.map = mmap.mmap(self.memory, SLOTS * slot_bytes)
            self.slot_bytes = slot_bytes

    def put(self, frame: Any) -> None:
        with self.cond:
            waiting = len(self.free) < SLOTS
        if waiting:  # the parent's analysis has not taken the last frame: this one is skipped (dropped)
            self.dropped += 1
            self.beat()
            return
        image = np.ascontiguousarray(frame.image, dtype=np.uint8)
        height, width = image.shape[:2]
        nbytes = height * width * 3
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"not an RGB frame: {image.shape}")
        if nbytes > self.slot_bytes:
            self._grow(nbytes)
        with self.cond:  # only this thread takes slots, and every one is free
            slot = min(self.free)
            self.free.discard(slot)
        assert self.map is not None
        target = np.frombuffer(self.map, np.uint8, count=nbytes, offset=slot * self.slot_bytes)
        target[:] = image.reshape(-1)
        del target
        self.send({"t": "frame", "slot": slot, "slot_bytes": self.slot_bytes, "height": height, "width": width,
                   "index": frame.index, "timestamp": frame.timestamp, "captured": frame.captured,
                   "kind": frame.kind, "source": frame.source})  # fmt: skip

    def run(self) -> None:
        from maskwatch.stream.sources import SourceError, StatusReport, StreamSource, VideoSource

        source = self.job.make()
        self.stats = source.stats
        if isinstance(source, StreamSource):
            source.stop, source.on_status, source.on_progress = self.stop, self.status, self.beat
        try:
            if isinstance(source, VideoSource):
                source.probe()
                self.send({"t": "info", "fps": source.fps, "frame_count": source.frame_count,
                           "width": source.width, "height": source.height})  # fmt: skip
            if self.job.kind != "stream":
                self.status(StatusReport("live"))
            for frame in self.job.frames(source, self.stop):
                self.put(frame)
        except SourceError as exc:
            self.send({"t": "end", "error": str(exc)})
            return
        self.send({"t": "end", "error": None})


def _die_with_parent(parent: int) -> None:
    """Linux kills this process when the parent's thread that started it ends (and it may have already)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def _one_opencv_thread() -> None:
    """OpenCV's own thread pool off: this process decodes one camera, and the cameras run side by side as
    processes. The pool's hand-offs for a frame's colour conversion cost more than they save (a 640x480
    camera at 25 FPS: about 0.027 instead of 0.039 of a core, BENCHMARKS.md); FFmpeg's decoding threads are
    its own setting, untouched."""
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m maskwatch.stream.decoder --socket FD --memory FD --parent PID --camera NAME``."""
    parser = argparse.ArgumentParser(prog="maskwatch.stream.decoder", description="a maskwatch camera decoder")
    parser.add_argument("--socket", type=int, required=True)
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--camera", default="?")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(args.parent)
    _one_opencv_thread()
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s decoder of {args.camera}: %(message)s")
    conn = Connection(args.socket)
    try:
        first = json.loads(conn.recv_bytes(MAX_MESSAGE))
        child = _Child(conn, args.memory, first["job"])
    except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        log.error("no job from the parent: %s", exc)
        return 2
    threading.Thread(target=child.listen, name="maskwatch-decoder-listen", daemon=True).start()
    try:
        child.run()
    except Exception as exc:
        log.exception("decoding failed")
        try:
            child.send({"t": "crash", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        finally:
            os._exit(1)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: the listening thread is still reading the socket
