"""The analysis thread's work on one round of frames (at most one per source): find the faces in each,
assign ByteTrack ids per source, classify the faces of *all* these frames in one classifier batch (one per
classifier: the ``fast`` preset runs the bundled model's INT8 export, the others the fp32 model), and let
each source's tracker vote.

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

import numpy as np

from maskwatch.core.geometry import crop_box
from maskwatch.detection.pipeline import CropBatch
from maskwatch.detection.privacy import blur_faces
from maskwatch.detection.results import FrameResult
from maskwatch.stream.runner import SourceRunner
from maskwatch.stream.sources import Frame
from maskwatch.stream.tracking import Transition

__all__ = ["FrameOutcome", "analyse_round", "snapshot_view"]


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
    work = []
    for runner, frame in batch:
        detector = runner.detector
        frame = runner.privacy.black_out(frame)  # privacy zones: before anything sees the pixels
        try:
            faces = detector.gate(detector.find_faces(frame.image))
        except Exception as exc:
            runner.source.stats.skip(f"{runner.name}: frame {frame.index}: {type(exc).__name__}: {exc}")
            continue
        held = runner.privacy.held(faces, frame.timestamp)  # privacy: faces the detector lost a moment ago
        if runner.wants_tracker and runner.tracker is None:
            runner.tracker = runner.make_tracker(compliant_classes)
        tracker = runner.tracker
        if tracker is not None:
            faces = tracker.assign(faces)
            rows = np.flatnonzero(tracker.wants_classification(faces))
        else:
            rows = np.flatnonzero(faces.kept)
        gray = runner.color.observe(frame.image)  # the camera's colour mode (maskwatch.camera_color)
        ticket = crops.add(detector, frame.image, faces.boxes[rows], gray=gray)
        work.append((runner, frame, faces, held, rows, ticket))
    crops.run()
    now = clock()
    done = time.monotonic()
    out = []
    for runner, frame, faces, held, rows, ticket in work:
        tracker = runner.tracker
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


def _keep_snapshots(runner: SourceRunner, image: np.ndarray, result: FrameResult, blur: bool) -> None:
    """Each person's best view so far (their best-scoring face): cut when this frame's face is it."""
    assert runner.tracker is not None
    faces = result.candidates
    for row in np.flatnonzero(faces.tracked & faces.has_probabilities):
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
