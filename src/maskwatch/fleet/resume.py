"""Video files an edge agent resumes where it stopped, counting no person twice.

The engine sends a ``frame`` event after the events of each analysed frame (``EngineConfig.emit_frames``).
A file source's events are held until its frame event, then stored in the outbox **in one transaction with
the frame number** (:meth:`~maskwatch.fleet.outbox.Outbox.put_many`): the position on disk is never behind
the events on disk, so a restarted agent (``SourceSpec.start_frame`` = position + 1) re-emits nothing it
stored. What a stop does:

- SIGKILL: the held events of the frame being analysed are lost with the process; that frame is analysed
  again after the restart.
- SIGTERM (or a removed camera): the engine ends the tracks still open and flushes the bucket. People in
  the last analysed frame are still in view: their ``track_ended`` events are **not** stored (the resumed
  run counts them when it sees them) and the final stats bucket is stored without them; people who had
  left already (their track was waiting to end) are stored.
- The file's end: everything is stored and the file is marked done; a restarted agent skips it (a new data
  dir, or ``resume: false``, analyses it again).

A person in view at a SIGTERM is counted by the resumed run if it still sees them for ``min_track_frames``
frames; a SIGKILL also loses the people the tracker still held (in view, or gone for less than its track
buffer). None is counted twice.
Positions live in the outbox's ``positions`` table, keyed by camera, path, size and modification time (a
new recording under the same name starts from its beginning).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskwatch.fleet.outbox import Outbox

__all__ = ["FILE_DONE", "Batch", "FilePositions", "file_key"]

log = logging.getLogger("maskwatch.fleet")

FILE_DONE = -1  # the position of a file analysed to its end
_SAVE_EVERY = 2.0  # seconds between position writes of frames without events


def file_key(camera: str, source: str) -> str | None:
    """The position key of ``camera`` when its source is one video file; None for anything else."""
    from maskwatch.stream.sources import parse_source

    try:
        kind, value = parse_source(source)
    except Exception:
        return None
    if kind != "video":
        return None
    path = Path(value).resolve()
    stat = path.stat()
    return f"{camera}|{path}|{stat.st_size}|{stat.st_mtime_ns}"


@dataclass(frozen=True)
class Batch:
    """What to store now for a file source: events (maybe none) and the position to store with them."""

    events: list[Any]
    position: tuple[str, int] | None


@dataclass
class _File:
    key: str
    frame: int  # the last frame whose events are all stored (-1: none yet)
    held: list[Any] = field(default_factory=list)  # events of the frame being analysed
    saved: float = 0.0  # when the position was last written


class FilePositions:
    """The file sources of one agent and where each stands."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._files: dict[str, _File] = {}

    def open(self, camera: str, source: str) -> int | None:
        """The frame ``camera`` starts at: 0 (a new file, or not a file), N (resumed) or None (analysed to its
        end before: nothing to do)."""
        key = file_key(camera, source)
        if key is None:
            return 0
        stored = self.outbox.position(key)
        if stored == FILE_DONE:
            log.info(
                "camera %s: %s was analysed to its end before (outbox.db remembers it): skipped (a new data "
                "dir, or resume: false, analyses it again)",
                camera,
                source,
            )
            return None
        frame = -1 if stored is None else stored
        self._files[camera] = _File(key, frame)
        if frame >= 0:
            log.info("camera %s: resuming %s at frame %d (where this node stopped)", camera, source, frame + 1)
        return frame + 1

    def route(self, event: Any) -> Batch | None:
        """Where an engine event goes: None when its source is not a file followed here (store it as
        usual), else what to store now."""
        file = self._files.get(event.source)
        if file is None:
            return None
        if event.type == "frame":
            events, file.held, file.frame = file.held, [], int(event.frame)
            now = time.monotonic()
            if not events and now - file.saved < _SAVE_EVERY:
                return Batch([], None)
            file.saved = now
            return Batch(events, (file.key, file.frame))
        if event.type == "source_status" and event.state in ("ended", "failed"):
            del self._files[event.source]
            events = [*file.held, event]
            if event.state == "failed" or event.reason == "done":
                return Batch(events, (file.key, FILE_DONE))
            return Batch(_without_people_in_view(events, file.frame), (file.key, file.frame))  # resumed later
        file.held.append(event)
        return Batch([], None)


def _without_people_in_view(events: list[Any], frame: int) -> list[Any]:
    """The events of a stopped file source without the people the stop ended while they were in view (in
    ``frame``, the last analysed: the resumed run counts them), the last stats bucket recounted without them."""
    in_view = [e for e in events if e.type == "track_ended" and e.last_frame >= frame]
    kept = [e for e in events if not (e.type == "track_ended" and e.last_frame >= frame)]
    ended = in_view
    buckets = [i for i, e in enumerate(kept) if e.type == "stats"]
    if ended and buckets:
        i = buckets[-1]
        bucket = kept[i]
        people = dict(bucket.people)
        for e in ended:
            people[e.label] = max(0, people.get(e.label, 0) - 1)
        n = max(0, bucket.n_people - len(ended))
        ok = max(0, bucket.compliant_people - sum(bool(e.compliant) for e in ended))
        kept[i] = bucket.model_copy(
            update={
                "people": people,
                "n_people": n,
                "compliant_people": ok,
                "compliance": None if n == 0 else round(ok / n, 4),
            }
        )
    return kept
