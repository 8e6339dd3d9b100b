"""The analysis thread's work on one round of frames (at most one per source): find the faces in each,
assign ByteTrack ids per source, classify the faces of *all* these frames in one classifier batch (one per
classifier: the ``fast`` preset runs the bundled model's INT8 export, the others the fp32 model), and let
each source's tracker vote.

**Classification budget**: a track whose verdict is decided is re-classified only every ``classify_every``
frames (its other frames reuse the verdict); off when the preset classifies with test-time augmentation
(``accurate``), where accuracy is the point.

What comes out is one :class:`FrameOutcome` per frame; the engine turns it into counts and events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskwatch.detection.results import FaceResult, FrameResult
from maskwatch.stream.runner import SourceRunner
from maskwatch.stream.sources import Frame
from maskwatch.stream.tracking import Transition

__all__ = ["FrameOutcome", "analyse_round"]


@dataclass
class FrameOutcome:
    """One analysed frame: its result, which faces were classified now, and what its tracker reported."""

    runner: SourceRunner
    frame: Frame
    result: FrameResult
    classified: list[bool]  # per face of ``result``: classified on this frame (else a verdict reused)
    faces_classified: int
    transitions: list[Transition]
    wall: float  # the wall clock when the round's faces were classified (event times, buckets)
    done: float  # time.monotonic() then (capture-to-result lag)


def analyse_round(
    batch: Sequence[tuple[SourceRunner, Frame]],
    *,
    classes: Sequence[str],
    compliant_classes: Sequence[str],
    snapshots: bool,
    snapshot_blur: bool,
    clock: Callable[[], float],
) -> list[FrameOutcome]:
    """Analyse a round; a frame whose detection fails is skipped (and counted as skipped by its source).
    ``clock``: the engine's wall clock (tracks' first and last seen, event times)."""
    classes = list(classes)
    work = []
    groups: dict[int, tuple[Any, list[np.ndarray]]] = {}  # one batch per classifier (fp32 / INT8 presets)
    for runner, frame in batch:
        detector = runner.detector
        try:
            boxes, scores, marks = detector.find_faces(frame.image)
        except Exception as exc:
            runner.source.stats.skip(f"{runner.name}: frame {frame.index}: {type(exc).__name__}: {exc}")
            continue
        keep = scores >= detector.score_threshold
        boxes, scores, marks = boxes[keep], scores[keep], marks[keep]
        if runner.wants_tracker and runner.tracker is None:
            runner.tracker = runner.make_tracker(compliant_classes)
        tracker = runner.tracker
        ids: list[int | None] = tracker.assign(boxes, scores) if tracker is not None else [None] * len(scores)
        need = [k for k, i in enumerate(ids) if tracker is None or tracker.wants_classification(i)]
        classifier = detector.active_classifier
        crops = groups.setdefault(id(classifier), (classifier, []))[1]
        first = len(crops)
        if need:
            crops.extend(detector.face_views(frame.image, boxes[need]))
        work.append((runner, frame, boxes, scores, marks, ids, need, id(classifier), first))
    probabilities = {
        key: np.asarray(classifier.predict_proba(crops), dtype=np.float64) if crops else np.zeros((0, len(classes)))
        for key, (classifier, crops) in groups.items()
    }
    now = clock()
    done = time.monotonic()
    out = []
    for runner, frame, boxes, scores, marks, ids, need, key, first in work:
        views = runner.detector.views_per_face
        p = probabilities[key][first : first + len(need) * views].reshape(len(need), views, len(classes)).mean(axis=1)
        out.append(
            _finish_frame(
                runner, frame, boxes, scores, marks, ids, dict(zip(need, p, strict=True)), classes, compliant_classes,
                snapshots, snapshot_blur, now, done,
            )
        )  # fmt: skip
    return out


def _finish_frame(
    runner: SourceRunner,
    frame: Frame,
    boxes: np.ndarray,
    scores: np.ndarray,
    marks: np.ndarray,
    ids: list[int | None],
    classified: dict[int, np.ndarray],
    classes: list[str],
    compliant_classes: Sequence[str],
    snapshots: bool,
    snapshot_blur: bool,
    now: float,
    done: float,
) -> FrameOutcome:
    tracker, gate = runner.tracker, runner.detector.min_confidence
    faces: list[FaceResult] = []
    was_classified: list[bool] = []
    for k, (box, score, lm) in enumerate(zip(boxes, scores, marks, strict=True)):
        track_id = ids[k]
        if k in classified:
            p = classified[k]
        else:
            verdict = tracker.verdict(track_id) if tracker is not None and track_id is not None else None
            if verdict is None:
                continue
            p = np.array([verdict[1][c] for c in classes])
        best = int(np.argmax(p))
        face = FaceResult(
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            score=float(score),
            label=classes[best],
            probability=float(p[best]),
            probabilities={c: float(v) for c, v in zip(classes, p, strict=True)},
            landmarks=tuple((float(x), float(y)) for x, y in lm),
        )
        if tracker is not None and track_id is not None:
            face = tracker.observe(track_id, face, frame.index, frame.timestamp, classified=k in classified, wall=now)
            if snapshots and tracker.tracks[track_id].best_box == face.box:
                runner.snapshots[track_id] = _snapshot(frame.image, face.box, boxes, snapshot_blur)
        if k in classified and face.confidence < gate:
            continue
        faces.append(face)
        was_classified.append(k in classified)
    transitions: list[Transition] = []
    if tracker is not None:
        tracker.end_frame()
        transitions = tracker.pop_transitions()
        for gone in [t for t in runner.snapshots if t not in tracker.tracks]:  # short tracks, never persons
            del runner.snapshots[gone]
    result = FrameResult(
        faces=faces,
        classes=list(classes),
        width=int(frame.image.shape[1]),
        height=int(frame.image.shape[0]),
        source=runner.name,
        frame=frame.index,
        timestamp=frame.timestamp,
        compliant_classes=tuple(compliant_classes),
    )
    return FrameOutcome(runner, frame, result, was_classified, len(classified), transitions, now, done)


def _snapshot(image: np.ndarray, box: Sequence[float], boxes: np.ndarray, blur: bool) -> np.ndarray:
    """A person's view: their face box grown by half its size on each side, cut from the frame, with every
    face in it blurred when ``blur`` (privacy by default)."""
    from maskwatch.core.geometry import crop_box
    from maskwatch.detection.privacy import blur_faces

    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop_box(box, 0.5, w, h)
    if blur:
        inside = [
            (b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0)
            for b in boxes
            if b[2] > x0 and b[0] < x1 and b[3] > y0 and b[1] < y1
        ]
        return blur_faces(image[y0:y1, x0:x1], inside)
    return image[y0:y1, x0:x1].copy()
