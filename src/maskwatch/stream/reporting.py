"""Event building: the engine's counters and the tracker's transitions turned into the typed events of
:mod:`maskwatch.core.events` (the only place the engine makes them), with their rounding.

A source's stats bucket counts a person in the interval in which their track *ended*, so summing the
buckets of any period counts each person once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskwatch.core.contract import compliance_rate
from maskwatch.core.events import (
    Box,
    ColorModeName,
    FaceRecord,
    FrameAnalysed,
    LagStats,
    PeopleSummary,
    SourceSummary,
    StatsBucket,
    TrackChanged,
    TrackEnded,
    TrackStarted,
)
from maskwatch.core.faces import NO_TRACK, Faces
from maskwatch.core.timeutil import utc
from maskwatch.detection.results import FrameResult
from maskwatch.stream.sources import SourceStats
from maskwatch.stream.tracking import FaceTracker, Transition

__all__ = [
    "Bucket",
    "box_of",
    "face_records",
    "frame_event",
    "lag_stats",
    "percentile",
    "person_event",
    "rounded",
    "source_summary",
]


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def box_of(box: Sequence[float] | None) -> Box | None:
    if box is None:
        return None
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    return x0, y0, x1, y1


def percentile(values: Sequence[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(np.asarray(values), q)), 4)


def lag_stats(values: Sequence[float]) -> LagStats:
    return LagStats(
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        max=None if not values else round(float(max(values)), 4),
    )


@dataclass
class Bucket:
    """A source's counters for one stats interval (``start`` to ``end``, aligned to the wall clock)."""

    start: float
    end: float
    people: dict[str, int]
    compliant: int = 0
    present_max: int = 0
    frames: int = 0
    faces_classified: int = 0
    dropped_at_start: int = 0
    lags: list[float] = field(default_factory=list)

    @classmethod
    def at(cls, now: float, interval: float, classes: Sequence[str], dropped: int) -> Bucket:
        """The bucket holding ``now``."""
        start = math.floor(now / interval) * interval
        return cls(start, start + interval, dict.fromkeys(classes, 0), dropped_at_start=dropped)

    def event(
        self,
        source: str,
        *,
        now: float,
        interval: float,
        dropped: int,
        started_wall: float,
        final: bool,
        color_mode: ColorModeName | None = None,
    ) -> StatsBucket:
        """The bucket as a ``stats`` event; ``final``: flushed early at ``now`` (the source ended);
        ``color_mode``: the camera's colour mode now."""
        end = min(now, self.end) if final else self.end
        span = max(1e-6, end - max(self.start, started_wall))
        n_people = sum(self.people.values())
        return StatsBucket(
            source=source,
            start=utc(self.start),
            end=utc(end),
            interval=interval,
            people=dict(self.people),
            n_people=n_people,
            compliant_people=self.compliant,
            compliance=None if n_people == 0 else round(self.compliant / n_people, 4),
            present_max=self.present_max,
            frames_analysed=self.frames,
            frames_dropped=dropped - self.dropped_at_start,
            faces_classified=self.faces_classified,
            analysed_fps=round(self.frames / span, 3),
            lag=lag_stats(self.lags),
            final=final,
            color_mode=color_mode,
        )


def person_event(
    source: str, transition: Transition, *, now: float, compliant_classes: Sequence[str], snapshot: str | None = None
) -> TrackStarted | TrackChanged | TrackEnded:
    """A person's ``track_started``, ``track_changed`` or ``track_ended`` (with the snapshot reference)."""
    track = transition.track
    if transition.kind == "started":
        return TrackStarted(
            source=source,
            track_id=track.track_id,
            label=track.label,
            probability=round(track.probability, 4),
            frame=track.last_frame,
            timestamp=rounded(track.last_timestamp),
            box=box_of(track.best_box) or (0.0, 0.0, 0.0, 0.0),
        )
    if transition.kind == "changed":
        return TrackChanged(
            source=source,
            track_id=track.track_id,
            previous_label=transition.previous or "",
            label=track.label,
            probability=round(track.probability, 4),
            frame=track.last_frame,
            timestamp=rounded(track.last_timestamp),
        )
    first = track.first_seen if track.first_seen is not None else now
    last = track.last_seen if track.last_seen is not None else now
    return TrackEnded(
        source=source,
        track_id=track.track_id,
        label=track.label,
        probability=round(track.probability, 4),
        probabilities={k: round(v, 4) for k, v in track.mean_probabilities.items()},
        compliant=track.label in compliant_classes,
        votes=dict(track.frame_votes),
        n_frames=track.n_frames,
        n_classified=track.n_classified,
        first_frame=track.first_frame,
        last_frame=track.last_frame,
        first_timestamp=rounded(track.first_timestamp),
        last_timestamp=rounded(track.last_timestamp),
        first_seen=utc(first),
        last_seen=utc(last),
        best_score=round(track.best_score, 4),
        best_box=box_of(track.best_box),
        snapshot=snapshot,
    )


def face_records(faces: Faces) -> list[FaceRecord]:
    """Faces in the wire format (the event boundary: the only place they become per-face records)."""
    classes = faces.classes
    labels, best = faces.labels, faces.best_probabilities
    confidence, verdict_labels = faces.confidence, faces.track_labels
    records = []
    for i in range(len(faces)):
        label = int(labels[i])
        track_id = int(faces.track_ids[i])
        verdict = int(verdict_labels[i])
        records.append(
            FaceRecord(
                box=box_of(faces.boxes[i]) or (0.0, 0.0, 0.0, 0.0),
                score=round(float(faces.scores[i]), 4),
                label=classes[label],
                probability=round(float(best[i]), 4),
                probabilities={c: round(float(v), 4) for c, v in zip(classes, faces.probabilities[i], strict=True)},
                confidence=round(float(confidence[i]), 4),
                landmarks=[(round(float(x), 1), round(float(y), 1)) for x, y in faces.landmarks[i]],
                classified=bool(faces.classified[i]),
                predicted=bool(faces.predicted[i]),
                track_id=None if track_id == NO_TRACK else track_id,
                track_label=None if verdict < 0 else classes[verdict],
                track_probability=None if verdict < 0 else round(float(faces.track_probabilities[i, verdict]), 4),
            )
        )
    return records


def frame_event(
    source: str, index: int, timestamp: float | None, path: str | None, result: FrameResult, lag: float | None
) -> FrameAnalysed:
    """An analysed frame's ``frame`` event: the faces that count, as :class:`~maskwatch.core.events.FaceRecord`."""
    return FrameAnalysed(
        source=source,
        frame=index,
        timestamp=rounded(timestamp, 3),
        path=path,
        width=result.width,
        height=result.height,
        n_faces=len(result.faces),
        counts=result.counts,
        compliance=rounded(result.compliance),
        faces=face_records(result.faces),
        lag=rounded(lag),
    )


def source_summary(
    source: str, *, kind: str, stats: SourceStats, frames: int, dropped: int, counts: dict[str, int],
    tracker: FaceTracker | None, classes: Sequence[str], compliant_classes: Sequence[str], seconds: float,
    lags: Sequence[float], error: str | None, restarts: int = 0,
) -> SourceSummary:  # fmt: skip
    """A finished source's ``source`` event: what it delivered and what it saw."""
    people = None
    if tracker is not None:
        s = tracker.summary()
        people = PeopleSummary(
            n_people=s["n_tracks"],
            counts=s["counts"],
            compliance=rounded(compliance_rate(s["counts"], classes, compliant_classes)),
            n_short_tracks_ignored=s["n_short_tracks_ignored"],
        )
    return SourceSummary(
        source=source,
        kind=kind,
        frames=frames,
        skipped=stats.skipped,
        skipped_reasons=list(stats.reasons),
        dropped=dropped,
        reconnects=stats.reconnects,
        attempts=stats.attempts,
        restarts=restarts,
        counts=dict(counts),
        compliance=rounded(compliance_rate(counts, classes, compliant_classes)),
        people=people,
        seconds=round(seconds, 3),
        analysed_fps=round(frames / seconds, 3) if seconds > 0 else None,
        lag=lag_stats(list(lags)),
        error=error,
    )
