"""More cameras per node: the face detector on every N-th frame (the tracker carries the faces between), a
motion gate that skips it while nothing moves (never longer than its bound), carried faces blurred like
found ones, and people counted as with the detector on every frame (fake models, then the real ones on a
video made from the shared scene images, served by a real HTTP MJPEG camera)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from camera_servers import MjpegCamera, scene_images, scene_video
from conftest import shared_or_skip
from fakes import GREEN, RED, fake_detector, scene

from maskwatch.core.events import SourceSummary
from maskwatch.detection.privacy import blur_faces, blur_regions
from maskwatch.stream import AnalysedFrame, EngineConfig, SourceSpec, StreamEngine
from maskwatch.stream.config import CameraDefaults, CameraSettings
from maskwatch.stream.schedule import motion_thumbnail, moved_share

pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra (pip install edgefirst-tracker)")

FPS = 10.0
EVERY_FRAME = {"detect_every": 1, "motion_gate": False}
# the setting measured in BENCHMARKS.md ("Edge capacity"); the engine's defaults stay EVERY_FRAME
GATED = {"detect_every": 3, "motion_gate": True, "max_skip": 2.0}


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    """An MJPEG AVI (every frame a JPEG: a still scene decodes to the same pixels on every frame)."""
    size = (frames[0].shape[1], frames[0].shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def walking(i: int, k: int) -> tuple[int, int, int, int]:
    """Where person ``k`` is in frame ``i`` of :func:`walking_video` (x0, y0, x1, y1)."""
    x, y = 10 + 6 * i, 20 + 70 * k
    return x, y, x + 40, y + 40


def walking_video(path: Path, n: int = 30, people: int = 2) -> Path:
    colours = [GREEN, RED]
    return write_video(path, [scene([(10 + 6 * i, 20 + 70 * k, 40, colours[k % 2]) for k in range(people)])
                              for i in range(n)])  # fmt: skip


def analyse(video: Path, detector=None, on_frame=None, **spec) -> tuple[list, SourceSummary, object]:
    """Every analysed frame of ``video`` (or what ``on_frame(frame)`` makes of each), its summary, the detector."""
    detector = detector or fake_detector()
    engine = StreamEngine(detector, stop_when_done=True)
    frames = engine.events(frames=True)
    engine.add_source(SourceSpec(uri=str(video), name="v", **spec))
    engine.start()
    analysed, summary = [], None
    for item in frames:
        if isinstance(item, AnalysedFrame):
            analysed.append(on_frame(item) if on_frame else item)
        elif isinstance(item, SourceSummary):
            summary = item
    assert summary is not None
    return analysed, summary, detector


def detected(frame: AnalysedFrame) -> bool:
    """The detector ran on this frame (every frame here shows faces, and a found face is never predicted)."""
    return bool(len(frame.result.candidates)) and not frame.result.candidates.predicted.all()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_the_interval_runs_the_detector_on_every_nth_frame_and_the_tracker_carries_the_faces(tmp_path):
    video = walking_video(tmp_path / "walk.avi", n=30)
    frames, summary, detector = analyse(video, detect_every=3, motion_gate=False)
    assert len(frames) == 30 and summary.people.n_people == 2
    assert detector.face_finder.calls == 10  # frames 0, 3, 6, ..., 27
    assert [i for i, f in enumerate(frames) if detected(f)] == list(range(0, 30, 3))
    ids = {}
    for i, frame in enumerate(frames):
        faces = frame.result.candidates
        assert len(faces) == 2 and faces.kept.all()
        if i % 3:  # carried: the tracker's boxes, with the tracks' verdicts, nothing classified
            assert faces.predicted.all() and not faces.classified.any()
            assert all(f.label == f.track_label for f in faces if f.track_id is not None)
            assert i < 3 or faces.tracked.all()  # ids come with the second detection
        for face in faces:
            k = int(face.box[1] > 60)  # the upper or the lower person
            if face.track_id is not None:
                assert ids.setdefault(k, face.track_id) == face.track_id  # one track per person throughout
            if i > 6:  # a track has a motion from its second detection (frame 6) on: the box follows the person
                assert iou(face.box, walking(i, k)) > 0.85, (i, k, face.box, walking(i, k))
    classified = sum(int(f.result.candidates.classified.sum()) for f in frames)
    assert 0 < classified <= 2 * 10  # fresh crops only: at most the two faces of each detected frame
    every, _, every_detector = analyse(video, **EVERY_FRAME)
    every_classified = sum(int(f.result.candidates.classified.sum()) for f in every)
    crops, every_crops = detector.classifier.crops, every_detector.classifier.crops
    assert 0 < crops < every_crops  # the classifier saw crops of the detected frames' faces and nothing else
    assert crops * every_classified == every_crops * classified  # same crops per classified face


def test_the_motion_gate_skips_still_frames_never_longer_than_its_bound_and_wakes_on_motion(tmp_path):
    still = scene([(40, 30, 40, GREEN), (200, 120, 40, RED)])
    moved = scene([(40, 30, 40, GREEN), (200, 120, 40, RED), (120, 170, 40, GREEN)])  # someone walks in
    video = write_video(tmp_path / "still.avi", [still] * 60 + [moved] * 40)
    frames, summary, detector = analyse(video, detect_every=1, motion_gate=True, max_skip=1.0)
    runs = [i for i, f in enumerate(frames) if detected(f)]
    assert summary.people.n_people == 3
    assert 60 in runs  # the first frame that moved
    gaps = np.diff([*runs, len(frames)])
    assert gaps.max() <= FPS * 1.0  # never more than max_skip without the detector
    assert detector.face_finder.calls == len(runs) <= 0.3 * len(frames)
    settling = [i for i in runs if i < 10]
    assert settling == [0, 1, 2, 3]  # a new face needs its second detection and its votes, then still frames skip
    for frame in frames:  # a carried frame of a still scene shows the faces where they were found
        if not detected(frame):
            assert len(frame.result.candidates) in (2, 3) and frame.result.candidates.predicted.all()


def test_the_gate_sees_motion_not_sensor_noise():
    rng = np.random.default_rng(0)
    base = scene([(100, 80, 24, GREEN)]).astype(np.int16) + 60
    noisy = [np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8) for _ in range(5)]
    reference = motion_thumbnail(noisy[0])
    assert max(moved_share(motion_thumbnail(f), reference) for f in noisy[1:]) == 0.0
    shifted = np.clip(scene([(106, 80, 24, GREEN)]).astype(np.int16) + 60 + rng.normal(0, 4, base.shape), 0, 255)
    assert moved_share(motion_thumbnail(shifted.astype(np.uint8)), reference) > CameraDefaults().motion_threshold


def test_carried_faces_are_blurred_where_the_person_is(tmp_path):
    video = walking_video(tmp_path / "walk.avi", n=20, people=1)
    frames, _, _ = analyse(video, detect_every=4, motion_gate=False)
    carried = [(i, f) for i, f in enumerate(frames) if i > 4 and not detected(f)]
    assert carried
    for i, frame in carried:
        faces = frame.result.candidates
        assert faces.predicted.all()
        regions = blur_regions(faces)  # the one box source has them (grown to the head: recall-first blur)
        assert len(regions) == len(faces)
        assert (regions[:, :2] <= faces.boxes[:, :2]).all() and (regions[:, 2:] >= faces.boxes[:, 2:]).all()
        truth = walking(i, 0)
        image = frame.frame.image
        blurred = blur_faces(image, faces)  # what every pixel path does with result.candidates
        x0, y0, x1, y1 = truth
        inside = np.abs(blurred[y0:y1, x0:x1].astype(int) - image[y0:y1, x0:x1].astype(int))
        assert inside.max() > 40  # the square's edges are smeared: the face is hidden where it really is
        assert np.array_equal(blurred[:, x1 + 30 :], image[:, x1 + 30 :])  # and only around it


def test_the_settings_reach_each_camera():
    config = EngineConfig(camera_defaults=CameraDefaults(detect_every=4, motion_gate=True, max_skip=3.0))
    spec = config.source("rtsp://cam/1", "door", CameraSettings(detect_every=2))
    assert (spec.detect_every, spec.motion_gate, spec.max_skip) == (2, True, 3.0)
    with pytest.raises(ValueError, match="detect_every"):
        CameraDefaults(detect_every=0)
    with pytest.raises(ValueError, match="max_skip"):
        CameraSettings(max_skip=60)


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory):
    images = scene_images(shared_or_skip("scenes", "images"), n=5, seed=7)
    return scene_video(tmp_path_factory.mktemp("clip") / "scenes.avi", images, hold=2.0, fps=25.0, lead=0.5)


@pytest.fixture(scope="module")
def real_detector():
    from maskwatch.detection.pipeline import MaskDetector

    return MaskDetector.load()


def hidden(frame: AnalysedFrame) -> float:
    """How much the blur changes the least changed face that counts (mean absolute difference, grey levels)."""
    image, faces = frame.frame.image, frame.result.candidates
    blurred = blur_faces(image, faces)
    return min(
        (np.abs(blurred[y0:y1, x0:x1].astype(int) - image[y0:y1, x0:x1].astype(int)).mean()
         for x0, y0, x1, y1 in faces.boxes[faces.kept].astype(int)),
        default=np.inf,
    )  # fmt: skip


def test_people_counts_with_the_interval_and_the_gate_agree_with_every_frame(scene_clip, real_detector):
    def look(frame):
        faces = frame.result.candidates
        carried = bool(len(faces)) and faces.predicted.all()
        return detected(frame), carried, hidden(frame) if carried and frame.frame.index % 5 == 0 else None

    every_frames, every, _ = analyse(scene_clip, real_detector, look, **EVERY_FRAME)
    frames, gated, _ = analyse(scene_clip, real_detector, look, **GATED)
    assert every.people.n_people >= 8
    assert abs(gated.people.n_people - every.people.n_people) <= 0.02 * every.people.n_people
    assert gated.people.counts == every.people.counts
    assert sum(d for d, _, _ in frames) < 0.4 * sum(d for d, _, _ in every_frames)
    checked = [h for _, carried, h in frames if carried and h is not None]
    assert len(checked) >= 5 and min(checked) > 2  # real faces on carried frames are pixelated


def test_a_live_camera_with_the_interval_and_the_gate_counts_like_every_frame(scene_clip, real_detector):
    """A real HTTP MJPEG camera at 25 FPS playing the clip once: the interval and the gate count the people
    the reference counts, with the detector on a fraction of the frames."""
    _, reference, _ = analyse(scene_clip, real_detector, **EVERY_FRAME)
    engine = StreamEngine(real_detector, EngineConfig(stats_interval=3600))
    events = engine.events()
    with MjpegCamera(scene_clip, raw=True) as camera:
        engine.add_source(SourceSpec(uri=camera.url, name="door", **GATED))
        engine.start()
        length = cv2.VideoCapture(str(scene_clip)).get(cv2.CAP_PROP_FRAME_COUNT) / 25.0
        time.sleep(length - 0.3)  # the clip plays once (it starts again with black)
        stats = engine.source_stats()["door"]
        engine.stop(5.0)
    summary = next(e for e in events if isinstance(e, SourceSummary))
    assert summary.people.n_people == reference.people.n_people
    assert stats.detected < 0.5 * stats.frames
    assert summary.lag.p95 is not None and summary.lag.p95 < 1.0
