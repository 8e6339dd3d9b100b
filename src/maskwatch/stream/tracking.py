"""Following faces across video frames, so each person is counted once (torch-free).

Association is ByteTrack (Zhang et al., 2022), not a home-made tracker: the compiled (Rust) implementation of
the ``edgefirst-tracker`` package (Apache-2.0; it needs numpy only, where the pure-Python ones pull in scipy,
matplotlib and PyAV: a tenth of the edge install). This module only adapts it: boxes and scores in, one id per
box out, with the settings of the ByteTrack it replaced (Roboflow's ``trackers``): a new track gets its id on
its second consecutive frame, a lost one is kept ``lost_track_buffer`` frames at 30 FPS (one second). Time is
the frames' own (a file's position, a live frame's arrival), never a frame count: a camera analysed at 2 FPS on
a busy node loses a person as soon as one analysed at 25 FPS, and whoever steps into their place afterwards is
a new person. People counts agree with that one side by side on the benchmark videos
(``benchmarks/bench_tracker.py``, BENCHMARKS.md).

Thresholds: ByteTrack has two. Its low one is the detector's ``score_threshold`` (0.3 by default): only the
faces that count (``kept``) are given to it, so it needs no setting of its own. Its high one (0.5), the score
that starts a track, is deliberately higher: a face scoring between the two extends a track but never starts
one, as in ByteTrack (low-score boxes are mostly partly hidden faces of tracks already there, or false
detections); it is raised to the detector's threshold when that is higher (``detection_threshold``).

On top of the tracker, each track *votes*: the class probabilities of its faces are averaged over the
frames it was seen in (soft voting), and the track's verdict is the class with the highest mean. One
misread frame therefore cannot flip a verdict that many frames agree on. A person is counted once, when
their track has been seen in at least ``min_frames`` frames (shorter tracks are usually false detections).

Memory stays bounded on a 24/7 stream: a track unseen for twice ByteTrack's lost-track buffer (two seconds
of frame time) cannot be picked up again, so it is *retired*: its verdict is added to running counts and its
summary kept in a list of the last ``keep_tracks`` finished tracks (older ones leave the list, not the counts;
the engine keeps none). Each counted track is also handed out once, when it closes, as an ``ended`` transition, so
consumers hear of a person as they leave instead of only when the stream ends.

Faces come and go as :class:`~maskwatch.core.faces.Faces` (columns, not objects). The stream engine
drives the tracker in steps, so that it can skip classifying faces whose verdict is settled (the
*classification budget*): :meth:`FaceTracker.assign` fills the ``track_ids`` of the faces that count
(``kept``), :meth:`FaceTracker.wants_classification` says which of them need the classifier on this
frame, :meth:`FaceTracker.verdicts` gives the others their track's verdict, and :meth:`FaceTracker.observe`
records the frame (a vote for each face classified now) and fills ``track_probabilities``. The tracker
keeps a list of transitions (a track becoming a person, its verdict changing, its end) that the engine turns
into events (:meth:`FaceTracker.pop_transitions`).

    >>> tracker = FaceTracker(classes=["with_mask", "without_mask"], frame_rate=25)   # doctest: +SKIP
    >>> for frame in frames:                                                          # doctest: +SKIP
    ...     result = tracker.update(detector.detect(frame.image))   # faces get track ids and verdicts
    >>> tracker.summary()["counts"]                                                   # doctest: +SKIP
    {'with_mask': 3, 'without_mask': 1}
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskwatch.core.contract import compliance_rate
from maskwatch.core.faces import NO_TRACK, Faces
from maskwatch.detection.results import FrameResult

__all__ = ["FaceTracker", "Track", "TrackerUnavailableError", "Transition", "bytetrack_backend"]


class TrackerUnavailableError(ImportError):
    """The ByteTrack package (``edgefirst-tracker``) is not installed."""


def bytetrack_backend() -> str:
    """The ByteTrack implementation in use (``edgefirst-tracker``), or :class:`TrackerUnavailableError`."""
    try:
        import edgefirst.tracker  # noqa: F401
    except ImportError as exc:
        raise TrackerUnavailableError(
            "tracking needs ByteTrack: pip install 'maskwatch[video]' (or 'maskwatch[edge]'; the edgefirst-tracker "
            "package), or pass --no-track"
        ) from exc
    return "edgefirst-tracker"


# edgefirst's Kalman measurement gain (0..1; its default 0.25 trusts the motion model more): chosen on half
# of the benchmark videos as the gain whose people counts agree best, video by video, with the ByteTrack this
# replaced; agreement reported on the other half (``benchmarks/bench_tracker.py --gains``, BENCHMARKS.md)
KALMAN_GAIN = 0.9

#: the most a tracker's clock moves on between two analysed frames: above the 0.5 s of a camera analysed at
#: 2 FPS (the slowest rate whose tracks must end on time), so a stall of the analysis (frames dropped while
#: the CPU was elsewhere) does not expire the tracks of people still in view
MAX_STEP_S = 0.6


class _ByteTrack:
    """``edgefirst.tracker.ByteTrack`` behind the interface this module needs: ``ids(boxes, scores, at)``, one
    id (or None) per box, called once per frame with the frame's time ``at`` (seconds, never decreasing).

    Time is the frames' own time, not a frame count: a lost track can be matched again for ``lost_seconds``
    after its last match, then it is gone, whatever rate the frames are analysed at (a camera analysed at
    2 FPS on a busy node forgets a person as soon as one analysed at 25 FPS does, and a newcomer stepping into
    their place later gets an id of their own). One convention of the ByteTrack this replaced is kept: a new
    track is *tentative* until it is matched on ``minimum_consecutive_frames`` consecutive detections (one
    that misses a detection starts counting again), so one-frame false detections never get an id. edgefirst
    names tracks by UUID; ids here are small integers, counted per tracker.

    A frame the detector did not run on (the engine's detector interval and motion gate) is :meth:`skip`-ped:
    time goes on (a lost track is still forgotten after ``lost_seconds``), but a tentative track is not reset
    by a frame nobody looked at: *consecutive* means consecutive detections. On a frame where nothing moved
    since the last detection, that detection's boxes are still what the frame shows: they are given again
    (:meth:`keep`), so the tracks they belong to stay alive however long the scene stays still, while a track
    that was already lost is forgotten on time."""

    def __init__(
        self,
        *,
        lost_seconds: float,
        high_confidence_threshold: float,
        minimum_matching_iou: float,
        minimum_consecutive_frames: int,
    ) -> None:
        from edgefirst.tracker import ByteTrack

        self._tracker = ByteTrack(
            high_conf=float(high_confidence_threshold),
            iou=float(minimum_matching_iou),
            update=KALMAN_GAIN,
            lifespan_ns=round(float(lost_seconds) * 1e9),
        )
        self._needed = max(1, int(minimum_consecutive_frames))
        self._detections = 0  # frames the detector ran on (ids() calls)
        self._streak: dict[str, tuple[int, int]] = {}  # tentative uuid -> (consecutive matches, last detection)
        self._ids: dict[str, int] = {}  # confirmed uuid -> id
        self._last: dict[str, float] = {}  # uuid -> time last matched (to forget ended tracks)
        self._next_id = 0
        # edgefirst has expired a track unmatched this long (twice its lifespan: never before it does)
        self._forget_after = 2.0 * float(lost_seconds)

    def _update(self, boxes: np.ndarray, scores: np.ndarray, at: float) -> list[Any]:
        n = len(scores)
        return list(
            self._tracker.update(
                np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4),
                np.ascontiguousarray(scores, dtype=np.float32).reshape(-1),
                np.zeros(n, dtype=np.uintp),  # one class: faces
                round(at * 1e9),
            )
        )

    def ids(self, boxes: np.ndarray, scores: np.ndarray, at: float) -> list[int | None]:
        tracks = self._update(boxes, scores, at)
        out: list[int | None] = [None] * len(scores)
        for index, info in enumerate(tracks):
            if info is not None:
                out[index] = self._confirm(info.uuid, at)
        self._detections += 1
        self._forget(at)
        return out

    def skip(self, at: float) -> None:
        """A frame without detections to give (the detector did not run): time goes on."""
        self._forget(at)

    def keep(self, boxes: np.ndarray, scores: np.ndarray, at: float) -> None:
        """A frame where nothing moved: the confirmed tracks' last detected boxes, given again to keep them
        alive (no track is confirmed by it: it is not a detection)."""
        for info in self._update(boxes, scores, at):
            if info is not None and info.uuid in self._ids:
                self._last[info.uuid] = at
        self._forget(at)

    def _confirm(self, uuid: str, at: float) -> int | None:
        """This track's id, or None while it is tentative."""
        self._last[uuid] = at
        known = self._ids.get(uuid)
        if known is not None:
            return known
        now = self._detections
        count, last = self._streak.get(uuid, (0, now - 1))
        count = count + 1 if last == now - 1 else 1  # a tentative track that missed a detection restarts
        if count < self._needed:
            self._streak[uuid] = (count, now)
            return None
        self._streak.pop(uuid, None)
        self._next_id += 1
        self._ids[uuid] = self._next_id
        return self._next_id

    def _forget(self, at: float) -> None:
        """Drop the uuids of tracks edgefirst has expired (unmatched for longer than it keeps them)."""
        for uuid in [u for u, last in self._last.items() if at - last > self._forget_after]:
            del self._last[uuid]
            self._ids.pop(uuid, None)
            self._streak.pop(uuid, None)


@dataclass
class Track:
    """One tracked face: its votes so far and where it was seen."""

    track_id: int
    classes: list[str]
    first_frame: int
    last_frame: int
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    n_frames: int = 0  # frames the face was seen in
    n_classified: int = 0  # frames in which it was classified (its votes)
    last_update: int = 0  # the tracker's update counter when last seen
    last_at: float = 0.0  # the tracker's time (seconds) when last seen: when it is retired
    last_classified: int = -(10**9)  # the update counter when last classified
    first_seen: float | None = None  # wall clock (time.time()) when first / last seen
    last_seen: float | None = None
    probability_sum: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    frame_votes: dict[str, int] = field(default_factory=dict)  # per-frame argmax labels (for insight)
    best_score: float = 0.0
    best_box: tuple[float, float, float, float] | None = None
    announced: str | None = None  # the verdict last reported in a transition (None: not a person yet)
    found_box: np.ndarray | None = field(default=None, repr=False)  # the detector's last box of it ...
    found_at: float | None = None  # ... and when (seconds: the frame's time)
    velocity: np.ndarray | None = field(default=None, repr=False)  # its box's motion (px/s) between its last two
    velocity_span: float = 0.0  # detections, and the seconds between them (how far it may be extrapolated)

    def add(
        self,
        box: Sequence[float],
        score: float,
        probabilities: np.ndarray,
        frame: int,
        timestamp: float | None,
        *,
        classified: bool = True,
        wall: float | None = None,
        predicted: bool = False,
        at: float | None = None,
    ) -> None:
        """Record this frame's face (its box, detector score and class probabilities, in ``classes``
        order); its probabilities are a vote only when it was ``classified``. A ``predicted`` face (the
        tracker's box: the detector did not run) is not a view of it (no best view, no motion). ``at``: the
        frame's time in seconds (the motion of the box)."""
        self.n_frames += 1
        self.last_frame = frame
        self.last_timestamp = timestamp
        if wall is not None:
            self.first_seen = wall if self.first_seen is None else self.first_seen
            self.last_seen = wall
        if not predicted and at is not None:
            self._moved(np.asarray(box, dtype=np.float64), at)
        if classified:
            p = np.asarray(probabilities, dtype=np.float64)
            self.probability_sum = p.copy() if self.n_classified == 0 else self.probability_sum + p
            self.n_classified += 1
            label = self.classes[int(np.argmax(p))]
            self.frame_votes[label] = self.frame_votes.get(label, 0) + 1
        if not predicted and score >= self.best_score:
            x0, y0, x1, y1 = (float(v) for v in box)
            self.best_score, self.best_box = float(score), (x0, y0, x1, y1)

    def _moved(self, box: np.ndarray, at: float) -> None:
        """The detector found it at ``box`` at time ``at``: its motion since the previous detection."""
        if self.found_box is not None and self.found_at is not None and at > self.found_at:
            self.velocity_span = at - self.found_at
            self.velocity = (box - self.found_box) / self.velocity_span
        self.found_box, self.found_at = box.copy(), at

    def predicted_box(self, at: float) -> np.ndarray | None:
        """Where its box is at time ``at``: its last detected box moved at its last velocity, for at most as
        long as that velocity was measured over (a face that stops is not carried away); None before any
        detection."""
        if self.found_box is None or self.found_at is None:
            return None
        if self.velocity is None:
            return self.found_box.copy()
        elapsed = min(max(0.0, at - self.found_at), self.velocity_span)
        return self.found_box + self.velocity * elapsed

    @property
    def mean(self) -> np.ndarray | None:
        """The verdict's probabilities (mean over the classified frames, ``classes`` order); None before
        any vote."""
        return None if self.n_classified == 0 else self.probability_sum / self.n_classified

    @property
    def mean_probabilities(self) -> dict[str, float]:
        mean = self.mean
        if mean is None:
            return dict.fromkeys(self.classes, 0.0)
        return {c: float(v) for c, v in zip(self.classes, mean, strict=True)}

    @property
    def label(self) -> str:
        mean = self.mean_probabilities
        return max(mean, key=mean.__getitem__)

    @property
    def probability(self) -> float:
        return self.mean_probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(float(v), 4)

        return {
            "track_id": self.track_id,
            "label": self.label,
            "probability": r(self.probability),
            "probabilities": {k: r(v) for k, v in self.mean_probabilities.items()},
            "frame_votes": dict(self.frame_votes),
            "n_frames": self.n_frames,
            "n_classified": self.n_classified,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_timestamp": r(self.first_timestamp),
            "last_timestamp": r(self.last_timestamp),
            "best_score": r(self.best_score),
            "best_box": None if self.best_box is None else [round(v, 1) for v in self.best_box],
        }


@dataclass(frozen=True)
class Transition:
    """Something the engine reports about a person: ``started`` (the track reached ``min_frames``),
    ``changed`` (its verdict changed; ``previous`` holds the old one) or ``ended`` (retired or finished)."""

    kind: str
    track: Track
    previous: str | None = None


class FaceTracker:
    """ByteTrack over the faces of consecutive frames, with per-track voting.

    Args:
        classes: the classifier's classes (the order of the vote vectors).
        frame_rate: the frames' nominal rate: only used to time frames given without a timestamp (their
            number at this rate). Time otherwise is the frames' own (see :meth:`assign`), so tracks end on
            time whatever rate the frames are analysed at.
        lost_track_buffer: how long a lost track is kept for re-association, in frames at 30 FPS
            (ByteTrack's convention: 30 is one second, at any frame rate); it is retired (its ``ended``
            transition) when unseen for twice as long.
        track_activation_threshold: detector score needed to start a track.
        high_confidence_threshold: detections below this only extend existing tracks (ByteTrack's
            second association stage). ByteTrack's *low* threshold is the detector's own: only the faces
            that count (``kept``, scoring at least the detector's ``score_threshold``) are given to it;
            ``detection_threshold`` says what that is, so the high one is never below it.
        detection_threshold: the detector's score threshold (None: not known); the tracks' start threshold
            is the highest of this and the two above.
        minimum_matching_iou: smallest IoU between a track's predicted box and a detection to match.
        minimum_consecutive_frames: frames a new track needs before it gets an id.
        min_frames: frames a track needs to be counted as a person in :meth:`summary`.
        keep_tracks: finished tracks listed in :meth:`summary` (the most recent; counts include all).
        classify_every: the classification budget: a track whose verdict is *decided* (at least
            ``decided_votes`` classified frames and a mean probability of at least ``decided_probability``)
            is classified again only every this many frames; None or 1 classifies every face every frame.
        compliant_classes: the model's classes that count as compliant (None: the default for ``classes``).
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        frame_rate: float = 30.0,
        lost_track_buffer: int = 30,
        track_activation_threshold: float = 0.5,
        high_confidence_threshold: float = 0.5,
        minimum_matching_iou: float = 0.1,
        minimum_consecutive_frames: int = 2,
        detection_threshold: float | None = None,
        min_frames: int = 3,
        keep_tracks: int = 10_000,
        classify_every: int | None = None,
        decided_votes: int = 3,
        decided_probability: float = 0.8,
        compliant_classes: Sequence[str] | None = None,
    ) -> None:
        if classify_every is not None and classify_every < 1:
            raise ValueError(f"classify_every must be >= 1 or None, got {classify_every}")
        self.classes = list(classes)
        self.classify_every = classify_every
        self.compliant_classes = None if compliant_classes is None else list(compliant_classes)
        self.decided_votes = int(decided_votes)
        self.decided_probability = float(decided_probability)
        self.min_frames = int(min_frames)
        self.keep_tracks = int(keep_tracks)
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
        # ByteTrack forgets a lost track after lost_track_buffer / 30 seconds; it is retired after twice that
        self.lost_seconds = lost_track_buffer / 30.0
        self.retire_seconds = 2.0 * self.lost_seconds
        self.backend = bytetrack_backend()
        # edgefirst's ByteTrack starts tracks at the high-confidence threshold (one setting for both); its low
        # threshold is the detector's (only kept faces are given), and the high one is never below it
        thresholds = [track_activation_threshold, high_confidence_threshold]
        self.start_threshold = float(max(thresholds + ([] if detection_threshold is None else [detection_threshold])))
        self._bytetrack = _ByteTrack(
            lost_seconds=self.lost_seconds,
            high_confidence_threshold=self.start_threshold,
            minimum_matching_iou=minimum_matching_iou,
            minimum_consecutive_frames=minimum_consecutive_frames,
        )
        self.frame_rate = float(frame_rate)
        self._now: float | None = None  # the time of the frame in progress (seconds, never running back)
        self._offset = 0.0  # added to the frames' times once a source's time ran back (a looped file)
        self.tracks: dict[int, Track] = {}  # open tracks, by id
        self.finished: deque[dict[str, Any]] = deque(maxlen=self.keep_tracks)  # retired counted tracks
        self._transitions: list[Transition] = []
        self.n_updates = 0  # frames given (detected or predicted)
        self._found: Faces | None = None  # the faces of the last frame the detector ran on (what predict carries)
        self._detecting = False  # the frame in progress is a detected one (assign), not a predicted one
        self._retired_counts = dict.fromkeys(self.classes, 0)
        self._retired_counted = 0
        self._retired_short = 0

    def update(self, result: FrameResult) -> FrameResult:
        """Track this frame's (classified) faces, add their votes, and return the frame with each kept
        face's ``track_ids`` and ``track_probabilities`` filled in (untracked faces keep none). The
        one-call form of :meth:`assign` + :meth:`observe` + :meth:`end_frame`."""
        faces = self.observe(
            self.assign(result.candidates, result.frame, result.timestamp), result.frame, result.timestamp
        )
        self.end_frame()
        return dataclasses.replace(result, candidates=faces)

    def assign(self, faces: Faces, frame: int | None = None, timestamp: float | None = None) -> Faces:
        """Start a frame: the faces with ByteTrack's id in ``track_ids`` for each face that counts
        (``kept``; :data:`~maskwatch.core.faces.NO_TRACK` for the others and for faces not part of a
        confirmed track). ``timestamp``: the frame's time in seconds (a file's position, a live frame's
        arrival), what lost tracks expire by; without one, its number ``frame`` (default: the frames given so
        far) at ``frame_rate``."""
        at = self._tick(frame, timestamp)
        rows = np.flatnonzero(faces.kept)
        ids = np.full(len(faces), NO_TRACK, dtype=np.int64)
        for row, track_id in zip(rows, self._bytetrack.ids(faces.boxes[rows], faces.scores[rows], at), strict=True):
            if track_id is not None:
                ids[row] = track_id
        self.n_updates += 1
        self._detecting = True
        return faces.replace(track_ids=ids)

    @property
    def can_predict(self) -> bool:
        """A detected frame has been observed: :meth:`predict` has faces to carry."""
        return self._found is not None

    @property
    def settled(self) -> bool:
        """The last detection left nothing to settle: every face that counts in it is a confirmed track with
        at least ``decided_votes`` votes. Until then the engine's motion gate does not skip the detector (a
        new face needs its second detection to become a track, and its votes), whatever moved."""
        found = self._found
        if found is None:
            return False
        for row in np.flatnonzero(found.kept):
            track_id = int(found.track_ids[row])
            track = self.tracks.get(track_id) if track_id != NO_TRACK else None
            if track is None or track.n_classified < self.decided_votes:
                return False
        return True

    def predict(self, frame: int, timestamp: float | None, width: int, height: int, *, still: bool = False) -> Faces:
        """Start a frame the detector does not run on (the engine's detector interval and motion gate): the
        faces of the last detected frame, carried to this one. Each face of a track is moved along the track
        (:meth:`Track.predicted_box`), or, when ``still`` (nothing moved since that detection), left where it
        was found (and its track kept alive: :meth:`_ByteTrack.keep`); it takes its track's verdict. Every
        face is marked ``predicted`` and not ``classified``, and keeps its ``kept`` (a carried face counts and
        is blurred like a found one); boxes are clipped to the ``width`` x ``height`` frame (a face that left
        it is dropped). Give the result to :meth:`observe` like a detected frame's faces: it is a frame of
        each track (seen, no vote). Call only when :attr:`can_predict`."""
        if self._found is None:
            raise RuntimeError("nothing to carry: no detected frame has been observed yet")
        found = self._found
        now = self._tick(frame, timestamp)
        self.n_updates += 1
        self._detecting = False
        if still:
            alive = found.tracked & found.kept
            self._bytetrack.keep(found.boxes[alive], found.scores[alive], now)
        else:
            self._bytetrack.skip(now)
        boxes = found.boxes.copy()
        probabilities = found.probabilities.copy()
        verdicts = found.track_probabilities.copy()
        at = self._seconds(frame, timestamp)
        for row in np.flatnonzero(found.tracked):
            track = self.tracks.get(int(found.track_ids[row]))
            if track is None:
                continue
            box = None if still else track.predicted_box(at)
            if box is not None:
                boxes[row] = box
            if track.mean is not None:
                probabilities[row] = verdicts[row] = track.mean
        shift = (boxes[:, :2] + boxes[:, 2:] - found.boxes[:, :2] - found.boxes[:, 2:]) / 2.0
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
        inside = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        carried = Faces(
            boxes,
            found.scores,
            found.landmarks + shift[:, None, :],
            classes=found.classes,
            probabilities=probabilities,
            track_ids=found.track_ids,
            track_probabilities=verdicts,
            classified=np.zeros(len(found), dtype=bool),
            kept=found.kept,
            predicted=np.ones(len(found), dtype=bool),
        )
        return carried if inside.all() else carried[inside]

    def _seconds(self, frame: int, timestamp: float | None) -> float:
        """A frame's time in seconds (its timestamp, else its number at the tracker's frame rate)."""
        return float(timestamp) if timestamp is not None else frame / self.frame_rate

    def _tick(self, frame: int | None, timestamp: float | None) -> float:
        """The time of the frame starting now (:meth:`_seconds`), never running back: when a source's time
        does (a looped file, a restarted source, still images without one), it goes on one frame on."""
        at = self._seconds(self.n_updates if frame is None else frame, timestamp) + self._offset
        if self._now is not None and at <= self._now:
            step = 1.0 / self.frame_rate
            self._offset += self._now + step - at
            at = self._now + step
        elif self._now is not None and at - self._now > MAX_STEP_S:
            # the analysis stalled (a busy machine) while frames kept coming: the people in view did not
            # leave meanwhile, so the tracker's clock moves on at most MAX_STEP_S per analysed frame
            self._offset -= at - self._now - MAX_STEP_S
            at = self._now + MAX_STEP_S
        self._now = at
        return at

    def wants_classification(self, faces: Faces) -> np.ndarray:
        """(n,) bool: the faces to classify on this frame (the classification budget): every face that
        counts, except those of a track whose verdict is decided and was classified less than
        ``classify_every`` frames ago."""
        want = faces.kept.copy()
        if not self.classify_every or self.classify_every <= 1:
            return want
        for row in np.flatnonzero(want & faces.tracked):
            track = self.tracks.get(int(faces.track_ids[row]))
            if track is None or track.n_classified < self.decided_votes or track.probability < self.decided_probability:
                continue
            want[row] = self.n_updates - track.last_classified >= self.classify_every
        return want

    def verdicts(self, faces: Faces) -> np.ndarray:
        """(n, classes): each tracked face's track verdict so far (mean probabilities); NaN without one."""
        out = np.full((len(faces), len(self.classes)), np.nan)
        for row in np.flatnonzero(faces.tracked):
            track = self.tracks.get(int(faces.track_ids[row]))
            if track is not None and track.mean is not None:
                out[row] = track.mean
        return out

    def observe(self, faces: Faces, frame: int, timestamp: float | None, *, wall: float | None = None) -> Faces:
        """Record this frame: every tracked face with class probabilities is its track's view (a vote when
        ``classified`` now, else only seen). Returns the faces with ``track_probabilities`` (the verdict
        after this frame) filled in for tracked faces whose track has a vote."""
        if not len(faces):
            if self._detecting:
                self._found = faces
            return faces
        verdicts = faces.track_probabilities.copy()
        has_probabilities = faces.has_probabilities
        at = self._seconds(frame, timestamp)
        for row in np.flatnonzero(faces.tracked & has_probabilities):
            track_id = int(faces.track_ids[row])
            track = self.tracks.get(track_id)
            if track is None:
                track = self.tracks[track_id] = Track(track_id, self.classes, frame, frame, timestamp, timestamp)
            classified = bool(faces.classified[row])
            track.add(faces.boxes[row], float(faces.scores[row]), faces.probabilities[row], frame, timestamp,
                      classified=classified, wall=wall, predicted=bool(faces.predicted[row]), at=at)  # fmt: skip
            track.last_update = self.n_updates
            track.last_at = at if self._now is None else self._now
            if classified:
                track.last_classified = self.n_updates
            if track.n_classified:
                if track.announced is None and track.n_frames >= self.min_frames:
                    self._transitions.append(Transition("started", track))
                    track.announced = track.label
                elif track.announced is not None and track.label != track.announced:
                    self._transitions.append(Transition("changed", track, track.announced))
                    track.announced = track.label
                verdicts[row] = track.mean
        observed = faces.replace(track_probabilities=verdicts)
        if self._detecting:
            self._found = observed  # what predict() carries until the detector runs again
        return observed

    def end_frame(self) -> None:
        """Finish a frame: retire the tracks that can no longer come back (unseen for ``retire_seconds``)."""
        if self._now is not None:
            self._retire(self._now - self.retire_seconds + 1e-6)

    def pop_transitions(self) -> list[Transition]:
        """Persons started, verdicts changed and persons ended since the last call, in order."""
        out, self._transitions = self._transitions, []
        return out

    def _retire(self, before: float) -> None:
        """Fold tracks last seen at or before time ``before`` (seconds) into the running counts."""
        for track_id in [i for i, t in self.tracks.items() if t.last_at <= before]:
            track = self.tracks.pop(track_id)
            if self._counts(track):
                if track.announced is None:  # reached min_frames without a vote until the end
                    self._transitions.append(Transition("started", track))
                self._retired_counts[track.label] += 1
                self._retired_counted += 1
                if self.keep_tracks:
                    self.finished.append(track.to_dict())
                self._transitions.append(Transition("ended", track))
            else:
                self._retired_short += 1

    def _counts(self, track: Track) -> bool:
        """A track is a person when seen in ``min_frames`` frames and classified at least once."""
        return track.n_frames >= self.min_frames and track.n_classified > 0

    def finish(self) -> None:
        """The video or stream has ended: close every open track (the counts do not change)."""
        self._retire(math.inf)

    def counted_tracks(self) -> list[Track]:
        """Open tracks long enough to count as a person, by id."""
        return [t for _, t in sorted(self.tracks.items()) if self._counts(t)]

    def summary(self) -> dict[str, Any]:
        """People counted once each: verdict counts, compliance, and the counted tracks (the last
        ``keep_tracks`` finished ones, then the open ones)."""
        counted = self.counted_tracks()
        counts = dict(self._retired_counts)
        for track in counted:
            counts[track.label] += 1
        rate = compliance_rate(counts, self.classes, self.compliant_classes)
        n_counted = self._retired_counted + len(counted)
        tracks = list(self.finished) + [t.to_dict() for t in counted]
        return {
            "n_tracks": n_counted,
            "n_short_tracks_ignored": self._retired_short + len(self.tracks) - len(counted),
            "n_tracks_not_listed": n_counted - len(tracks),
            "min_frames": self.min_frames,
            "counts": counts,
            "compliance": None if rate is None else round(rate, 4),
            "tracks": tracks,
            "tracker": f"ByteTrack ({self.backend})",
        }
