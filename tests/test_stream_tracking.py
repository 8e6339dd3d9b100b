"""Tracking: one person is counted once across frames, and a flickering label does not flip the verdict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maskwatch.core.faces import NO_TRACK, Faces
from maskwatch.detection.results import FrameResult

pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra (pip install edgefirst-tracker)")
from maskwatch.stream.tracking import FaceTracker, TrackerUnavailableError

CLASSES = ["with_mask", "without_mask"]


def face(x: float, y: float, p_mask: float, side: float = 40, score: float = 0.9) -> Faces:
    """One classified face."""
    return Faces([(x, y, x + side, y + side)], [score], classes=CLASSES, probabilities=[[p_mask, 1 - p_mask]],
                 classified=[True])  # fmt: skip


def frame(i: int, faces: list[Faces]) -> FrameResult:
    return FrameResult(Faces.concat(faces, classes=CLASSES), width=640, height=480, source="v.mp4", frame=i,
                       timestamp=i / 10)  # fmt: skip


def make_tracker(**options) -> FaceTracker:
    try:
        return FaceTracker(CLASSES, frame_rate=10, min_frames=3, **options)
    except TrackerUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def tracker() -> FaceTracker:
    return make_tracker()


def test_one_person_is_counted_once_and_flicker_does_not_flip_the_verdict(tracker):
    flicker = {3: 0.3, 7: 0.2}  # two frames misread as "no mask"
    seen_ids = set()
    for i in range(12):
        result = tracker.update(frame(i, [face(100 + 4 * i, 80 + i, flicker.get(i, 0.9))]))
        tracked = [f for f in result.faces if f.track_id is not None]
        seen_ids.update(f.track_id for f in tracked)
        if i >= 4:
            assert tracked and tracked[0].track_label == "with_mask"  # verdict holds on the misread frame
    summary = tracker.summary()
    assert len(seen_ids) == 1 and summary["n_tracks"] == 1
    assert summary["counts"] == {"with_mask": 1, "without_mask": 0} and summary["compliance"] == 1.0
    track = summary["tracks"][0]
    assert track["label"] == "with_mask" and track["frame_votes"]["without_mask"] == 2
    assert track["n_frames"] >= 10 and track["first_frame"] <= 1 and track["last_frame"] == 11
    json.dumps(summary)


def test_two_people_and_a_one_frame_glitch(tracker):
    for i in range(10):
        faces = [face(50 + 3 * i, 100, 0.95), face(400 - 3 * i, 120, 0.1)]
        if i == 5:
            faces.append(face(300, 350, 0.9, score=0.95))  # a false detection in one frame only
        tracker.update(frame(i, faces))
    summary = tracker.summary()
    assert summary["n_tracks"] == 2
    assert summary["counts"] == {"with_mask": 1, "without_mask": 1} and summary["compliance"] == 0.5
    assert len({t["track_id"] for t in summary["tracks"]}) == 2


def test_person_leaving_and_empty_frames(tracker):
    for i in range(5):
        tracker.update(frame(i, [face(100, 100 + 2 * i, 0.1)]))
    for i in range(5, 8):
        result = tracker.update(frame(i, []))
        assert len(result.faces) == 0
    summary = tracker.summary()
    assert summary["n_tracks"] == 1 and summary["counts"]["without_mask"] == 1
    assert [t.kind for t in tracker.pop_transitions()] == ["started"]  # still open: it could come back
    tracker.finish()  # the video ended
    ended = [t.track for t in tracker.pop_transitions() if t.kind == "ended"]
    assert [t.label for t in ended] == ["without_mask"] and not tracker.tracks
    assert tracker.summary() == summary  # closing changes no count


def test_a_long_stream_keeps_memory_bounded_and_counts_everyone():
    """People pass one after another: finished tracks leave memory (a short gap does not end a track),
    the counts keep everyone, and the summary lists only the last ``keep_tracks`` finished tracks."""
    tracker = make_tracker(keep_tracks=3)
    assert tracker.retire_seconds == 2.0  # twice ByteTrack's 30-frames-at-30-FPS buffer: 1 s, at any rate
    i = 0
    for person in range(8):
        p_mask = 0.9 if person % 2 == 0 else 0.1
        for k in range(8):
            hidden = person == 0 and k in (3, 4, 5)  # the first person is missed for 3 frames
            tracker.update(frame(i, [] if hidden else [face(100 + 3 * k, 100, p_mask)]))
            i += 1
        for _ in range(25):  # nobody in view for 2.5 s
            tracker.update(frame(i, []))
            i += 1
        assert len(tracker.tracks) == 0  # retired
        assert not tracker._bytetrack._ids and not tracker._bytetrack._last  # ByteTrack's ids forgotten too
        closed = [t.track for t in tracker.pop_transitions() if t.kind == "ended"]  # once, as the track closes
        assert len(closed) == 1 and closed[0].label == ("with_mask" if p_mask > 0.5 else "without_mask")
        assert not [t for t in tracker.pop_transitions() if t.kind == "ended"]
    summary = tracker.summary()
    assert summary["n_tracks"] == 8 and summary["counts"] == {"with_mask": 4, "without_mask": 4}
    assert [t["label"] for t in summary["tracks"]] == ["without_mask", "with_mask", "without_mask"]
    assert summary["n_tracks_not_listed"] == 5 and summary["n_short_tracks_ignored"] == 0
    json.dumps(summary)


def test_ids_are_small_per_tracker_and_come_on_the_second_consecutive_frame():
    """A new face is tentative on its first frame (no id), gets id 1 on its second; a face seen on frames 0 and 2
    only never gets one; another tracker counts its own ids from 1 again."""
    def ids(tracker: FaceTracker, boxes: list[list[float]], score: float = 0.9) -> list[int | None]:
        faces = Faces(np.array(boxes, dtype=np.float32).reshape(-1, 4), np.full(len(boxes), score), classes=CLASSES)
        return [None if t == NO_TRACK else int(t) for t in tracker.assign(faces).track_ids]

    first = make_tracker()
    assert [ids(first, [[100.0 + 2 * i, 100, 140 + 2 * i, 140]])[0] for i in range(4)] == [None, 1, 1, 1]
    second = make_tracker()
    box: list[list[float]] = [[300.0, 300, 340, 340]]
    seen = [ids(second, b) for b in (box, [], box, box)]
    assert seen == [[None], [], [None], [1]]  # frame 1 had no detection: frame 2 is not consecutive to frame 0
    # a low-score box extends a track but never starts one
    third = make_tracker()
    assert [ids(third, [[10.0, 10, 50, 50]], 0.3)[0] for _ in range(4)] == [None] * 4


def test_the_step_by_step_form_tracks_kept_faces_and_skips_decided_ones():
    """What the engine does each frame: assign ids to the faces that count, classify only the faces the
    budget wants, give the others their track's verdict, and vote only with the faces classified now."""
    tracker = make_tracker(classify_every=3, decided_votes=2, decided_probability=0.8)
    wanted = []
    for i in range(9):
        faces = Faces.concat([face(100 + 2 * i, 100, 0.95), face(400, 300, 0.95, score=0.2)], classes=CLASSES)
        faces = faces.replace(kept=[True, False], classified=[False, False])  # the second is under the gate
        faces = tracker.assign(faces)
        assert faces.track_ids[1] == NO_TRACK  # candidates that do not count are not tracked
        want = tracker.wants_classification(faces)
        assert not want[1]
        wanted.append(bool(want[0]))
        verdicts = tracker.verdicts(faces)
        faces = faces.replace(classified=want, probabilities=np.where(want[:, None], faces.probabilities, verdicts))
        faces = tracker.observe(faces, i, i / 10)
        tracker.end_frame()
        if faces.tracked[0]:
            assert faces[0].track_label == "with_mask" and faces[0].track_probability == pytest.approx(0.95)
    # ByteTrack confirms the track on its second frame; decided after 2 votes; then every 3rd frame
    assert wanted == [True, True, True, False, False, True, False, False, True]
    track = next(iter(tracker.tracks.values()))
    assert track.n_frames == 8 and track.n_classified == 4  # seen on every tracked frame, voted on 4


CAMERA_FPS = 25  # the rate the engine gives the tracker: the camera's, whatever share of it is analysed


@pytest.mark.parametrize("analysed_fps", [2, 8, 25])
def test_a_person_who_leaves_ends_within_3_s_and_a_newcomer_in_their_place_is_a_new_person(analysed_fps):
    """Tracks end by time, not by frame count: a camera delivering 25 FPS, analysed at 2, 8 or 25 FPS (a busy
    node analyses a share of each camera's frames): the person who leaves is ``ended`` within 3 s of leaving
    (frame time), and someone stepping into the same place 3 s after they left is a person of their own."""
    try:
        tracker = FaceTracker(CLASSES, frame_rate=CAMERA_FPS, min_frames=3)
    except TrackerUnavailableError as exc:
        pytest.skip(str(exc))
    step = 1.0 / analysed_fps
    # (start, end) in seconds, and whether wearing a mask: the same place, 3 s apart
    first, newcomer = (0.0, 4.0, 0.9), (7.0, 11.0, 0.1)
    ended: list[tuple[float, str]] = []  # (frame time, verdict) of each ended transition
    n = round(14.0 / step)
    for k in range(n):
        t = k * step
        faces = [face(200 + 2 * math.sin(t), 150, p) for start, end, p in (first, newcomer) if start <= t < end]
        result = FrameResult(Faces.concat(faces, classes=CLASSES), width=640, height=480, source="cam",
                             frame=round(t * CAMERA_FPS), timestamp=t)  # fmt: skip
        tracker.update(result)
        ended += [(t, tr.track.label) for tr in tracker.pop_transitions() if tr.kind == "ended"]
    left = math.ceil(first[1] / step) * step  # the first analysed frame without the first person
    assert ended and ended[0][1] == "with_mask"
    assert ended[0][0] - left <= 3.0, f"track_ended {ended[0][0] - left:.1f} s after the person left"
    assert ended[0][0] < newcomer[0]  # before the newcomer arrived: nothing left to inherit
    assert [label for _, label in ended] == ["with_mask", "without_mask"]  # two people, the newcomer ended too
    summary = tracker.summary()
    assert summary["n_tracks"] == 2 and summary["counts"] == {"with_mask": 1, "without_mask": 1}


def test_time_that_runs_back_goes_on_and_frames_without_time_count_at_the_frame_rate():
    """A looped file starts its timestamps again: the tracker's time goes on (the person in view stays one
    track, nobody is retired early or late); frames without a timestamp are timed by number at ``frame_rate``."""
    tracker = make_tracker()  # 10 FPS
    ids = set()
    for i in range(30):
        t = (i % 10) / 10  # the file loops every second
        result = tracker.update(FrameResult(Faces.concat([face(100, 100, 0.9)], classes=CLASSES), width=640,
                                            height=480, source="v.mp4", frame=i % 10, timestamp=t))  # fmt: skip
        ids.update(int(x) for x in result.candidates.track_ids if x != NO_TRACK)
    assert ids == {1} and len(tracker.tracks) == 1
    for i in range(19):  # 1.9 s without a face, timed by number (10 FPS): not retired yet
        tracker.update(FrameResult(Faces.concat([], classes=CLASSES), width=640, height=480, frame=i, timestamp=None))
    assert len(tracker.tracks) == 1
    tracker.update(FrameResult(Faces.concat([], classes=CLASSES), width=640, height=480, frame=19, timestamp=None))
    assert not tracker.tracks and [t.kind for t in tracker.pop_transitions()][-1] == "ended"


def test_the_tracks_start_threshold_is_never_below_the_detectors():
    """ByteTrack's low threshold is the detector's (only the faces that count are given); its high one (which
    starts tracks) is 0.5, raised to the detector's score threshold when that is higher."""
    assert make_tracker().start_threshold == 0.5
    assert make_tracker(detection_threshold=0.3).start_threshold == 0.5
    strict = make_tracker(detection_threshold=0.7)
    assert strict.start_threshold == 0.7
    ids = []
    for _ in range(4):  # a face at 0.6 starts no track when the detector itself asks for 0.7
        faces = strict.assign(Faces(np.array([[10.0, 10, 50, 50]], dtype=np.float32), [0.6], classes=CLASSES))
        ids.append(int(faces.track_ids[0]))
    assert ids == [NO_TRACK] * 4
