"""The analysis thread's work on one round of frames (at most one per source): find the faces in each,
assign ByteTrack ids per source, classify the faces of *all* these frames in one classifier batch (one per
classifier: the ``fast`` preset runs the bundled model's INT8 export, the others the fp32 model), and let
each source's tracker vote.

On a tracked source the face detector does not run on every frame: its
:class:`~maskwatch.stream.schedule.DetectionSchedule` (detector interval, motion gate, their bound) says
which frames it runs on; on the others the tracker **carries** the last detection's faces
(:meth:`~maskwatch.stream.tracking.FaceTracker.predict`: moved along their tracks, marked ``predicted``,
with their tracks' verdicts). A carried frame costs neither the detector nor the classifier: only fresh
crops (the detector's own boxes) are classified, and a carried face is a frame of its track, not a vote.
Carried faces are candidates like found ones, so every image that leaves the engine blurs them.

The same classify-and-build step as :meth:`MaskDetector.detect_batch
<maskwatch.detection.pipeline.MaskDetector.detect_batch>`: :meth:`~maskwatch.detection.pipeline.MaskDetector.gate`
the detector's candidates, queue the rows to classify in a :class:`~maskwatch.detection.pipeline.CropBatch`,
then :meth:`~maskwatch.detection.pipeline.MaskDetector.label` them. Here the rows to classify leave out
what the **classification budget** skips: a track whose verdict is decided is re-classified only every
``classify_every`` frames (its other frames reuse the verdict); off when the preset classifies with
test-time augmentation (``accurate``), where accuracy is the point.

Privacy takes two hooks (:class:`~maskwatch.stream.privacy.SourcePrivacy`, the runner's ``privacy``): a
frame's privacy zones are blacked out before anything else sees it, and the boxes of faces the detector
lost a moment ago (the blur hold) go into the result's ``held_boxes``; every image cut from the frame
(snapshots here, live views and an agent's snapshot later) is blurred from the result
(:func:`~maskwatch.detection.privacy.blur_faces`).

What comes out is one :class:`FrameOutcome` per frame; the engine turns it into counts and events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.core.geometry import crop_box
from maskwatch.detection.pipeline import CropBatch
from maskwatch.detection.privacy import blur_faces
from maskwatch.detection.results import FrameResult
from maskwatch.stream.runner import SourceRunner
from maskwatch.stream.sources import Frame
from maskwatch.stream.tracking import FaceTracker, Transition

__all__ = ["CLASSIFY_CARRIED", "FrameOutcome", "analyse_round", "snapshot_view"]

# Whether the crops of carried (predicted) boxes are classified too, as votes. Measured (BENCHMARKS.md, "Edge
# capacity"; benchmarks/bench_interval.py flips it): no, a carried frame costs no classifier.
CLASSIFY_CARRIED = False


@dataclass
class FrameOutcome:
    """One analysed frame: its result (the faces' ``classified`` column says which were classified now) and
    what its tracker reported."""

    runner: SourceRunner
    frame: Frame
    result: FrameResult
    transitions: list[Transition]
    wall: float  # the wall clock when the round's faces were classified (event times, buckets)
    done: float  # time.monotonic() then (capture-to-result lag)


def analyse_round(
    batch: Sequence[tuple[SourceRunner, Frame]],
    *,
    compliant_classes: Sequence[str],
    snapshots: bool,
    snapshot_blur: bool,
    clock: Callable[[], float],
) -> list[FrameOutcome]:
    """Analyse a round; a frame whose detection fails is skipped (and counted as skipped by its source).
    ``clock``: the engine's wall clock (tracks' first and last seen, event times)."""
    crops = CropBatch()
    # (runner, frame, faces, held boxes, (rows, crops' ticket) when classified)
    work: list[tuple[SourceRunner, Frame, Faces, Any, Any]] = []
    for runner, frame in batch:
        frame = runner.privacy.black_out(frame)  # privacy zones: before anything sees the pixels
        if runner.wants_tracker and runner.tracker is None:
            runner.tracker = runner.make_tracker(compliant_classes)
        tracker = runner.tracker
        gray = runner.color.observe(frame.image)  # the camera's colour mode (maskwatch.camera_color)
        if tracker is not None and not _detects(runner, tracker, frame):
            height, width = frame.image.shape[:2]
            carried = tracker.predict(frame.index, frame.timestamp, width, height, still=runner.schedule.still)
            held = runner.privacy.held(carried, frame.timestamp)  # candidates lost meanwhile stay blurred
            if CLASSIFY_CARRIED:
                rows = np.flatnonzero(tracker.wants_classification(carried))
                classify = (rows, crops.add(runner.detector, frame.image, carried.boxes[rows], gray=gray))
                work.append((runner, frame, carried, held, classify))
            else:
                work.append((runner, frame, carried, held, None))
            continue
        detector = runner.detector
        try:
            faces = detector.gate(detector.find_faces(frame.image))
        except Exception as exc:
            runner.source.stats.skip(f"{runner.name}: frame {frame.index}: {type(exc).__name__}: {exc}")
            continue
        runner.detected += 1
        held = runner.privacy.held(faces, frame.timestamp)  # privacy: faces the detector lost a moment ago
        if tracker is not None:
            runner.schedule.ran(frame)
            faces = tracker.assign(faces, frame.index, frame.timestamp)
            rows = np.flatnonzero(tracker.wants_classification(faces))
        else:
            rows = np.flatnonzero(faces.kept)
        ticket = crops.add(detector, frame.image, faces.boxes[rows], gray=gray)
        work.append((runner, frame, faces, held, (rows, ticket)))
    crops.run()
    now = clock()
    done = time.monotonic()
    out = []
    for runner, frame, faces, held, classify in work:
        tracker = runner.tracker
        if classify is not None:  # detected (a carried frame has its tracks' verdicts already)
            rows, ticket = classify
            verdicts = tracker.verdicts(faces) if tracker is not None else None
            faces = runner.detector.label(faces, rows, crops.probabilities(ticket), verdicts=verdicts)
        transitions: list[Transition] = []
        if tracker is not None:
            faces = tracker.observe(faces, frame.index, frame.timestamp, wall=now)
        result = FrameResult(
            faces,
            width=int(frame.image.shape[1]),
            height=int(frame.image.shape[0]),
            source=runner.name,
            frame=frame.index,
            timestamp=frame.timestamp,
            compliant_classes=tuple(compliant_classes),
            held_boxes=held,
            privacy_zones=runner.privacy.zones,
        )
        if tracker is not None:
            if snapshots:
                _keep_snapshots(runner, frame.image, result, snapshot_blur)
            tracker.end_frame()
            transitions = tracker.pop_transitions()
            leaving = {t.track.track_id for t in transitions if t.kind == "ended"}  # their snapshot goes out
            for gone in [t for t in runner.snapshots if t not in tracker.tracks and t not in leaving]:
                del runner.snapshots[gone]  # short tracks, never persons
        out.append(FrameOutcome(runner, frame, result, transitions, now, done))
    return out


def _detects(runner: SourceRunner, tracker: FaceTracker, frame: Frame) -> bool:
    """Whether the detector runs on this frame of a tracked source (else the tracker carries its faces):
    the source's schedule's word, except that the first frame, with nothing to carry, is always detected."""
    if not tracker.can_predict or runner.schedule.wants_detection(frame, settled=tracker.settled):
        return True
    runner.schedule.skipped()
    return False


def _keep_snapshots(runner: SourceRunner, image: np.ndarray, result: FrameResult, blur: bool) -> None:
    """Each person's best view so far (their best-scoring face): cut when this frame's face is it (the
    detector's faces only: a carried face is not a new view)."""
    assert runner.tracker is not None
    faces = result.candidates
    for row in np.flatnonzero(faces.tracked & faces.has_probabilities & ~faces.predicted):
        track_id = int(faces.track_ids[row])
        box = tuple(float(v) for v in faces.boxes[row])
        if runner.tracker.tracks[track_id].best_box == box:
            runner.snapshots[track_id] = snapshot_view(image, result, int(row), blur)


def snapshot_view(image: np.ndarray, result: FrameResult, row: int, blur: bool) -> np.ndarray:
    """A person's view: the candidate at ``row`` grown by half its size on each side, cut from the frame,
    blurred when ``blur`` (privacy by default) exactly as the whole frame would be
    (:func:`~maskwatch.detection.privacy.blur_faces` of the frame's result)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop_box(result.candidates.boxes[row], 0.5, w, h)
    if blur:
        return blur_faces(image[y0:y1, x0:x1], result, origin=(x0, y0))
    return image[y0:y1, x0:x1].copy()
