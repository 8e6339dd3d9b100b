"""When a tracked source's frame runs the face detector, and when the tracker carries its faces instead.

The face detector is most of a frame's cost, and most frames of a camera show what the frame before showed.
So on a tracked source (a video or stream with tracking on) the detector runs

* on every ``detect_every``-th analysed frame (the **interval**), and at least every
  :data:`INTERVAL_MAX_SECONDS`: the frames between are analysed by the tracker alone
  (:meth:`~maskwatch.stream.tracking.FaceTracker.predict`: the last detection's faces, moved along their
  tracks, with their tracks' verdicts; no classifier either);
* with the **motion gate** on, only where something moved since its last run, once the tracker has *settled*
  what that run found (:attr:`~maskwatch.stream.tracking.FaceTracker.settled`: every face a confirmed track
  with its votes; a new face needs a second detection to become a track). Each frame is compared with the
  frame the detector last ran on, both shrunk to a grey thumbnail (``1/THUMB_SCALE`` of each side, each
  thumbnail pixel the mean of a block, so sensor noise averages out); a thumbnail pixel whose grey level
  changed by more than ``PIXEL_DELTA`` has moved, and the frame has moved when more than ``motion_threshold``
  of the thumbnail did. A frame left out because nothing moved is ``still``: its faces are where they were
  found, and their tracks stay alive;
* and never more than ``max_skip`` seconds after its last run (the bound of both), so a face the detector has
  not looked at is never older than that: a person who walks in too slowly for the gate is still found, and
  a face is re-classified. (While nothing moves the tracker keeps its tracks alive without the detector, so
  the bound may be longer than the tracker's lost-track time.)

Time is the frame's own (``Frame.timestamp``: seconds into a video, or since a stream started), so a video
file gets the same frames detected on every run; a file that starts again (``loop``) starts a new schedule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from maskwatch.stream.config import DETECT_EVERY, MAX_SKIP, MOTION_GATE, MOTION_THRESHOLD
from maskwatch.stream.sources import Frame

__all__ = [
    "INTERVAL_MAX_SECONDS",
    "PIXEL_DELTA",
    "SETTLE_FIRST",
    "THUMB_SCALE",
    "DetectionPolicy",
    "DetectionSchedule",
    "motion_thumbnail",
    "moved_share",
]

# the interval never leaves a frame undetected longer than this after the last detection, however slowly the
# frames come (a loaded node): half the tracker's lost-track time (1 s), so a moving face is looked for again
# before its track is given up
INTERVAL_MAX_SECONDS = 0.5
THUMB_SCALE = 8  # the thumbnail is 1/8 of each side: 80x60 for 640x480 (a 64-pixel block per thumbnail pixel)
PIXEL_DELTA = 12  # grey levels (of 255) a thumbnail pixel must change by to count as moved
# while the tracker has not settled the last detection (a face that is not yet a track with its votes), the
# detector runs on every frame, interval or not (a new face needs consecutive detections to become a track)
SETTLE_FIRST = False


@dataclass(frozen=True)
class DetectionPolicy:
    """One source's settings (``CameraDefaults``: ``detect_every``, ``motion_gate``, ``motion_threshold``,
    ``max_skip``)."""

    detect_every: int = DETECT_EVERY
    motion_gate: bool = MOTION_GATE
    motion_threshold: float = MOTION_THRESHOLD
    max_skip: float = MAX_SKIP

    @property
    def every_frame(self) -> bool:
        """The detector runs on every frame (today's behaviour: no interval, no gate)."""
        return self.detect_every <= 1 and not self.motion_gate


def motion_thumbnail(image: np.ndarray) -> np.ndarray:
    """The grey thumbnail the motion gate compares (block means: ``cv2.INTER_AREA``)."""
    h, w = image.shape[:2]
    size = (max(1, w // THUMB_SCALE), max(1, h // THUMB_SCALE))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small


def moved_share(a: np.ndarray, b: np.ndarray) -> float:
    """The share of thumbnail pixels that changed by more than :data:`PIXEL_DELTA` (1.0 for thumbnails of
    different sizes: the camera's resolution changed)."""
    if a.shape != b.shape:
        return 1.0
    return float(np.count_nonzero(cv2.absdiff(a, b) > PIXEL_DELTA)) / a.size


class DetectionSchedule:
    """One source's detector schedule. Per analysed frame: :meth:`wants_detection`, then :meth:`ran` when the
    detector ran on it (the analysis may run it anyway: nothing to carry yet)."""

    def __init__(self, policy: DetectionPolicy) -> None:
        self.policy = policy
        self.since = 0  # analysed frames since the detector last ran
        self.last_time: float | None = None  # when it last ran (the frame's time)
        self.reference: np.ndarray | None = None  # the thumbnail of that frame (motion gate)
        self._thumb: tuple[Frame, np.ndarray] | None = None  # the frame last looked at, and its thumbnail
        self.still = False  # the frame last decided on is left out because nothing moved since the last run

    def wants_detection(self, frame: Frame, *, settled: bool = True) -> bool:
        """Whether the detector should run on this frame (False: the tracker carries the faces; :attr:`still`
        says whether because nothing moved). ``settled``: the tracker's word that the last run left nothing
        to settle (else the motion gate does not skip)."""
        policy = self.policy
        self.still = False
        if policy.every_frame or self.last_time is None:
            return True
        elapsed = _time_of(frame) - self.last_time
        if elapsed < 0 or elapsed >= policy.max_skip - 1e-6:  # the bound (or a file that started again)
            return True
        if SETTLE_FIRST and not settled:
            return True
        if self.since + 1 < policy.detect_every and elapsed < INTERVAL_MAX_SECONDS:
            return False
        if not policy.motion_gate or not settled or self.reference is None:
            return True
        if moved_share(self._thumbnail(frame), self.reference) > policy.motion_threshold:
            return True
        self.still = True
        return False

    def ran(self, frame: Frame) -> None:
        """The detector ran on this frame: the interval, the bound and the gate count from it."""
        self.since = 0
        self.last_time = _time_of(frame)
        if self.policy.motion_gate:
            self.reference = self._thumbnail(frame)
        self._thumb = None

    def skipped(self) -> None:
        """The tracker carried this frame's faces."""
        self.since += 1
        self._thumb = None

    def _thumbnail(self, frame: Frame) -> np.ndarray:
        if self._thumb is None or self._thumb[0] is not frame:
            self._thumb = (frame, motion_thumbnail(frame.image))
        return self._thumb[1]


def _time_of(frame: Frame) -> float:
    if frame.timestamp is not None:
        return float(frame.timestamp)
    return frame.captured if frame.captured is not None else time.monotonic()
