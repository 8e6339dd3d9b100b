"""The node's durable outbox: every message is stored (SQLite, WAL) before it is published and deleted only
when the broker has acknowledged it (QoS 1 PUBACK).

A broker or network outage of any length loses nothing: messages wait on disk and drain in order (by
``seq``) when the link returns. A process killed at any moment (SIGKILL) resumes from what is on disk;
messages published but not yet acknowledged are sent again, which the control room stores once (ingest is
idempotent by event id). The disk budget bounds the backlog: when it is full, the oldest ``stats`` messages
go first, then the oldest of the others, each counted (``dropped_stats``, ``dropped_events``, kept on disk).

``synchronous=NORMAL`` in WAL mode survives a killed process; ``durable=True`` (``FULL``) also survives a
power cut at the cost of an fsync per write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Message", "Outbox"]

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
"""
_OVERHEAD = 64  # bytes per row beyond topic + payload (row header, index entries), for the budget


@dataclass(frozen=True)
class Message:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    created: float


class Outbox:
    """A FIFO of MQTT messages on disk. Thread-safe (one connection under a lock).

    Args:
        path: the SQLite file (its folder is made).
        budget_bytes: disk budget for stored messages (topic + payload + a small per-row overhead).
        durable: fsync every write (survives power loss, slower); default survives a killed process.
        journal: also keep the ``key`` (event id) of every message ever put, in the same transaction, in
            the ``journal`` table (audits and tests: what this node produced, exactly).
    """

    def __init__(
        self, path: str | Path, *, budget_bytes: int = 256 * 1024 * 1024, durable: bool = False, journal: bool = False
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = int(budget_bytes)
        self.journal = journal
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

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
    ) -> int:
        """Store one message (committed before this returns) and return its sequence number."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        size = len(data) + len(topic) + _OVERHEAD
        if size > self.budget_bytes:
            raise ValueError(f"message of {size} bytes exceeds the outbox budget ({self.budget_bytes} bytes)")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._make_room(size)
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, kind, size, created) VALUES (?,?,?,?,?,?,?)",
                    (topic, data, qos, int(retain), kind, size, time.time()),
                )
                if self.journal and key is not None:
                    self._db.execute("INSERT INTO journal (key, topic) VALUES (?, ?)", (key, topic))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count += 1
            self._bytes += size
            return int(cur.lastrowid or 0)

    def _make_room(self, size: int) -> None:
        """Drop the oldest stats, then the oldest anything, until ``size`` more bytes fit (in the caller's
        transaction)."""
        for kind_clause, counter in (
            ("WHERE kind = 'stats'", "dropped_stats"),
            ("WHERE kind != 'stats'", "dropped_events"),
        ):
            while self._bytes + size > self.budget_bytes:
                rows = self._db.execute(f"SELECT seq, size FROM outbox {kind_clause} ORDER BY seq LIMIT 256").fetchall()
                if not rows:
                    break
                need = self._bytes + size - self.budget_bytes
                drop, freed = [], 0
                for seq, row_size in rows:
                    drop.append(seq)
                    freed += row_size
                    if freed >= need:
                        break
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in drop])
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (counter, len(drop)),
                )
                self._count -= len(drop)
                self._bytes -= freed

    # -- reading and acknowledging --------------------------------------------------------------------

    def after(self, seq: int, limit: int = 100) -> list[Message]:
        """Up to ``limit`` stored messages with a sequence number above ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, kind, created FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def ack(self, *seqs: int) -> int:
        """Delete acknowledged messages (unknown ones, e.g. dropped by the budget, are ignored)."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed = removed = 0
                for seq in seqs:
                    row = self._db.execute("DELETE FROM outbox WHERE seq = ? RETURNING size", (seq,)).fetchone()
                    if row is not None:
                        removed += 1
                        freed += row[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= removed
            self._bytes -= freed
            return removed

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

    def close(self) -> None:
        with self._lock:
            self._db.close()
