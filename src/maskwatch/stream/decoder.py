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
* the pixels travel through shared memory (a Linux ``memfd`` the parent makes and hands to the child): a
  header page whose first bytes say which slot is lent to the parent, then three slots, each one RGB
  frame. The child writes a frame into a free slot, marks it lent and says ``frame`` (slot, size, index,
  times); the parent lends the newest one to its frame buffer as it lies in the slot (a
  :class:`SlotLease`), copies it out only when the analysis takes it, and gives the slot back by clearing
  its byte: no message. Frames superseded before the analysis took them (latest wins, as in the frame
  buffer) are never copied and count as dropped; when no slot is free the child drops the frame itself and
  says how many it dropped. A bigger frame (the camera changed its resolution) grows the memory once every
  slot is back. (Copying only what is analysed and giving slots back without a message is what brought the
  cost of a process per camera close to a thread's: BENCHMARKS.md.)
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

__all__ = ["SLOTS", "DecoderProcess", "DecoderProtocolError", "SlotLease", "main", "process_decoding_unavailable"]

log = logging.getLogger("maskwatch")

SLOTS = 3  # frames in shared memory: one being written, one waiting in the frame buffer, one being copied
HEADER = mmap.PAGESIZE  # bytes before the first slot; byte i says whether slot i is lent to the parent
FREE, LENT = 0, 1
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
    :class:`~maskwatch.stream.sources.SourceJob` as a dict), :meth:`recv` its messages, borrow a frame
    with :meth:`lease`, :meth:`stop` it."""

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
        if self._conn is None:
            return
        try:
            with self._lock:
                self._conn.send_bytes(json.dumps(message).encode())
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

    def ready(self) -> bool:
        """A message is waiting."""
        return self._conn is not None and self._conn.poll(0)

    def lease(self, message: dict[str, Any]) -> SlotLease:
        """The frame a ``frame`` message announces, as it lies in shared memory (not copied yet): the slot
        stays lent to this process until the lease copies the frame out or is released."""
        slot, slot_bytes, nbytes, shape = self._where(message)
        end = HEADER + slot * slot_bytes + nbytes
        if self._map is None or len(self._map) < end:
            self._remap(end)
        assert self._map is not None
        flags = np.frombuffer(self._map, np.uint8, count=SLOTS)
        if flags[slot] != LENT:
            raise DecoderProtocolError(f"a frame in slot {slot}, which the decoder did not lend")
        view = np.frombuffer(self._map, np.uint8, count=nbytes, offset=HEADER + slot * slot_bytes).reshape(shape)
        view.flags.writeable = False  # the decoder's memory: read here, never changed
        return SlotLease(view, flags, slot)

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
        self._release_map()
        self._map = mmap.mmap(self._memory, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def _release_map(self) -> None:
        """Unmap now, or, while a lease still points into the memory (a frame waiting in the buffer), when
        the last one is gone: the lease keeps the mapping alive, so its frame stays readable."""
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None

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
        self._release_map()
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


class SlotLease:
    """A decoded frame still in its shared-memory slot, lent to this process: :meth:`copy` it out (the
    analysis took it) or :meth:`release` it (superseded, or the source was finished); either gives the slot
    back to the decoder at once. Used by one thread at a time (the frame buffer hands it over)."""

    __slots__ = ("_flags", "_slot", "image")

    def __init__(self, image: np.ndarray, flags: np.ndarray, slot: int) -> None:
        self.image: np.ndarray | None = image  # a read-only view into the slot (HxWx3 uint8 RGB)
        self._flags: np.ndarray | None = flags
        self._slot = slot

    def copy(self) -> np.ndarray:
        """The frame as an array of its own; the slot is given back."""
        if self.image is None:
            raise RuntimeError("this frame's slot was already given back")
        image = self.image.copy()
        self.release()
        return image

    def release(self) -> None:
        """Give the slot back without copying (a second call does nothing)."""
        if self._flags is not None:
            self._flags[self._slot] = FREE
        self._flags = self.image = None


# -- the child's side -------------------------------------------------------------------------------------


class _Child:
    """The decoder: plays its source (:meth:`~maskwatch.stream.sources.SourceJob.frames`) into shared memory
    and tells the parent."""

    def __init__(self, conn: Connection, memory: int, job: dict[str, Any]) -> None:
        from maskwatch.stream.sources import SourceJob

        self.conn = conn
        self.memory = memory
        self.job = SourceJob(**job)
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
        """Watch the parent's end of the socket: it closing means the parent is gone (it says nothing more
        after the job; slots come back through the shared memory's header)."""
        try:
            while True:
                self.conn.recv_bytes(MAX_MESSAGE)
        except (EOFError, OSError):
            pass
        os._exit(0)

    def beat(self) -> None:
        if time.monotonic() - self.last_sent >= 1.0:
            self.send({"t": "beat"})

    def status(self, report: Any) -> None:
        self.send({"t": "status", "state": report.state, "reason": report.reason, "attempts": report.attempts,
                   "retry_in": report.retry_in, "fps": report.fps})  # fmt: skip

    # frames into shared memory

    def _lent(self) -> list[int]:
        """The slots the parent holds."""
        return [] if self.map is None else [i for i in range(SLOTS) if self.map[i] != FREE]

    def _grow(self, nbytes: int) -> None:
        """Room for frames of ``nbytes`` in every slot, once the parent has given every slot back."""
        deadline = time.monotonic() + 10.0
        while self._lent():
            if time.monotonic() > deadline:
                raise RuntimeError("the parent kept the frame slots for 10 s")
            time.sleep(0.005)
        slot_bytes = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        if self.map is not None:
            self.map.close()
        os.ftruncate(self.memory, HEADER + SLOTS * slot_bytes)  # the header (all slots free) is kept
        self.map = mmap.mmap(self.memory, HEADER + SLOTS * slot_bytes)
        self.slot_bytes = slot_bytes

    def put(self, frame: Any) -> None:
        image = np.ascontiguousarray(frame.image, dtype=np.uint8)
        height, width = image.shape[:2]
        nbytes = height * width * 3
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"not an RGB frame: {image.shape}")
        if nbytes > self.slot_bytes:
            self._grow(nbytes)
        assert self.map is not None
        lent = self._lent()
        slot = next((i for i in range(SLOTS) if i not in lent), None)
        if slot is None:  # the parent holds every slot: this frame is dropped (latest wins)
            self.dropped += 1
            self.beat()
            return
        target = np.frombuffer(self.map, np.uint8, count=nbytes, offset=HEADER + slot * self.slot_bytes)
        target[:] = image.reshape(-1)
        del target
        self.map[slot] = LENT  # before the message: the parent gives it back by clearing it
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
