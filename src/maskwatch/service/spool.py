"""The durable spool of the control room's own cameras: every event to store is written to disk (the fleet's
outbox, :class:`maskwatch.fleet.outbox.Outbox`: SQLite, WAL, committed before :meth:`Spool.store` returns)
*before* it goes to the ingestor, and forgotten only once the ingestor has committed it to the database.

So a process killed at any moment (SIGKILL, power cut of the machine with ``durable``), during a database
outage or not, loses nothing its engine reported: at the next start :meth:`Spool.start` hands everything
left on disk to the ingestor again, and storage being idempotent by event id, what had already been
committed is stored once. The in-memory ingest buffer becomes a cache of the spool: an event it refuses
(full during a long outage) stays on disk and is handed over again when there is room, so the disk budget
(``spool.budget_mb``), not memory, bounds what an outage can hold. When the budget is full the oldest stats
buckets go first, then the oldest events (counted by the outbox, logged here).

Edge nodes keep their events the same way (their outbox, until the broker has them); one mechanism.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskwatch.fleet.outbox import Outbox

if TYPE_CHECKING:
    from maskwatch.service.storage.ingest import Ingestor

__all__ = ["Spool"]

log = logging.getLogger("maskwatch.service")


class Spool:
    """Events of this worker's cameras on disk until stored.

    Args:
        path: the spool file (``DATA_DIR/spool.db``; one per worker, like its data dir).
        ingestor: the writer the events go to; its ``on_done`` must call :meth:`done`.
        budget_bytes: disk budget of the spool.
        journal: also keep the id of every event ever spooled (the outbox's ``journal`` table: audits, tests).
    """

    def __init__(self, path: Path, ingestor: Ingestor, *, budget_bytes: int, journal: bool = False) -> None:
        self.path = path
        self.ingestor = ingestor
        self.outbox = Outbox(path, budget_bytes=budget_bytes, journal=journal)
        self._lock = threading.Lock()  # spool writes and the replay's claims (local disk only, never the database)
        self._queued: dict[str, int] = {}  # event id -> spool seq, handed to the ingestor and not yet done
        self._queued_seqs: set[int] = set()
        self._rewind: int | None = None  # replay again from after this seq (an event the ingestor refused)
        self._cursor = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.replayed = 0
        self._dropped_seen = 0

    # -- the event path --------------------------------------------------------------------------------

    def store(self, event: Any) -> bool:
        """Write ``event`` to disk, then hand it to the ingestor (never waiting for room). True: on disk (it
        will be stored, now or after a restart); False only when the spool itself cannot write (disk full),
        in which case the event still went to the ingestor's buffer if there was room."""
        try:
            with self._lock:
                seq = self.outbox.put(f"local/{event.source}", event.to_json(), kind=event.type, key=event.id)
                self._queued[event.id] = seq
                self._queued_seqs.add(seq)
        except Exception:
            log.exception("spool: event %s not written to disk", event.id)
            return self.ingestor.ingest(event)
        if not self.ingestor.ingest(event):
            with self._lock:  # refused (buffer full): it waits on disk and is handed over again later
                self._queued.pop(event.id, None)
                self._queued_seqs.discard(seq)
                self._rewind = seq - 1 if self._rewind is None else min(self._rewind, seq - 1)
            self._wake.set()
        self._check_budget()
        return True

    def done(self, events: list[Any]) -> None:
        """The ingestor finished with ``events`` (committed, or refused for good): forget them."""
        with self._lock:
            seqs = [seq for seq in (self._queued.pop(getattr(e, "id", ""), None) for e in events) if seq is not None]
            self._queued_seqs.difference_update(seqs)
        if seqs:
            self.outbox.ack(*seqs)

    @property
    def backlog(self) -> int:
        """Events on disk not yet stored."""
        return len(self.outbox)

    def _check_budget(self) -> None:
        if self.outbox.bytes < self.outbox.budget_bytes * 0.9:
            return  # far from full: nothing can have been dropped since the last look
        dropped = sum(self.outbox.counters().values())
        if dropped > self._dropped_seen:
            log.error(
                "spool full (%d MB): %d of the oldest events dropped so far (raise spool.budget_mb)",
                self.outbox.budget_bytes // 2**20,
                dropped,
            )
            self._dropped_seen = dropped

    # -- replay ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Hand what the last run left on disk to the ingestor (from a thread, waiting for room), then
        stand by for events the ingestor refuses."""
        left = len(self.outbox)
        if left:
            log.warning("spool: %d event(s) left by the last run are being stored", left)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="maskwatch-spool", daemon=True)
        self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(3.0)
            self._thread = None
        left = len(self.outbox)
        if left:
            log.warning("spool: %d event(s) not stored yet stay on disk for the next start (%s)", left, self.path)
        self.outbox.close()

    def _claim(self) -> list[Any]:
        """The next page of spooled events not with the ingestor now, marked as handed over."""
        with self._lock:
            if self._rewind is not None:
                self._cursor, self._rewind = min(self._cursor, self._rewind), None
            page = self.outbox.after(self._cursor, 200)
            if page:
                self._cursor = page[-1].seq
            fresh = [m for m in page if m.seq not in self._queued_seqs]
            for message in fresh:
                self._queued_seqs.add(message.seq)
            return fresh if page else []

    def _run(self) -> None:
        from maskwatch.stream import parse_event

        while not self._stop.is_set():
            self._wake.wait(5.0)
            self._wake.clear()
            while not self._stop.is_set():
                with self._lock:
                    before = self._cursor
                messages = self._claim()
                if not messages and self._cursor == before:
                    break
                for message in messages:
                    try:
                        event = parse_event(message.payload)
                    except Exception:
                        log.exception("spool: message %d unreadable, dropped", message.seq)
                        self.outbox.ack(message.seq)
                        continue
                    with self._lock:
                        self._queued[event.id] = message.seq
                    if self.ingestor.ingest(event, block=True):
                        self.replayed += 1
                    else:  # stopping: it stays on disk for the next start
                        with self._lock:
                            self._queued.pop(event.id, None)
                            self._queued_seqs.discard(message.seq)
                        return
