"""The one entry point for engine events: this service's own engine (through :meth:`EventPipeline.start`'s
subscription) and any other producer (the fleet's MQTT ingest) call :meth:`EventPipeline.handle_event`.

One event, top-down:

1. parse (a dict or JSON from the wire becomes a typed event); frame records and run summaries stop here;
2. for this worker's own cameras (``local``): the camera's lease (``admit``: an event of a camera this
   worker no longer owns is dropped, so a camera taken over by another worker is never counted twice),
   then the journal (``server.journal``);
3. metrics (Prometheus counters) and the live state (each camera's state, people since start);
4. storage: this worker's own cameras' events go to the durable spool first (on disk before anything else;
   forgotten once stored), then the ingestor's buffer (idempotent by event id); an event refused (buffer
   full, no spool) drops its snapshot file, so no file is left without its event;
5. the dashboard's live stream (SSE) for the types it shows.

Alert rules read the database (complete data from every worker), not this flow.

The return value says whether an event to store was queued: a producer that can resend (MQTT ingest) does
not acknowledge an event that was not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from maskwatch.service.live import SSE_TYPES, event_for_client
from maskwatch.service.storage.ingest import STORED_TYPES

if TYPE_CHECKING:
    from pathlib import Path

    from maskwatch.service.live import Hub, LiveState
    from maskwatch.service.media import Media
    from maskwatch.service.metrics import Metrics
    from maskwatch.service.spool import Spool
    from maskwatch.service.storage.ingest import Ingestor
    from maskwatch.stream import StreamEngine

__all__ = ["SKIPPED_TYPES", "EventPipeline"]

log = logging.getLogger("maskwatch.service")

#: event types the service does not consume (per-frame records and end-of-run summaries)
SKIPPED_TYPES = ("frame", "summary")
#: what ``server.journal`` keeps of this service's own cameras (what it stores, and their states)
JOURNAL_TYPES = ("track_ended", "stats", "source_status")


class EventPipeline:
    """Lease, journal, metrics, live state, storage and the live stream, in this order, for every event.

    ``spool``: this worker's cameras' events go to disk before the ingestor (None: memory only);
    ``admit(camera)``: whether this worker still owns a local camera (its lease); ``journal``: a file that
    gets every admitted event of this worker's own engine, one JSON per line (audits, the chaos soak)."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        live: LiveState,
        ingestor: Ingestor,
        media: Media,
        hub: Hub,
        spool: Spool | None = None,
        admit: Callable[[str], bool] | None = None,
        journal: Path | None = None,
    ) -> None:
        self.metrics = metrics
        self.live = live
        self.ingestor = ingestor
        self.media = media
        self.hub = hub
        self.spool = spool
        self.admit = admit
        self.journal_path = journal
        self._journal: IO[str] | None = None
        self.fenced = 0  # events of cameras this worker no longer owned, dropped
        self._pump: threading.Thread | None = None

    def handle_event(self, event: Any, *, block: bool = False, local: bool = False) -> bool:
        """Take one engine event (a typed event, its dict or its JSON). False when an event to store was not
        queued (buffer full; with ``block``, which waits for room instead, only when stopping). ``local``:
        an event of this worker's own engine (leased, journaled, spooled)."""
        if not hasattr(event, "type"):
            from maskwatch.stream import parse_event

            event = parse_event(event)
        if event.type in SKIPPED_TYPES:
            return True
        if local:
            if self.admit is not None and not self.admit(event.source):
                self.fenced += 1
                log.debug("%s of %s dropped: this worker no longer runs that camera", event.type, event.source)
                return True
            if self._journal is not None and event.type in JOURNAL_TYPES:
                self._journal.write(event.to_json() + "\n")
        self.metrics.observe(event)
        self.live.observe(event)
        if event.type not in STORED_TYPES:
            queued = True
        elif local and self.spool is not None:
            queued = self.spool.store(event)  # on disk first: stored now or after a restart
        else:
            queued = self.ingestor.ingest(event, block=block)
            snapshot = getattr(event, "snapshot", None)
            if not queued and snapshot:
                self.media.delete([snapshot])  # its event was refused: no snapshot left without an event
        if event.type in SSE_TYPES:
            self.hub.publish(event.type, event_for_client(event))
        return queued

    # -- the engine's subscription -----------------------------------------------------------------------

    def start(self, engine: StreamEngine) -> None:
        """Subscribe to ``engine`` (before it starts: nothing is missed) and consume on a thread until the
        engine's event stream ends."""
        if self.journal_path is not None:
            self._journal = self.journal_path.open("a", encoding="utf-8", buffering=1)  # line-buffered
        subscription = engine.events()
        self._pump = threading.Thread(target=self._consume, args=(subscription,), name="maskwatch-events", daemon=True)
        self._pump.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Wait for the subscription's last events (call after the engine has stopped)."""
        if self._pump is not None:
            self._pump.join(timeout)
            self._pump = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _consume(self, subscription: Iterable[Any]) -> None:
        for event in subscription:
            try:
                self.handle_event(event, local=True)
            except Exception:
                log.exception("event %s not handled", getattr(event, "type", "?"))
