"""The control room's dead letters: what it cannot store goes to the ``dead_letters`` table with the reason,
never acknowledged into nothing. Two producers: MQTT ingest (a message it cannot read; the fleet's
:data:`~maskwatch.fleet.ingest.DeadLetterSink` port) and the writer (an event the database refuses:
:class:`~maskwatch.service.storage.ingest.Ingestor`'s ``on_reject``). Each letter counts in ``/metrics``
(``maskwatch_dead_letters{reason}``); the API (``GET /api/v1/dead-letters``) and the dashboard's Fleet page
show them. While the database is unreachable nothing can be recorded: the message stays unacknowledged (its
node sends it again) and the outage is logged once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from maskwatch.fleet.ingest import DeadLetter
from maskwatch.service.metrics import Metrics
from maskwatch.service.storage.dead_letters import DeadLetterRepository, Letter

__all__ = ["DeadLetters"]

log = logging.getLogger("maskwatch.service")


class DeadLetters:
    def __init__(self, repository: DeadLetterRepository, metrics: Metrics) -> None:
        self.repository = repository
        self.metrics = metrics
        self._failing = threading.Event()  # an outage is going on (logged once)

    def record_message(self, message: DeadLetter) -> bool:
        """An MQTT message ingest cannot store; True once recorded (then it may be acknowledged)."""
        letter = Letter(
            reason=message.reason,
            payload=message.payload,
            detail=message.detail,
            topic=message.topic,
            node=message.node,
            event_id=message.event_id,
            size=message.size,
        )
        try:
            self._record(letter)
        except Exception as exc:
            self._outage(exc)
            return False
        return True

    def record_event(self, event: Any, error: BaseException) -> None:
        """An event the database refused (the writer's ``on_reject``); raises when it cannot be recorded
        either (the writer then keeps the event and tries again)."""
        source = str(getattr(event, "source", "") or "")
        node, _, _camera = source.rpartition(":")
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        to_json = getattr(event, "to_json", None)
        payload = (to_json() if callable(to_json) else str(event)).encode()
        letter = Letter(
            reason="storage",
            payload=payload,
            detail=f"{type(error).__name__}: {detail}"[:500],
            node=node or None,
            event_id=getattr(event, "id", None),
        )
        try:
            self._record(letter)
        except Exception as exc:
            self._outage(exc)
            raise

    def _record(self, letter: Letter) -> None:
        arrivals = self.repository.record(letter, time.time())
        self.metrics.dead_letters.labels(letter.reason).inc()
        if self._failing.is_set():
            self._failing.clear()
            log.warning("dead letters are recorded again")
        if arrivals == 1:  # the same message again (resent) only adds to its count
            where = letter.topic or letter.node or "storage"
            log.warning("dead letter (%s) from %s: %s", letter.reason, where, letter.detail[:200])

    def _outage(self, exc: BaseException) -> None:
        if not self._failing.is_set():
            self._failing.set()
            log.error(
                "dead letters cannot be recorded (%s): their messages stay unacknowledged and come again",
                type(exc).__name__,
            )
