"""Box geometry shared by training crops, the face detector, the scene pipeline, blurring and the evaluation.

One home for the arithmetic on ``(x0, y0, x1, y1)`` pixel boxes (continuous coordinates, x1/y1 exclusive),
so the crop a model is trained on and the crop it sees in deployment are cut by the same code, and a blurred
region is grown the same way wherever an image leaves the machine. numpy and the standard library only
(the leaf layer: the data loaders, the lean install and the stream engine import it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Box", "adjust_boxes", "as_box", "box_iou", "crop_box", "finish_boxes", "grow_box", "nms"]

Box = tuple[float, float, float, float]


def as_box(values: Sequence[float]) -> Box:
    """Four coordinates (any sequence or array row) as a plain ``(x0, y0, x1, y1)`` float tuple."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def grow_box(box: Sequence[float], margin: float, *, outward: bool = False) -> tuple[int, int, int, int]:
    """A face box grown by ``margin`` × its width / height on each side, in whole pixels, not clipped: the
    framing of every face crop, in training and evaluation (VOC crops) and in the scene pipeline
    (:func:`crop_box`), rounded to the nearest pixel. ``outward`` rounds the start down and the end up
    instead, so the pixels cover the grown box entirely (blurring: no sliver of a face is left)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    if outward:
        return math.floor(x0 - mx), math.floor(y0 - my), math.ceil(x1 + mx), math.ceil(y1 + my)
    return round(x0 - mx), round(y0 - my), round(x1 + mx), round(y1 + my)


def crop_box(
    box: Sequence[float], margin: float, width: int, height: int, *, outward: bool = False
) -> tuple[int, int, int, int]:
    """The crop of a face box grown by ``margin`` (:func:`grow_box`), clipped to a ``width`` × ``height``
    image and at least one pixel wide and high, so slicing never yields an empty array."""
    left, top, right, bottom = grow_box(box, margin, outward=outward)
    left, top, right, bottom = max(0, left), max(0, top), min(width, right), min(height, bottom)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first (ties keep input order)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    x0, y0, x1, y1 = boxes.T
    areas = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def adjust_boxes(boxes: np.ndarray, adjust: Sequence[float]) -> np.ndarray:
    """Reframe boxes (N, 4) by ``(dx, dy, sw, sh)``: move each centre by ``dx``·width and ``dy``·height, then
    scale the width by ``sw`` and the height by ``sh`` (maps one detector's framing onto another's)."""
    dx, dy, sw, sh = (float(v) for v in adjust)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + dx * w, (boxes[:, 1] + boxes[:, 3]) / 2 + dy * h
    return np.stack([cx - sw * w / 2, cy - sh * h / 2, cx + sw * w / 2, cy + sh * h / 2], axis=1)


def finish_boxes(
    boxes: np.ndarray, width: int, height: int, box_adjust: Sequence[float] | None, min_face: float
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the framing adjustment (:func:`adjust_boxes`), clip to the image, and mark the boxes worth
    keeping (non-empty and at least ``min_face`` on their longest side). Shared by the detector and the
    multi-view pipeline so both end with the same boxes. Returns ``(boxes, keep mask)``."""
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if box_adjust is not None:
        boxes = adjust_boxes(boxes, box_adjust)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok = (sizes >= max(min_face, 1e-6)) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, ok
