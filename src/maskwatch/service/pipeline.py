"""The one entry point for engine events: this service's own engine (through :meth:`EventPipeline.start`'s
subscription) and any other producer (the fleet's MQTT ingest) call :meth:`EventPipeline.handle_event`.

One event, top-down:

1. parse (a dict or JSON from the wire becomes a typed event); frame records and run summaries stop here;
2. metrics (Prometheus counters) and the live state (each camera's state, people since start);
3. storage: the ingestor's buffer (idempotent by event id); an event it refuses (buffer full) drops its
   snapshot file, so no file is left without its event;
4. alerts (the rules' sliding windows);
5. the dashboard's live stream (SSE) for the types it shows.

The return value says whether an event to store was queued: a producer that can resend (MQTT ingest) does
not acknowledge an event that was not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskwatch.service.live import SSE_TYPES, event_for_client
from maskwatch.service.storage.ingest import STORED_TYPES

if TYPE_CHECKING:
    from maskwatch.service.alerts import AlertEngine
    from maskwatch.service.live import Hub, LiveState
    from maskwatch.service.media import Media
    from maskwatch.service.metrics import Metrics
    from maskwatch.service.storage.ingest import Ingestor
    from maskwatch.stream import StreamEngine

__all__ = ["SKIPPED_TYPES", "EventPipeline"]

log = logging.getLogger("maskwatch.service")

#: event types the service does not consume (per-frame records and end-of-run summaries)
SKIPPED_TYPES = ("frame", "summary")
#: what ``engine.journal`` keeps of this service's own cameras (what it stores, and their states)
JOURNAL_TYPES = ("track_ended", "stats", "source_status")


class EventPipeline:
    """Metrics, live state, storage, alerts and the live stream, in this order, for every engine event."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        live: LiveState,
        ingestor: Ingestor,
        media: Media,
        alerts: AlertEngine,
        hub: Hub,
        journal: Path | None = None,
    ) -> None:
        self.metrics = metrics
        self.live = live
        self.ingestor = ingestor
        self.media = media
        self.alerts = alerts
        self.hub = hub
        self.journal = journal  # engine.journal: DATA_DIR/journal.jsonl, or None (off)
        self._pump: threading.Thread | None = None

    def handle_event(self, event: Any, *, block: bool = False) -> bool:
        """Take one engine event (a typed event, its dict or its JSON). False when an event to store was not
        queued (buffer full; with ``block``, which waits for room instead, only when stopping)."""
        if not hasattr(event, "type"):
            from maskwatch.stream import parse_event

            event = parse_event(event)
        if event.type in SKIPPED_TYPES:
            return True
        self.metrics.observe(event)
        self.live.observe(event)
        queued = self.ingestor.ingest(event, block=block) or event.type not in STORED_TYPES
        snapshot = getattr(event, "snapshot", None)
        if not queued and snapshot:
            self.media.delete([snapshot])  # its event was refused: no snapshot left without an event
        self.alerts.observe(event)
        if event.type in SSE_TYPES:
            self.hub.publish(event.type, event_for_client(event))
        return queued

    # -- the engine's subscription -----------------------------------------------------------------------

    def start(self, engine: StreamEngine) -> None:
        """Subscribe to ``engine`` (before it starts: nothing is missed) and consume on a thread until the
        engine's event stream ends."""
        subscription = engine.events()
        self._pump = threading.Thread(target=self._consume, args=(subscription,), name="maskwatch-events", daemon=True)
        self._pump.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Wait for the subscription's last events (call after the engine has stopped)."""
        if self._pump is not None:
            self._pump.join(timeout)
            self._pump = None

    def _consume(self, subscription: Iterable[Any]) -> None:
        journal = None
        if self.journal is not None:  # line-buffered: each event reaches the OS before it is handled
            journal = open(self.journal, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        try:
            for event in subscription:
                try:
                    if journal is not None and event.type in JOURNAL_TYPES:
                        journal.write(event.to_json() + "\n")
                    self.handle_event(event)
                except Exception:
                    log.exception("event %s not handled", getattr(event, "type", "?"))
        finally:
            if journal is not None:
                journal.close()
