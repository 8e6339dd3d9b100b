"""The node's durable outbox: every message is stored (SQLite, WAL) before it is published, and deleted only
when the control room says it has stored it (:meth:`Outbox.ack_ids`, end to end), never on the broker's
PUBACK alone (a broker crash then loses nothing either). Messages without an event id (nothing can
acknowledge them end to end) are deleted by sequence number (:meth:`Outbox.ack`).

A broker, network or control-room outage of any length loses nothing: messages wait on disk and drain in
order (by ``seq``) when the link returns. A process killed at any moment (SIGKILL) resumes from what is on
disk; messages published but not yet acknowledged are sent again, which the control room stores once
(ingest is idempotent by event id).

The disk budget bounds the backlog. When it is full, the oldest ``stats`` messages go first, then the oldest
of the others, among those **never sent** (a message handed to the network may have reached the control room:
it stays until acknowledged). The publisher reserves what it may send in blocks of up to a thousand sequence
numbers (:meth:`Outbox.take` reads a batch and marks it in one step under the outbox's lock: one write per
block, kept across restarts; a block is at most a quarter of the budget), so a budget is exceeded by at most
the messages sent and not yet acknowledged plus that block; every dropped message is **recorded** (table
``dropped``: event id, type, topic, when it was made and when it was dropped) under a numbered **drop
episode** (table ``drop_episodes``: when it began and ended, events and stats dropped, the span of their
creation times), counted (``dropped_stats``, ``dropped_events``) and logged once when the episode begins and
once when it ends (when the backlog is back under half the budget). ``on_episode`` is told both moments (the
agent republishes its status at once). The record is exact: what a node reports as dropped is precisely what
the control room will never receive.

``synchronous=NORMAL`` in WAL mode survives a killed process; ``durable=True`` (``FULL``) also survives a
power cut at the cost of an fsync per write.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from maskwatch.core.timeutil import iso

__all__ = ["DropEpisode", "DroppedMessage", "Message", "Outbox", "OutboxStatus", "Outgoing"]

log = logging.getLogger("maskwatch.fleet")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'event',
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, topic TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS drop_episodes (
    episode INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    ended REAL,
    events INTEGER NOT NULL DEFAULT 0,
    stats INTEGER NOT NULL DEFAULT 0,
    first_created REAL,
    last_created REAL
);
CREATE TABLE IF NOT EXISTS dropped (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    episode INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT,
    type TEXT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    created REAL NOT NULL,
    dropped REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, value INTEGER NOT NULL, updated REAL NOT NULL);
"""
#: columns added after the first release (an outbox.db of an older agent is upgraded in place)
_ADDED_COLUMNS = (("event_id", "TEXT"), ("type", "TEXT"))
_SENT_RESERVE = 1000  # sequence numbers reserved ahead at each write of the sent mark (one write per block)
_OVERHEAD = 64  # bytes per row beyond topic + payload (row header, index entries), for the budget
_SENT_MARK = "outbox:sent"  # the positions row of the sent mark
_RESUME_FRACTION = 0.5  # a drop episode ends once the backlog is back under this share of the budget


class Outgoing(NamedTuple):
    """A message to store (:meth:`Outbox.put_many`)."""

    topic: str
    payload: bytes | str
    kind: str = "event"  # "stats" go first when the budget is full
    key: str | None = None  # what the journal keeps (``type:id``)
    event_id: str | None = None  # default: the payload's ``id``
    event_type: str | None = None  # default: the payload's ``type``
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Message:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    created: float
    event_id: str | None = None  # what the control room acknowledges (None: deleted on the broker's PUBACK)


def _message(row: tuple[Any, ...]) -> Message:
    """A :class:`Message` from an outbox row (the columns every reader selects, in order)."""
    return Message(row[0], row[1], bytes(row[2]), row[3], bool(row[4]), row[5], row[6], row[7])


@dataclass(frozen=True)
class DroppedMessage:
    """One message the budget dropped: the control room will never receive it."""

    episode: int
    event_id: str | None
    type: str | None
    kind: str
    topic: str
    created: float  # when the engine made it (epoch seconds)
    dropped: float  # when the budget dropped it


@dataclass(frozen=True)
class DropEpisode:
    """Drops from the moment the outbox first hit its budget until its backlog was back under half of it."""

    episode: int
    started: float
    ended: float | None  # None: still dropping
    events: int
    stats: int
    first_created: float | None  # creation times of the oldest and newest message dropped
    last_created: float | None


@dataclass(frozen=True)
class OutboxStatus:
    """What the node's status says about its outbox (``maskwatch.node/1``'s ``outbox``)."""

    messages: int
    bytes: int
    budget_bytes: int
    dropped_events: int
    dropped_stats: int
    drop_episodes: int
    dropping: bool  # an episode is open now
    last_drop: DropEpisode | None

    def to_wire(self) -> dict[str, int | bool]:
        """Integers (and one flag), as a control room of any version reads them."""
        body: dict[str, int | bool] = {
            "messages": self.messages,
            "bytes": self.bytes,
            "budget_bytes": self.budget_bytes,
            "dropped_events": self.dropped_events,
            "dropped_stats": self.dropped_stats,
            "drop_episodes": self.drop_episodes,
            "dropping": self.dropping,
        }
        last = self.last_drop
        if last is not None:
            body["last_drop_started"] = int(last.started)
            if last.ended is not None:
                body["last_drop_ended"] = int(last.ended)
            if last.first_created is not None and last.last_created is not None:
                body["last_drop_first"] = int(last.first_created)
                body["last_drop_last"] = int(last.last_created) + 1  # a span that holds both ends
        return body


def _event_fields(data: bytes) -> tuple[str | None, str | None]:
    """``(id, type)`` of an engine event's JSON, or Nones for anything else."""
    try:
        body = json.loads(data)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    event_id, kind = body.get("id"), body.get("type")
    return (event_id if isinstance(event_id, str) else None), (kind if isinstance(kind, str) else None)


class Outbox:
    """A FIFO of MQTT messages on disk. Thread-safe (one connection under a lock).

    Args:
        path: the SQLite file (its folder is made).
        budget_bytes: disk budget for stored messages (topic + payload + a small per-row overhead).
        durable: fsync every write (survives power loss, slower); default survives a killed process.
        journal: also keep the ``key`` of every message ever put, in the same transaction, in the ``journal``
            table (audits and tests: what this node produced, exactly).
        on_episode: called (outside the lock) with the :class:`DropEpisode` when a drop episode begins and
            when it ends.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        budget_bytes: int = 256 * 1024 * 1024,
        durable: bool = False,
        journal: bool = False,
        on_episode: Callable[[DropEpisode], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = int(budget_bytes)
        self.journal = journal
        self.on_episode = on_episode
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._upgrade()
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        mark = self._db.execute("SELECT value FROM positions WHERE name = ?", (_SENT_MARK,)).fetchone()
        self._sent_mark = 0 if mark is None else int(mark[0])  # messages up to it may have been sent
        open_row = self._db.execute("SELECT MAX(episode) FROM drop_episodes WHERE ended IS NULL").fetchone()
        self._episode: int | None = open_row[0]  # the open drop episode, if any
        self._announce: list[DropEpisode] = []  # episode changes to report once the lock is released

    def _upgrade(self) -> None:
        """Add the columns an older agent's outbox lacks; fill them from the stored JSON."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        added = [name for name, _ in _ADDED_COLUMNS if name not in have]
        for name, kind in _ADDED_COLUMNS:
            if name in added:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")
        if "event_id" in added:
            self._db.execute(
                "UPDATE outbox SET event_id = json_extract(CAST(payload AS TEXT), '$.id'), "
                "type = json_extract(CAST(payload AS TEXT), '$.type') "
                "WHERE event_id IS NULL AND json_valid(CAST(payload AS TEXT))"
            )
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_event_id ON outbox (event_id)")

    # -- writing ---------------------------------------------------------------------------------------

    def put(
        self,
        topic: str,
        payload: bytes | str,
        *,
        kind: str = "event",
        qos: int = 1,
        retain: bool = False,
        key: str | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> int:
        """Store one message (committed before this returns) and return its sequence number. ``event_id``
        (default: the ``id`` of a JSON object payload) is what the control room acknowledges."""
        return self.put_many([Outgoing(topic, payload, kind, key, event_id, event_type, qos, retain)])[0]

    def put_many(self, messages: Sequence[Outgoing], *, position: tuple[str, int] | None = None) -> list[int]:
        """Store messages and, in the same transaction, a file position (``(name, value)``): what a
        restarted agent resumes from can never be behind what it already stored. Returns their sequence
        numbers."""
        rows = []
        for m in messages:
            data = m.payload.encode() if isinstance(m.payload, str) else bytes(m.payload)
            event_id, event_type = m.event_id, m.event_type
            if event_id is None:
                event_id, found_type = _event_fields(data)
                event_type = event_type or found_type
            size = len(data) + len(m.topic) + _OVERHEAD
            if size > self.budget_bytes:
                raise ValueError(f"message of {size} bytes exceeds the outbox budget ({self.budget_bytes} bytes)")
            rows.append((m, data, size, event_id, event_type))
        seqs = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for m, data, size, event_id, event_type in rows:
                    self._make_room(size)
                    cur = self._db.execute(
                        "INSERT INTO outbox (topic, payload, qos, retain, kind, size, created, event_id, type) "
                        "VALUES (?,?,?,?,?,?,?,?,?)",
                        (m.topic, data, m.qos, int(m.retain), m.kind, size, time.time(), event_id, event_type),
                    )
                    if self.journal and m.key is not None:
                        self._db.execute("INSERT INTO journal (key, topic) VALUES (?, ?)", (m.key, m.topic))
                    seqs.append(int(cur.lastrowid or 0))
                    self._count += 1
                    self._bytes += size
                if position is not None:
                    self._set_position(*position)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._reload()
                raise
        self._report()
        return seqs

    def _make_room(self, size: int) -> None:
        """Drop the oldest stats, then the oldest anything, until ``size`` more bytes fit (in the caller's
        transaction); every dropped row is recorded under the open drop episode."""
        for kind_clause, counter in (
            ("WHERE kind = 'stats' AND seq > ?", "dropped_stats"),
            ("WHERE kind != 'stats' AND seq > ?", "dropped_events"),
        ):
            while self._bytes + size > self.budget_bytes:
                rows = self._db.execute(
                    f"SELECT seq, size, event_id, type, kind, topic, created FROM outbox {kind_clause} "
                    "ORDER BY seq LIMIT 256",
                    (self._sent_mark,),
                ).fetchall()
                if not rows:
                    break
                need = self._bytes + size - self.budget_bytes
                drop, freed = [], 0
                for row in rows:
                    drop.append(row)
                    freed += row[1]
                    if freed >= need:
                        break
                episode, now = self._open_episode(), time.time()
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(r[0],) for r in drop])
                self._db.executemany(
                    "INSERT INTO dropped (episode, seq, event_id, type, kind, topic, created, dropped) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    [(episode, r[0], r[2], r[3], r[4], r[5], r[6], now) for r in drop],
                )
                stats = sum(r[4] == "stats" for r in drop)
                self._db.execute(
                    "UPDATE drop_episodes SET events = events + ?, stats = stats + ?, "
                    "first_created = COALESCE(first_created, ?), last_created = MAX(COALESCE(last_created, 0), ?) "
                    "WHERE episode = ?",
                    (len(drop) - stats, stats, min(r[6] for r in drop), max(r[6] for r in drop), episode),
                )
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (counter, len(drop)),
                )
                self._count -= len(drop)
                self._bytes -= freed

    def _open_episode(self) -> int:
        if self._episode is None:
            cur = self._db.execute("INSERT INTO drop_episodes (started) VALUES (?)", (time.time(),))
            self._episode = int(cur.lastrowid or 0)
            self._announce.append(self._episode_row(self._episode))
        return self._episode

    def _close_episode_if_room(self) -> None:
        """The backlog is back under half the budget: the open episode ends (in the caller's transaction)."""
        if self._episode is not None and self._bytes <= self.budget_bytes * _RESUME_FRACTION:
            self._db.execute("UPDATE drop_episodes SET ended = ? WHERE episode = ?", (time.time(), self._episode))
            self._announce.append(self._episode_row(self._episode))
            self._episode = None

    def _reload(self) -> None:
        """After a rollback: sizes and the open episode are what the database says (what the rolled back
        transaction changed never happened)."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        row = self._db.execute("SELECT MAX(episode) FROM drop_episodes WHERE ended IS NULL").fetchone()
        self._episode = row[0]
        self._announce.clear()

    def _report(self) -> None:
        """Log and announce episode changes (outside the lock: the callback may read the outbox)."""
        with self._lock:
            changes, self._announce = self._announce, []
        for episode in changes:
            if episode.ended is None:
                log.warning(
                    "outbox %s full (budget %.1f MB): dropping the oldest messages (drop episode %d; every "
                    "dropped message is recorded in its table 'dropped')",
                    self.path,
                    self.budget_bytes / 1e6,
                    episode.episode,
                )
            else:
                log.warning(
                    "outbox drop episode %d over: %d event(s) and %d stats bucket(s) dropped, made between %s and %s",
                    episode.episode,
                    episode.events,
                    episode.stats,
                    iso(episode.first_created),
                    iso(episode.last_created),
                )
            if self.on_episode is not None:
                try:
                    self.on_episode(episode)
                except Exception:
                    log.exception("drop episode %d not announced", episode.episode)

    # -- reading and acknowledging --------------------------------------------------------------------

    def after(self, seq: int, limit: int = 100) -> list[Message]:
        """Up to ``limit`` stored messages with a sequence number above ``seq``, oldest first (reading only:
        what is sent comes from :meth:`take`)."""
        with self._lock:
            rows = self._after(seq, limit)
        return [_message(r) for r in rows]

    def _after(self, seq: int, limit: int) -> list[tuple[Any, ...]]:
        return self._db.execute(
            "SELECT seq, topic, payload, qos, retain, kind, created, event_id FROM outbox WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()

    def take(self, seq: int, limit: int = 100) -> list[Message]:
        """What the publisher sends next: :meth:`after` and :meth:`mark_sent` in one step under the lock, so
        the budget cannot drop a message between its being read and its being marked (read, then marked, a
        message a producer dropped meanwhile was recorded as dropped and sent anyway)."""
        with self._lock:
            rows = self._after(seq, limit)
            if rows:
                self._mark_sent(int(rows[-1][0]))
        return [_message(r) for r in rows]

    def mark_sent(self, last: int) -> None:
        """Messages up to sequence number ``last`` are about to go out: from now on they may reach the control
        room, so the budget never drops them (the record of what was dropped stays exact). Written ahead in
        blocks (a restarted agent knows what its predecessor may have sent)."""
        with self._lock:
            self._mark_sent(last)

    def _mark_sent(self, last: int) -> None:
        if last <= self._sent_mark:
            return
        average = self._bytes / self._count if self._count else 1024.0
        reserve = min(_SENT_RESERVE, int(self.budget_bytes / average) // 4)  # at most a quarter of the budget
        self._sent_mark = last + max(0, reserve)
        self._set_position(_SENT_MARK, self._sent_mark)

    def by_seq(self, seqs: Iterable[int]) -> list[Message]:
        """The stored messages among these sequence numbers, oldest first (dropped ones are gone)."""
        wanted = sorted(set(seqs))
        found: list[Message] = []
        with self._lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                rows = self._db.execute(
                    "SELECT seq, topic, payload, qos, retain, kind, created, event_id FROM outbox "
                    f"WHERE seq IN ({','.join('?' * len(chunk))}) ORDER BY seq",
                    chunk,
                ).fetchall()
                found += [_message(r) for r in rows]
        return found

    def ack(self, *seqs: int) -> int:
        """Delete messages by sequence number (unknown ones, e.g. dropped by the budget, are ignored)."""
        return self._delete("seq", seqs)

    def ack_ids(self, event_ids: Iterable[str]) -> int:
        """Delete the messages of these event ids: the control room has stored them (unknown ids, already
        deleted or never here, are ignored). Returns how many were deleted."""
        return self._delete("event_id", list(event_ids))

    def _delete(self, column: str, keys: Iterable[int | str]) -> int:
        keys = list(keys)
        if not keys:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed = removed = 0
                for key in keys:
                    for (size,) in self._db.execute(f"DELETE FROM outbox WHERE {column} = ? RETURNING size", (key,)):
                        removed += 1
                        freed += size
                self._count -= removed
                self._bytes -= freed
                self._close_episode_if_room()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._reload()
                raise
        self._report()
        return removed

    # -- file positions (a restarted agent resumes a file where it stopped) ----------------------------

    def put_position(self, name: str, value: int) -> None:
        """Remember ``value`` (e.g. frames done) under ``name``."""
        with self._lock:
            self._set_position(name, value)

    def _set_position(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO positions (name, value, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated = excluded.updated",
            (name, int(value), time.time()),
        )

    def position(self, name: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM positions WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    # -- state -----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    def counters(self) -> dict[str, int]:
        with self._lock:
            rows = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return {
            "dropped_stats": int(rows.get("dropped_stats", 0)),
            "dropped_events": int(rows.get("dropped_events", 0)),
        }

    def _episode_row(self, episode: int) -> DropEpisode:
        row = self._db.execute(
            "SELECT episode, started, ended, events, stats, first_created, last_created FROM drop_episodes "
            "WHERE episode = ?",
            (episode,),
        ).fetchone()
        return DropEpisode(*row)

    def episodes(self) -> list[DropEpisode]:
        """Every drop episode, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT episode, started, ended, events, stats, first_created, last_created FROM drop_episodes "
                "ORDER BY episode"
            ).fetchall()
        return [DropEpisode(*row) for row in rows]

    def dropped(self, episode: int | None = None) -> list[DroppedMessage]:
        """Every message the budget dropped (of one episode, or all), in the order they were made."""
        where, args = ("WHERE episode = ?", (episode,)) if episode is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT episode, event_id, type, kind, topic, created, dropped FROM dropped {where} ORDER BY seq",
                args,
            ).fetchall()
        return [DroppedMessage(*row) for row in rows]

    def status(self) -> OutboxStatus:
        counters = self.counters()
        with self._lock:
            n = self._db.execute("SELECT COUNT(*), MAX(episode) FROM drop_episodes").fetchone()
            last = self._episode_row(n[1]) if n[1] is not None else None
            dropping = self._episode is not None
        return OutboxStatus(
            messages=self._count,
            bytes=self._bytes,
            budget_bytes=self.budget_bytes,
            dropped_events=counters["dropped_events"],
            dropped_stats=counters["dropped_stats"],
            drop_episodes=int(n[0]),
            dropping=dropping,
            last_drop=last,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
