"""Retention: delete what is older than its period (``retention.*`` settings), once per ``purge_every_s``,
on its own thread, in transactions of ``batch_rows`` rows (a writer waits for one batch at most). Snapshots
go first (after ``media_days``, or with their events after ``events_days``), then rows of every table, then
finished jobs with their event files."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from maskwatch.service.storage.retention import Cutoffs

if TYPE_CHECKING:
    from maskwatch.service.jobs import JobManager
    from maskwatch.service.media import Media
    from maskwatch.service.settings import RetentionSettings
    from maskwatch.service.storage import Storage

__all__ = ["Retention"]

log = logging.getLogger("maskwatch.service")

DAY = 86400.0


class Retention:
    def __init__(self, storage: Storage, media: Media, jobs: JobManager, settings: RetentionSettings) -> None:
        self.storage = storage
        self.media = media
        self.jobs = jobs
        self.settings = settings
        self.last_purge = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def purge(self, now: float | None = None) -> dict[str, int]:
        """Delete what is older than its period as of ``now``; returns what was deleted per table
        (``snapshots``: files, ``jobs``: finished jobs)."""
        now = time.time() if now is None else now
        r = self.settings
        cut = Cutoffs(
            events=now - r.events_days * DAY,
            media=now - min(r.media_days, r.events_days) * DAY,
            buckets=now - r.buckets_days * DAY,
            rollups=now - r.rollups_days * DAY,
            audit=now - r.audit_days * DAY,
            sessions=now,
        )
        counts = self.storage.retention.purge(
            cut, self.media.delete, batch=r.batch_rows, pause=r.batch_pause_s, stopping=self._stop.is_set
        )
        counts["jobs"] = self.jobs.purge(cut.events)  # with their event files
        return counts

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="maskwatch-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(min(60.0, self.settings.purge_every_s)):
            if time.time() - self.last_purge < self.settings.purge_every_s:
                continue
            self.last_purge = time.time()
            try:
                deleted = self.purge()
                if any(deleted.values()):
                    log.info("retention purge: %s", deleted)
            except Exception:
                log.exception("retention purge failed")
