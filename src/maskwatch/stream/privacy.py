"""Privacy in the engine: a source's privacy zones blacked out before anything sees a frame, and the blur
hold of video (where faces were a moment ago), plus the measurement of both on videos made from still
images (``maskwatch evaluate-detection --video-frames N``).

The analysis step calls two hooks per frame (:mod:`maskwatch.stream.analysis`), and nothing else in the
engine knows about privacy:

* :meth:`SourcePrivacy.black_out` first: the frame's privacy zones painted black
  (:func:`maskwatch.detection.privacy.black_out`), so the detector, the live views, ``latest.jpg``, the
  snapshots and an edge agent's snapshot only ever see the blacked-out frame (a zone is not analysed: faces
  in it are neither counted nor stored);
* :meth:`SourcePrivacy.held` after the detector: the boxes of the privacy tracks the detector lost on this
  frame, at their predicted place, for :data:`~maskwatch.detection.privacy.BLUR_HOLD_S`; they go into the
  frame's ``FrameResult.held_boxes`` and :func:`~maskwatch.detection.privacy.blur_regions` blurs them.

The hold is a ByteTrack of its own (the compiled ``edgefirst-tracker``, as :mod:`maskwatch.stream.tracking`)
over *every* blur candidate, apart from the tracker that counts people (which follows only the faces that
count, from a score of 0.5): the faces that flicker are the faint ones. Its Kalman filter carries a lost
track along its last motion; a frame with no detection at all (a detector interval) gives every live
track's predicted box. It costs about 0.3 ms per frame for 50 candidates. Without the tracker package
there is no hold (still images, ``--no-track`` installs): each frame is blurred on its own detections.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maskwatch.detection.privacy import BLUR_HOLD_S, black_out, blur_mask, blur_regions
from maskwatch.detection.results import FrameResult

if TYPE_CHECKING:
    from maskwatch.core.faces import Faces
    from maskwatch.detection.evaluation import ImageSubset
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream.sources import Frame

__all__ = ["BlurHold", "SourcePrivacy", "evaluate_privacy_video", "video_from_image"]

log = logging.getLogger("maskwatch")

Zones = Sequence[Sequence[Sequence[float]]]

# the privacy tracker's Kalman measurement gain and matching IoU: those of the counting tracker
# (maskwatch.stream.tracking: KALMAN_GAIN, minimum_matching_iou)
_GAIN = 0.9
_MATCH_IOU = 0.1


class BlurHold:
    """Where faces were a moment ago: a ByteTrack over every blur candidate of one source. :meth:`update`
    takes a frame's candidates and returns the predicted boxes of the tracks not matched on this frame and
    last seen at most ``hold`` seconds ago. Time is the source's (a video's position, a stream's arrival
    time); when it runs backwards (a file looping, a stream reopened) the hold starts afresh."""

    def __init__(self, hold: float = BLUR_HOLD_S) -> None:
        from edgefirst.tracker import ByteTrack

        if hold < 0:
            raise ValueError(f"hold must be >= 0 seconds, got {hold}")
        self.hold = float(hold)
        self._make: Callable[[], Any] = lambda: ByteTrack(
            high_conf=0.0,  # every candidate may start a track: a faint face is what flickers
            iou=_MATCH_IOU,
            update=_GAIN,
            lifespan_ns=int(self.hold * 1e9) + 1,
        )
        self._tracker = self._make()
        self._last_ns: int | None = None

    def update(self, candidates: Faces, timestamp: float) -> np.ndarray:
        """(m, 4): the predicted boxes of the tracks the detector lost (``candidates``: every box it found on
        this frame, at ``timestamp`` seconds)."""
        now = round(timestamp * 1e9)
        if self._last_ns is not None and now <= self._last_ns:
            self._tracker = self._make()
        self._last_ns = now
        n = len(candidates)
        self._tracker.update(
            np.ascontiguousarray(candidates.boxes, dtype=np.float32).reshape(-1, 4),
            np.ascontiguousarray(candidates.scores, dtype=np.float32).reshape(-1),
            np.zeros(n, dtype=np.uintp),
            now,
        )
        if self.hold <= 0:
            return np.zeros((0, 4))
        limit = int(self.hold * 1e9)
        held = [
            active.info.tracked_location
            for active in self._tracker.get_active_tracks()
            if 0 < now - active.info.last_updated <= limit
        ]
        return np.asarray(held, dtype=np.float64).reshape(-1, 4)


class SourcePrivacy:
    """One source's privacy steps in the analysis: its zones (polygons in fractions of the frame, blacked out
    before anything sees the frame) and its blur hold (video and live sources; None for still images, which
    are unrelated to each other, or without the tracker package)."""

    def __init__(self, zones: Zones = (), *, hold: BlurHold | None = None) -> None:
        self.zones = [[(float(x), float(y)) for x, y in zone] for zone in zones]
        self.hold = hold

    @classmethod
    def for_source(cls, zones: Zones | None, *, sequence: bool) -> SourcePrivacy:
        """The privacy of a source: ``sequence`` = its frames follow each other (a video, a stream, a
        slideshow), so a face lost for a moment is held."""
        hold = None
        if sequence:
            try:
                hold = BlurHold()
            except ImportError:
                log.warning("no blur hold (the tracker package edgefirst-tracker is not installed): a face the "
                            "detector misses on a frame is not blurred on that frame")  # fmt: skip
        return cls(zones or (), hold=hold)

    def black_out(self, frame: Frame) -> Frame:
        """The frame with its privacy zones painted black (the frame itself when there is none)."""
        if not self.zones:
            return frame
        return dataclasses.replace(frame, image=black_out(frame.image, self.zones))

    def held(self, candidates: Faces, timestamp: float | None) -> np.ndarray:
        """The boxes to blur on a frame beyond its ``candidates`` (:class:`BlurHold`): where a face was a
        moment ago and the detector lost it; (0, 4) without a hold. ``timestamp``: the frame's time in its
        source (None: now)."""
        if self.hold is None:
            return np.zeros((0, 4))
        return self.hold.update(candidates, time.monotonic() if timestamp is None else timestamp)


# --------------------------------------------------------------------------------------------------------
# measured on videos made from still images


def video_from_image(
    image: np.ndarray, boxes: np.ndarray, frames: int, *, seed: int = 0, quality: int = 75
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``frames`` frames of a camera looking at a still scene: the image shaken by a slow random walk (steps
    of 1 px standard deviation, at most 8 px from the start), sensor noise (standard deviation 3) and JPEG
    compression at ``quality`` (as an IP camera sends them), each with the annotated ``boxes`` moved by the
    shake. Enough for a detector's scores to flicker from frame to frame, as they do in real video."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    dx = dy = 0.0
    for _ in range(frames):
        dx = float(np.clip(dx + rng.normal(0.0, 1.0), -8.0, 8.0))
        dy = float(np.clip(dy + rng.normal(0.0, 1.0), -8.0, 8.0))
        shake = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float32)
        moved = cv2.warpAffine(image, shake, (w, h), borderMode=cv2.BORDER_REPLICATE)
        noisy = np.clip(moved + rng.normal(0.0, 3.0, moved.shape), 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        frame = noisy if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        shift = np.array([dx, dy, dx, dy])
        yield frame, np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + shift


def evaluate_privacy_video(
    detector: MaskDetector,
    data: str | os.PathLike[str],
    *,
    frames: int = 20,
    fps: float = 10.0,
    hold: float = BLUR_HOLD_S,
    images: ImageSubset | Collection[str] | None = None,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Privacy coverage on videos made from a VOC folder's images (:func:`video_from_image`: each image held
    for ``frames`` frames at ``fps``): every frame through the live path's privacy steps (the detector's
    candidates, the blur hold, :func:`~maskwatch.detection.privacy.blur_regions`), each annotated face of
    each frame scored as hidden when at least :data:`~maskwatch.detection.evaluation.PRIVACY_COVER` of its
    box is blurred. Returns ``privacy_coverage`` (size bucket -> share of face-frames hidden, the keys of
    ``recall``), ``never_exposed`` (share of faces hidden on every frame of their video),
    ``blurred_area_share`` and the settings."""
    from maskwatch.data.images import BadImageError, decode_rgb
    from maskwatch.data.voc import parse_voc, voc_image_for
    from maskwatch.detection.evaluation import PRIVACY_COVER, SIZE_BUCKETS, _subset, face_coverage

    root = Path(data)
    subset = _subset(images)
    xmls = sorted((root / "annotations").glob("*.xml"))
    if subset is not None:
        xmls = [xml for xml in xmls if xml.stem in subset.stems]
    if limit:
        xmls = xmls[:limit]
    if not xmls:
        raise ValueError(f"{root}: no VOC annotations to make videos from")
    hit = dict.fromkeys(SIZE_BUCKETS, 0)
    total = dict.fromkeys(SIZE_BUCKETS, 0)
    never = dict.fromkeys(SIZE_BUCKETS, 0)
    faces = dict.fromkeys(SIZE_BUCKETS, 0)
    blurred = pixels = n_frames = 0
    seconds = 0.0
    skipped: list[dict[str, str]] = []
    for done, xml in enumerate(xmls, start=1):
        try:
            annotation = parse_voc(xml)
            path = voc_image_for(annotation, root / "images")
            if path is None:
                raise BadImageError(xml, "no image with this annotation's name")
            rgb = decode_rgb(path)
        except (BadImageError, ValueError, OSError, SyntaxError) as exc:
            skipped.append({"path": str(xml), "reason": str(exc)})
            continue
        gt = np.array([o.box for o in annotation.objects], dtype=np.float64).reshape(-1, 4)
        sizes = np.maximum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1])
        privacy = SourcePrivacy(hold=BlurHold(hold))
        hidden_always = np.ones(len(gt), dtype=bool)
        for index, (image, boxes) in enumerate(video_from_image(rgb, gt, frames, seed=done)):
            start = time.perf_counter()
            candidates = detector.find_faces(image)
            held = privacy.held(candidates, index / fps)
            result = FrameResult(candidates, width=image.shape[1], height=image.shape[0], held_boxes=held)
            seconds += time.perf_counter() - start
            mask = blur_mask(blur_regions(result), result.width, result.height)
            hidden = face_coverage(mask, boxes) >= PRIVACY_COVER
            hidden_always &= hidden
            blurred += int(mask.sum())
            pixels += mask.size
            n_frames += 1
            for name, (lo, hi) in SIZE_BUCKETS.items():
                in_bucket = (sizes >= lo) & (sizes < hi)
                total[name] += int(in_bucket.sum())
                hit[name] += int((in_bucket & hidden).sum())
        for name, (lo, hi) in SIZE_BUCKETS.items():
            in_bucket = (sizes >= lo) & (sizes < hi)
            faces[name] += int(in_bucket.sum())
            never[name] += int((in_bucket & hidden_always).sum())
        if on_progress is not None:
            on_progress(done, len(xmls))
    if not n_frames:
        raise ValueError(f"{root}: none of the {len(xmls)} annotated images could be read")
    return {
        "privacy_coverage": {k: hit[k] / total[k] if total[k] else None for k in SIZE_BUCKETS},
        "never_exposed": {k: never[k] / faces[k] if faces[k] else None for k in SIZE_BUCKETS},
        "blurred_area_share": blurred / pixels,
        "n_face_frames_by_bucket": total,
        "n_faces_by_bucket": faces,
        "n_videos": len(xmls) - len(skipped),
        "n_frames": n_frames,
        "frames_per_video": frames,
        "fps": fps,
        "hold_s": hold,
        "made_by": "each image shaken by a slow random walk (1 px steps, at most 8 px), noise (sd 3) and JPEG "
        "quality 75 per frame (maskwatch.stream.privacy.video_from_image)",
        "frames_per_second": n_frames / seconds if seconds > 0 else None,
        "skipped": skipped,
    }
