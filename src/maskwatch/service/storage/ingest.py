"""Storing the engine's events: one entry point, :meth:`Ingestor.ingest`, for every producer (the service's
own engine today, MQTT ingest of edge nodes later).

``ingest`` never blocks on the database: events go to a bounded in-memory buffer that one writer thread
drains in batches, one transaction each. When the database is unreachable the batch stays and is retried
with backoff (``healthy`` turns False, ``/readyz`` says so), so an outage loses nothing as long as the buffer
holds; writes are idempotent (person events by their unique event id, stats by the ``ingested`` table), so a
batch re-sent after an ambiguous failure is stored once.

A producer that can be slowed down without loss (MQTT ingest: the broker keeps what is not acknowledged)
calls ``ingest(event, block=True)``: when the buffer is full it waits for room instead of dropping.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from maskwatch.service.storage.models import Ingested, PersonEvent, StatsBucket, StatsRollup
from maskwatch.stream.events import StatsBucket as StatsEvent
from maskwatch.stream.events import TrackEnded, parse_event

__all__ = ["STORED_TYPES", "Ingestor", "write_events"]

log = logging.getLogger("maskwatch.service")

STORED_TYPES = ("track_ended", "stats")
ROLLUP_GRAINS = (3600, 86400)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _insert(session: Session, model: type) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(model)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(model)


def _store_person(session: Session, event: TrackEnded) -> bool:
    stmt = (
        _insert(session, PersonEvent)
        .values(
            event_id=event.id,
            type=event.type,
            camera=event.source,
            ts=_ts(event.last_seen),
            label=event.label,
            compliant=event.compliant,
            probability=event.probability,
            n_frames=event.n_frames,
            false_positive=False,
            snapshot=event.snapshot,
            data=event.to_dict(),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(PersonEvent.id)
    )
    return session.execute(stmt).first() is not None  # (rowcount is -1 with psycopg here; RETURNING is exact)


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _store_stats(session: Session, event: StatsEvent) -> bool:
    claim = _insert(session, Ingested).values(event_id=event.id, type=event.type, ts=_ts(event.end))
    claim = claim.on_conflict_do_nothing(index_elements=["event_id"]).returning(Ingested.event_id)
    if session.execute(claim).first() is None:
        return False  # stored before (a re-sent batch)
    start = _ts(event.start)
    row = session.scalars(
        select(StatsBucket).where(StatsBucket.camera == event.source, StatsBucket.start_ts == start)
    ).first()
    if row is None:
        session.add(
            StatsBucket(
                camera=event.source,
                start_ts=start,
                end_ts=_ts(event.end),
                interval=event.interval,
                n_people=event.n_people,
                compliant_people=event.compliant_people,
                people=dict(event.people),
                present_max=event.present_max,
                frames_analysed=event.frames_analysed,
                frames_dropped=event.frames_dropped,
                faces_classified=event.faces_classified,
                analysed_fps=event.analysed_fps,
                lag_p50=event.lag.p50,
                lag_p95=event.lag.p95,
                lag_max=event.lag.max,
            )
        )
    else:  # the camera restarted inside this interval: one bucket, counts added
        people = dict(row.people or {})
        for label, n in event.people.items():
            people[label] = people.get(label, 0) + n
        span_before = max(1e-6, row.end_ts - row.start_ts)
        row.people = people
        row.n_people += event.n_people
        row.compliant_people += event.compliant_people
        row.present_max = max(row.present_max, event.present_max)
        row.frames_analysed += event.frames_analysed
        row.frames_dropped += event.frames_dropped
        row.faces_classified += event.faces_classified
        row.end_ts = max(row.end_ts, _ts(event.end))
        row.analysed_fps = round(row.frames_analysed / max(span_before, row.end_ts - row.start_ts), 3)
        row.lag_p50 = _max(row.lag_p50, event.lag.p50)
        row.lag_p95 = _max(row.lag_p95, event.lag.p95)
        row.lag_max = _max(row.lag_max, event.lag.max)
    for grain in ROLLUP_GRAINS:
        at = int(math.floor(start / grain) * grain)
        rollup = session.scalars(
            select(StatsRollup).where(
                StatsRollup.grain == grain, StatsRollup.camera == event.source, StatsRollup.start_ts == at
            )
        ).first()
        if rollup is None:
            session.add(
                StatsRollup(
                    grain=grain,
                    camera=event.source,
                    start_ts=at,
                    n_people=event.n_people,
                    compliant_people=event.compliant_people,
                    frames_analysed=event.frames_analysed,
                    frames_dropped=event.frames_dropped,
                    present_max=event.present_max,
                    lag_p95_max=event.lag.p95,
                )
            )
        else:
            rollup.n_people += event.n_people
            rollup.compliant_people += event.compliant_people
            rollup.frames_analysed += event.frames_analysed
            rollup.frames_dropped += event.frames_dropped
            rollup.present_max = max(rollup.present_max, event.present_max)
            rollup.lag_p95_max = _max(rollup.lag_p95_max, event.lag.p95)
    session.flush()
    return True


def write_events(session: Session, events: Iterable[Any]) -> int:
    """Store the storable events (person events and stats buckets) in the session's transaction; returns
    how many were new. Idempotent: an event stored before is skipped."""
    new = 0
    for event in events:
        if isinstance(event, TrackEnded):
            new += _store_person(session, event)
        elif isinstance(event, StatsEvent):
            new += _store_stats(session, event)
    return new


def _is_outage(exc: BaseException) -> bool:
    """The database is unreachable (retry later) rather than refusing this data."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class Ingestor:
    """Buffers events and writes them from one thread; see the module docstring.

    Args:
        sessions: a ``sessionmaker`` bound to the database.
        capacity: events held while the database is down; beyond it new events are refused and counted in
            ``dropped`` (and logged once per outage).
        batch: events per transaction.
        on_error: called with each exception (metrics).
    """

    def __init__(
        self,
        sessions: sessionmaker,
        *,
        capacity: int = 200_000,
        batch: int = 500,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.capacity = capacity
        self.batch = batch
        self.backoff, self.max_backoff = backoff, max_backoff
        self.on_error = on_error
        self._buffer: deque[Any] = deque()
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the writer waits for events
        self._room = threading.Condition(lock)  # blocking producers wait for room
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self.healthy = True
        self.last_error: str | None = None
        self.written = 0  # new rows stored
        self.received = 0
        self.dropped = 0
        self.rejected = 0  # malformed events (never retried)
        self.retries = 0

    # -- the one entry point -----------------------------------------------------------------------------

    def ingest(self, event: Any, *, block: bool = False) -> bool:
        """Queue one engine event (a typed event, its dict or its JSON) for storage; True when queued.
        Events of other types (status, frames, ...) are not stored and return False. A full buffer drops
        the event (counted in ``dropped``), or with ``block`` waits for room (False only if the ingestor
        stops meanwhile: the caller still holds the event)."""
        if not hasattr(event, "type"):
            try:
                event = parse_event(event)
            except Exception:
                self.rejected += 1
                return False
        if event.type not in STORED_TYPES:
            return False
        with self._cond:
            while block and len(self._buffer) >= self.capacity:
                if self._stop.is_set():
                    return False
                self._room.wait(0.5)
            if len(self._buffer) >= self.capacity:
                if self.dropped == 0 or self.healthy:
                    log.error(
                        "ingest buffer full (%d events): dropping new events until the database is back", self.capacity
                    )
                self.dropped += 1
                return False
            self._buffer.append(event)
            self.received += 1
            self._cond.notify()
        return True

    # -- the writer --------------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._buffer) + self._inflight

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="maskwatch-ingest", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is stored (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backlog == 0:
                return True
            time.sleep(0.02)
        return self.backlog == 0

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what is buffered (for up to ``timeout`` seconds), then stop; True when nothing was left."""
        flushed = self.flush(timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if not flushed:
            log.error(
                "ingest stopped with %d event(s) not stored (database unreachable: %s)", self.backlog, self.last_error
            )
        return flushed

    def _take(self) -> list[Any]:
        with self._cond:
            while not self._buffer and not self._stop.is_set():
                self._cond.wait(0.5)
            items = [self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer)))]
            self._inflight = len(items)
            if items:
                self._room.notify_all()
            return items

    def _done(self) -> None:
        with self._cond:
            self._inflight = 0

    def _run(self) -> None:
        wait = self.backoff
        while True:
            items = self._take()
            if not items:
                self._done()
                if self._stop.is_set():
                    return
                continue
            while True:
                try:
                    self._write(items)
                    if not self.healthy:
                        log.warning("database reachable again; ingest resumed")
                    self.healthy, wait = True, self.backoff
                    break
                except Exception as exc:
                    if self.on_error is not None:
                        self.on_error(exc)
                    if _is_outage(exc):
                        if self.healthy:
                            log.error("database unreachable, buffering events and retrying: %s", type(exc).__name__)
                        self.healthy = False
                        self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                        self.retries += 1
                        if self._stop.wait(wait):
                            return  # stop() has waited for the flush already; what is left is reported
                        wait = min(self.max_backoff, wait * 2)
                        continue
                    self._write_each(items)  # one bad event must not block the others
                    break
            self._done()

    def _write(self, items: list[Any]) -> None:
        with self.sessions() as session, session.begin():
            self.written += write_events(session, items)

    def _write_each(self, items: list[Any]) -> None:
        for item in items:
            try:
                self._write([item])
            except Exception as exc:
                if _is_outage(exc):  # went down meanwhile: keep the rest for the next round
                    with self._cond:
                        self._buffer.extendleft(reversed(items[items.index(item) :]))
                    self.healthy = False
                    return
                self.rejected += 1
                log.error(
                    "event %s (%s) could not be stored: %s", getattr(item, "id", "?"), getattr(item, "type", "?"), exc
                )
