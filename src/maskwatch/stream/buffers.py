"""The buffer between a source's reader (its capture thread, or the thread relaying its decoder process:
:mod:`~maskwatch.stream.readers`) and the analysis thread.

A live source keeps only its **latest frame** (a newer frame replaces one not yet analysed, counted as
dropped), so the analysed frame is never more than one frame old and the lag cannot grow when analysis is
slower than the camera. A file keeps a small queue and its reader waits when the queue is full
(back-pressure): every frame (or every ``stride``-th) is analysed.

A reader may lend something with a frame (``put(..., release=...)``): the buffer calls ``release`` once the
frame leaves it, taken by the analysis, superseded or forgotten. A decoder process uses it to hear that the
analysis took its frame, and only then hands over the next one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from maskwatch.stream.sources import Frame

__all__ = ["FrameBuffer"]


class FrameBuffer:
    """A small buffer of frames. ``latest_wins``: a new frame replaces the oldest waiting one (live
    sources; counted in ``dropped``); otherwise ``put`` waits for room (files: back-pressure). ``wake`` is
    set whenever a frame arrives or the buffer closes (the analysis thread waits on it)."""

    def __init__(self, capacity: int, *, latest_wins: bool, wake: threading.Event):
        self.capacity = max(1, int(capacity))
        self.latest_wins = latest_wins
        self.dropped = 0
        self._items: deque[tuple[Frame, Callable[[], None] | None]] = deque()
        self._cond = threading.Condition()
        self._wake = wake
        self.closed = False
        self.error: str | None = None

    def put(self, frame: Frame, stop: threading.Event, *, release: Callable[[], None] | None = None) -> bool:
        """Add a frame; False when ``stop`` was set while waiting for room, or the buffer is closed.
        ``release`` is called once the frame leaves the buffer (taken, superseded, forgotten or refused)."""
        superseded: Callable[[], None] | None = None
        with self._cond:
            accepted = not self.closed
            while accepted and len(self._items) >= self.capacity:
                if self.latest_wins:
                    _, superseded = self._items.popleft()
                    self.dropped += 1
                    break
                if stop.is_set():
                    accepted = False
                    break
                self._cond.wait(0.05)
            if accepted:
                self._items.append((frame, release))
        for done in (superseded, None if accepted else release):
            if done is not None:
                done()
        if accepted:
            self._wake.set()
        return accepted

    def count_dropped(self, n: int) -> None:
        """Live frames superseded before they reached this buffer (a decoder process's queue) count as dropped."""
        with self._cond:
            self.dropped += max(0, int(n))

    def take(self) -> Frame | None:
        with self._cond:
            if not self._items:
                return None
            frame, release = self._items.popleft()
            self._cond.notify()
        if release is not None:
            release()
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
            forgotten = [release for _, release in self._items if release is not None]
            self._items.clear()
            self._cond.notify_all()
        for release in forgotten:
            release()

    @property
    def finished(self) -> bool:
        """Closed and drained."""
        with self._cond:
            return self.closed and not self._items
