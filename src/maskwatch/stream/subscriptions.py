"""Who hears the engine: each consumer's bounded queue of events (and, when asked for, analysed frames
with their pixels), fed in order by the analysis thread.

A full queue makes the analysis wait (back-pressure; a live source then drops frames instead of lagging),
except once the engine is stopping and a subscriber has stopped reading past the stop deadline: then what
it has no room for is dropped with a warning, so shutdown cannot hang. The end of the engine is flagged on
every subscription, so a consumer that was busy when the end marker found its queue full still sees the end.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

__all__ = ["Audience", "Subscribers", "Subscription"]

log = logging.getLogger("maskwatch")

_END = object()  # closes a subscription

Audience = Literal["all", "frames", "plain"]  # everyone; frame subscribers only; the others only


class Subscription:
    """A consumer's bounded queue of events (and, with ``frames``, :class:`~maskwatch.stream.engine.AnalysedFrame`
    objects).

    Iterate it (ends when the engine ends or :meth:`close` is called), or :meth:`get` with a timeout."""

    def __init__(self, subscribers: Subscribers, maxsize: int, frames: bool):
        self._subscribers = subscribers
        self.frames = frames
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self.closed = False
        # set when the engine ends: the end is then known even if its marker found the queue full
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
        self._subscribers.remove(self)
        self.closed = True


class Subscribers:
    """The engine's subscriptions. ``give_up``: whether a publisher may stop waiting for a full queue (the
    engine is stopping and its deadline has passed)."""

    def __init__(self, give_up: Callable[[], bool]):
        self._give_up = give_up
        self._lock = threading.Lock()
        self._items: list[Subscription] = []

    def add(self, maxsize: int, frames: bool) -> Subscription:
        subscription = Subscription(self, maxsize, frames)
        with self._lock:
            self._items.append(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._items:
                self._items.remove(subscription)

    @property
    def want_frames(self) -> bool:
        """Whether any subscription asked for analysed frames."""
        with self._lock:
            return any(s.frames for s in self._items)

    def publish(self, item: Any, audience: Audience = "all") -> None:
        """Hand an item to the subscribers of ``audience``, waiting while a queue is full (back-pressure)."""
        with self._lock:
            subscribers = list(self._items)
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
                    if self._give_up():
                        log.warning("a subscriber is not reading; an event was not delivered to it")
                        break

    def end(self) -> None:
        """The engine has ended: every subscription ends once its consumer has read what is queued."""
        with self._lock:
            subscribers = list(self._items)
            self._items.clear()
        for subscription in subscribers:
            subscription.ended.set()
            with contextlib.suppress(queue.Full):
                subscription.queue.put_nowait(_END)
