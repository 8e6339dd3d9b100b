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
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import and_, case, insert, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from maskwatch.core.backoff import Backoff
from maskwatch.core.events import SourceStatus, TrackEnded, parse_event
from maskwatch.core.events import StatsBucket as StatsEvent
from maskwatch.core.redaction import redact
from maskwatch.core.timeutil import local_day_start, parse_time
from maskwatch.service.storage.db import Sessions, commit_durably, dialect_insert
from maskwatch.service.storage.models import CameraStatus, Ingested, PersonEvent, StatsBucket, StatsRollup

__all__ = ["BAD_STATES", "STORED_TYPES", "Ingestor", "write_events"]

log = logging.getLogger("maskwatch.service")

#: person events, stats buckets and each camera's latest state (``source_status``) are stored
STORED_TYPES = ("track_ended", "stats", "source_status")
#: a camera in one of these states is down (``camera_offline`` rules)
BAD_STATES = ("lost", "reconnecting", "failed")
HOUR, DAY = 3600, 86400


def _ts(value: datetime) -> float:
    """Epoch seconds; a naive time (an older or foreign producer) is UTC, never the server's zone."""
    return parse_time(value).timestamp()


def _store_people(session: Session, events: list[TrackEnded]) -> int:
    """Insert the batch's person events in one statement; an event id stored before is skipped."""
    unique: dict[str, TrackEnded] = {}
    for event in events:
        unique.setdefault(event.id, event)  # the first of a re-sent id, in arrival order (ids order the events)
    if not unique:
        return 0
    rows = [
        {
            "event_id": event.id,
            "type": event.type,
            "camera": event.source,
            "ts": _ts(event.last_seen),
            "label": event.label,
            "compliant": event.compliant,
            "probability": event.probability,
            "n_frames": event.n_frames,
            "false_positive": False,
            "snapshot": event.snapshot,
            "data": event.to_dict(),
        }
        for event in unique.values()
    ]
    stmt = dialect_insert(session, PersonEvent).on_conflict_do_nothing(index_elements=["event_id"])
    # rows actually inserted (rowcount is -1 with psycopg here; RETURNING is exact)
    return len(session.connection().execute(stmt.returning(PersonEvent.id), rows).all())


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _claim(session: Session, events: list[StatsEvent]) -> list[StatsEvent]:
    """The stats events not stored before (their ids claimed in the ``ingested`` table), in arrival order."""
    unique: dict[str, StatsEvent] = {}
    for event in events:
        unique.setdefault(event.id, event)
    if not unique:
        return []
    stmt = (
        dialect_insert(session, Ingested)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(Ingested.event_id)
    )
    rows = [{"event_id": e.id, "type": e.type, "ts": _ts(e.end)} for e in unique.values()]
    claimed = set(session.connection().execute(stmt, rows).scalars())
    return [event for event in unique.values() if event.id in claimed]


def _bucket_row(event: StatsEvent) -> dict[str, Any]:
    return {
        "camera": event.source,
        "start_ts": _ts(event.start),
        "end_ts": _ts(event.end),
        "interval": event.interval,
        "n_people": event.n_people,
        "compliant_people": event.compliant_people,
        "people": dict(event.people),
        "present_max": event.present_max,
        "frames_analysed": event.frames_analysed,
        "frames_dropped": event.frames_dropped,
        "faces_classified": event.faces_classified,
        "analysed_fps": event.analysed_fps,
        "lag_p50": event.lag.p50,
        "lag_p95": event.lag.p95,
        "lag_max": event.lag.max,
    }


def _merge_bucket(row: dict[str, Any], event: StatsEvent) -> None:
    """The camera restarted inside this interval: one bucket, counts added."""
    people = dict(row["people"] or {})
    for label, n in event.people.items():
        people[label] = people.get(label, 0) + n
    span_before = max(1e-6, row["end_ts"] - row["start_ts"])
    row["people"] = people
    for key in ("n_people", "compliant_people", "frames_analysed", "frames_dropped", "faces_classified"):
        row[key] += getattr(event, key)
    row["present_max"] = max(row["present_max"], event.present_max)
    row["end_ts"] = max(row["end_ts"], _ts(event.end))
    row["analysed_fps"] = round(row["frames_analysed"] / max(span_before, row["end_ts"] - row["start_ts"]), 3)
    for key in ("p50", "p95", "max"):
        row[f"lag_{key}"] = _max(row[f"lag_{key}"], getattr(event.lag, key))


def _store_buckets(session: Session, events: list[StatsEvent]) -> None:
    """One bucket per (camera, start): the batch's new ones inserted in one statement, the others (a camera
    restarted inside an interval) merged into the stored row."""
    table = StatsBucket.__table__
    cameras = {event.source for event in events}
    starts = {_ts(event.start) for event in events}
    # a superset of the keys asked for (every camera x every start), found through the unique index
    found = session.execute(select(table).where(table.c.camera.in_(cameras), table.c.start_ts.in_(starts)))
    rows = {(row["camera"], row["start_ts"]): dict(row) for row in found.mappings()}
    stored = set(rows)
    merged: set[tuple[str, float]] = set()
    for event in events:
        key = (event.source, _ts(event.start))
        row = rows.get(key)
        if row is None:
            rows[key] = _bucket_row(event)
        else:
            _merge_bucket(row, event)
            merged.add(key)
    connection = session.connection()
    new = [row for key, row in rows.items() if key not in stored]
    if new:
        connection.execute(insert(StatsBucket), new)
    for key in merged & stored:
        row = rows[key]
        connection.execute(update(StatsBucket).where(StatsBucket.id == row.pop("id")).values(**row))


def _store_rollups(session: Session, events: list[StatsEvent], zone: tzinfo) -> None:
    """Add the batch to the hourly (UTC hours) and daily (days of the site's time zone ``zone``, starting at
    its local midnight) rollups: summed per (grain, camera, start) here, then one upsert (add the sums, keep
    the maxima) for the batch."""
    sums: dict[tuple[int, str, int], dict[str, Any]] = {}
    for event in events:
        start = _ts(event.start)
        for grain in (HOUR, DAY):
            at = int(math.floor(start / HOUR) * HOUR) if grain == HOUR else local_day_start(start, zone)
            r = sums.get((grain, event.source, at))
            if r is None:
                sums[(grain, event.source, at)] = {
                    "grain": grain,
                    "camera": event.source,
                    "start_ts": at,
                    "n_people": event.n_people,
                    "compliant_people": event.compliant_people,
                    "frames_analysed": event.frames_analysed,
                    "frames_dropped": event.frames_dropped,
                    "present_max": event.present_max,
                    "lag_p95_max": event.lag.p95,
                }
            else:
                r["n_people"] += event.n_people
                r["compliant_people"] += event.compliant_people
                r["frames_analysed"] += event.frames_analysed
                r["frames_dropped"] += event.frames_dropped
                r["present_max"] = max(r["present_max"], event.present_max)
                r["lag_p95_max"] = _max(r["lag_p95_max"], event.lag.p95)
    if not sums:
        return
    stmt = dialect_insert(session, StatsRollup)
    new, old = stmt.excluded, StatsRollup.__table__.c
    stmt = stmt.on_conflict_do_update(
        index_elements=["grain", "camera", "start_ts"],
        set_={
            "n_people": old.n_people + new.n_people,
            "compliant_people": old.compliant_people + new.compliant_people,
            "frames_analysed": old.frames_analysed + new.frames_analysed,
            "frames_dropped": old.frames_dropped + new.frames_dropped,
            "present_max": case((new.present_max > old.present_max, new.present_max), else_=old.present_max),
            "lag_p95_max": case(
                (old.lag_p95_max.is_(None), new.lag_p95_max),
                (new.lag_p95_max > old.lag_p95_max, new.lag_p95_max),
                else_=old.lag_p95_max,
            ),
        },
    )
    session.connection().execute(stmt, list(sums.values()))


def _store_stats(session: Session, events: list[StatsEvent], zone: tzinfo) -> int:
    new = _claim(session, events)
    if new:
        _store_buckets(session, new)
        _store_rollups(session, new, zone)
        session.flush()
    return len(new)


def _store_statuses(session: Session, events: list[SourceStatus]) -> None:
    """Each camera's latest state: one upsert per camera of the batch; an older status (re-sent, or late)
    never overwrites a newer one, and ``since_ts`` moves only when the camera turns from good to bad or back."""
    latest: dict[str, SourceStatus] = {}
    for event in events:
        seen = latest.get(event.source)
        if seen is None or _ts(event.time) >= _ts(seen.time):
            latest[event.source] = event
    if not latest:
        return
    rows = [
        {
            "camera": e.source,
            "state": e.state,
            "reason": redact(e.reason) if e.reason else None,
            "since_ts": _ts(e.time),
            "ts": _ts(e.time),
        }
        for e in latest.values()
    ]
    stmt = dialect_insert(session, CameraStatus)
    old, new = CameraStatus.__table__.c, stmt.excluded
    was_bad, is_bad = old.state.in_(BAD_STATES), new.state.in_(BAD_STATES)
    same_side = (was_bad & is_bad) | (~was_bad & ~is_bad)
    stmt = stmt.on_conflict_do_update(
        index_elements=["camera"],
        set_={
            "state": new.state,
            "reason": new.reason,
            "ts": new.ts,
            "since_ts": case((and_(same_side), old.since_ts), else_=new.since_ts),
        },
        where=new.ts >= old.ts,
    )
    for row in rows:
        session.connection().execute(stmt, row)


def write_events(session: Session, events: Iterable[Any], zone: tzinfo = UTC) -> int:
    """Store the storable events (person events, stats buckets, cameras' states) in the session's
    transaction, a few statements per batch; returns how many person events and buckets were new.
    Idempotent: an event stored before is skipped. ``zone``: the site's time zone (daily rollups)."""
    events = list(events)
    people = [event for event in events if isinstance(event, TrackEnded)]
    stats = [event for event in events if isinstance(event, StatsEvent)]
    _store_statuses(session, [event for event in events if isinstance(event, SourceStatus)])
    return _store_people(session, people) + _store_stats(session, stats, zone)


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
        on_done: called from the writer thread with the events it has finished with: stored (committed)
            or refused for good (the durable spool then forgets them).
        zone: the site's time zone (daily rollups start at its midnight).
        on_reject: called (from the writer thread) with an event the database refuses and the error, before
            it counts as done (the dead-letter table): raising an outage keeps the event for the next try.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        capacity: int = 200_000,
        batch: int = 500,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        on_error: Callable[[BaseException], None] | None = None,
        on_done: Callable[[list[Any]], None] | None = None,
        on_reject: Callable[[Any, BaseException], None] | None = None,
        zone: tzinfo = UTC,
    ) -> None:
        self.sessions = sessions
        self.on_done = on_done
        self.on_reject = on_reject
        self.zone = zone
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
        waits = Backoff(self.backoff, max(self.backoff, self.max_backoff), jitter=0.1)
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
                    self._finished(items)
                    if not self.healthy:
                        log.warning("database reachable again; ingest resumed")
                    self.healthy = True
                    waits.reset()
                    break
                except Exception as exc:
                    if self.on_error is not None:
                        self.on_error(exc)
                    if _is_outage(exc):
                        if self.healthy:
                            log.error("database unreachable, buffering events and retrying: %s", type(exc).__name__)
                        self.healthy = False
                        first = str(exc).splitlines()[0] if str(exc) else ""
                        self.last_error = redact(f"{type(exc).__name__}: {first}")[:240]
                        if self._stop.wait(waits.next()):
                            return  # stop() has waited for the flush already; what is left is reported
                        continue
                    self._write_each(items)  # one bad event must not block the others
                    break
            self._done()

    def _write(self, items: list[Any]) -> None:
        with self.sessions() as session, session.begin():
            commit_durably(session)  # what commits here is acknowledged to nodes and forgotten by the spool
            self.written += write_events(session, items, self.zone)

    def _finished(self, items: list[Any]) -> None:
        if self.on_done is not None and items:
            try:
                self.on_done(items)
            except Exception:
                log.exception("ingest: the done callback failed")

    def _write_each(self, items: list[Any]) -> None:
        for item in items:
            try:
                self._write([item])
                self._finished([item])
            except Exception as exc:
                if not _is_outage(exc) and self.on_reject is not None:
                    try:
                        self.on_reject(item, exc)  # recorded as a dead letter before it counts as done
                    except Exception as failure:
                        exc = failure
                if _is_outage(exc):  # went down meanwhile: keep the rest for the next round
                    with self._cond:
                        self._buffer.extendleft(reversed(items[items.index(item) :]))
                    self.healthy = False
                    return
                self.rejected += 1
                log.error(
                    "event %s (%s) could not be stored: %s", getattr(item, "id", "?"), getattr(item, "type", "?"), exc
                )
                self._finished([item])  # refused for good: sending it again would not help
