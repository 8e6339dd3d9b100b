"""Privacy: every face blurred, and every privacy zone blacked out, before an image is stored or streamed.

One blur (:func:`blur_faces`) and one box source (:func:`blur_regions`) for every image that leaves the
engine or the pipeline: live views (MJPEG, ``latest.jpg``), snapshots (the engine's, the service's, an edge
agent's), ``/infer``'s annotated answer and ``maskwatch detect --blur``. Both take the frame's
:class:`~maskwatch.detection.results.FrameResult`, so *what* is blurred is decided here alone. The policy is
**recall-first** (issue 19; the operating point was chosen on scenes/valid, ``benchmarks/bench_privacy.py``):

* every detector candidate is blurred, not only the faces that count: the pipeline keeps candidates down to
  :data:`BLUR_SCORE` (``MaskDetector.load(blur_threshold=...)``), far under the score a face needs to be
  counted (0.3); the ones under the counting candidates' floor are marked not ``kept`` (blurred, never
  classified or counted);
* each box is grown to the head (:data:`HEAD_GROW`: hair, ears and chin, not only the face box);
* in video, where the detector loses a face for a few frames (a turned head, motion blur, a score
  flickering around the threshold), each privacy track's predicted box is blurred for :data:`BLUR_HOLD_S`
  after it was last seen: ``FrameResult.held_boxes``, filled by :class:`maskwatch.stream.privacy.BlurHold`.

:func:`black_out` paints a camera's privacy zones (polygons in fractions of the frame) black; the engine
does it to every frame before anything else sees it. :func:`pixelate` is the drawing primitive beneath the
blur, for callers that hide a region that is not a face (a whole stored image); :func:`blur_mask` says which
pixels the blur covers (the evaluation's privacy coverage measures exactly what is blurred).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.core.geometry import crop_box

if TYPE_CHECKING:
    from maskwatch.detection.results import FrameResult

__all__ = [
    "BLUR_HOLD_S",
    "BLUR_SCORE",
    "HEAD_GROW",
    "black_out",
    "blur_faces",
    "blur_mask",
    "blur_rects",
    "blur_regions",
    "head_boxes",
    "pixelate",
    "zone_polygons",
]

# The operating point, chosen on scenes/train and valid with the live (``fast``) preset by the rule in
# ``benchmarks/bench_privacy.py`` (the least blurred area among the settings meeting the coverage targets with
# a margin on still images and on videos made from them); BENCHMARKS.md has the figures and says how often
# scenes/test was read.
BLUR_SCORE = 0.045  # detector candidates scoring at least this are blurred (faces count from 0.3)
# each blurred box grows by these fractions of its width (sides) and height (top, bottom): the annotated and
# detected face boxes run from the brows to the chin; the head reaches about half a face higher (hair), and
# half as much again on every side covers a detected box that sits off the face (x1.5 of a quarter, a half
# and 15 %: the rule's choice)
HEAD_GROW = (0.375, 0.75, 0.225)
BLUR_HOLD_S = 1.0  # a lost privacy track's predicted box stays blurred this long (video)


def head_boxes(boxes: np.ndarray, grow: Sequence[float] = HEAD_GROW) -> np.ndarray:
    """Face boxes (N, 4) grown to cover the head: ``grow`` = (sides, top, bottom) fractions of each box's
    width / height (not clipped)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    side, top, bottom = (float(v) for v in grow)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    x0, y0, x1, y1 = boxes.T
    return np.stack([x0 - side * w, y0 - top * h, x1 + side * w, y1 + bottom * h], axis=1)


def blur_regions(frame: FrameResult | Faces) -> np.ndarray:
    """The boxes (N, 4) to blur in a frame: the box source of every blurred image. Every detector candidate
    (kept or not) and, for a :class:`~maskwatch.detection.results.FrameResult` of a video frame, every held
    box (a lost privacy track's predicted box), each grown to the head (:func:`head_boxes`). Pass the
    frame's result; bare :class:`~maskwatch.core.faces.Faces` (no held boxes) only for a still image."""
    if isinstance(frame, Faces):
        return head_boxes(frame.boxes)
    boxes = frame.candidates.boxes
    if len(frame.held_boxes):
        boxes = np.concatenate([boxes, frame.held_boxes])
    return head_boxes(boxes)


def blur_faces(
    image_rgb: np.ndarray,
    frame: FrameResult | Faces,
    *,
    origin: tuple[float, float] = (0.0, 0.0),
    blocks: int = 6,
) -> np.ndarray:
    """A copy of the image with every region of :func:`blur_regions` pixelated (:func:`pixelate`): the one
    blur of every image that leaves maskwatch. ``origin``: where ``image_rgb`` sits in the frame the faces
    were found in (a cut-out, e.g. a snapshot around one person: the boxes are moved by it)."""
    boxes = blur_regions(frame)
    x, y = origin
    if origin != (0.0, 0.0):
        boxes = boxes - np.array([x, y, x, y])
    out = pixelate(image_rgb, boxes, blocks=blocks)
    if not isinstance(frame, Faces) and frame.privacy_zones:
        # black before the blur; black again after it (a blurred head must not smear into a zone)
        shift = np.array([round(x), round(y)], dtype=np.int32)
        polygons = zone_polygons(frame.privacy_zones, frame.width, frame.height)
        cv2.fillPoly(out, [p - shift for p in polygons], (0, 0, 0))
    return out


def blur_rects(
    boxes: Iterable[Sequence[float]] | np.ndarray, width: int, height: int, *, grow: float = 0.0
) -> list[tuple[int, int, int, int]]:
    """The whole-pixel rectangles (left, top, right, bottom) :func:`pixelate` covers for these boxes: each
    grown by ``grow``, rounded outwards (no sliver of a face is left), clipped to the image; rectangles
    under 2 pixels wide or high are left out (nothing to pixelate)."""
    rects = []
    for box in boxes:
        a, b, c, d = crop_box(box[:4], grow, width, height, outward=True)
        if c - a >= 2 and d - b >= 2:
            rects.append((a, b, c, d))
    return rects


def blur_mask(boxes: Iterable[Sequence[float]] | np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width) bool: the pixels :func:`pixelate` changes for these boxes."""
    mask = np.zeros((height, width), dtype=bool)
    for a, b, c, d in blur_rects(boxes, width, height):
        mask[b:d, a:c] = True
    return mask


def pixelate(
    image_rgb: np.ndarray, boxes: Iterable[Sequence[float]] | np.ndarray, *, grow: float = 0.0, blocks: int = 6
) -> np.ndarray:
    """A copy of the image with each box (x0, y0, x1, y1), grown by ``grow`` of its size on each side,
    pixelated to about ``blocks`` x ``blocks`` cells and then smoothed: no identity survives, the scene
    stays readable. Boxes reaching outside the image are clipped to it (:func:`blur_rects`)."""
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    for a, b, c, d in blur_rects(boxes, w, h, grow=grow):
        region = out[b:d, a:c]
        small = cv2.resize(
            region, (max(1, min(blocks, c - a)), max(1, min(blocks, d - b))), interpolation=cv2.INTER_AREA
        )
        coarse = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_LINEAR)
        k = max(3, (min(c - a, d - b) // 4) | 1)
        out[b:d, a:c] = cv2.GaussianBlur(coarse, (k, k), 0)
    return out


def zone_polygons(zones: Sequence[Sequence[Sequence[float]]], width: int, height: int) -> list[np.ndarray]:
    """Privacy zones (polygons of (x, y) in fractions of the frame's width and height, 0..1) in pixels of a
    ``width`` x ``height`` frame, as OpenCV's int32 point arrays."""
    scale = np.array([width, height], dtype=np.float64)
    return [np.round(np.asarray(zone, dtype=np.float64).reshape(-1, 2) * scale).astype(np.int32) for zone in zones]


def black_out(image_rgb: np.ndarray, zones: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """A copy of the image with every privacy zone painted black (the image itself when there is none).
    Zones are polygons of (x, y) in fractions of the frame (0..1), so they survive a change of resolution."""
    if not zones:
        return image_rgb
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    cv2.fillPoly(out, zone_polygons(zones, w, h), (0, 0, 0), lineType=cv2.LINE_8)
    return out
