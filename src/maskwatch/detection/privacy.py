"""Privacy: blur every face before an image is stored or streamed (the service's default).

One blur (:func:`blur_faces`) and one box source (:func:`blur_regions`), for every image that leaves the
engine: live views, snapshots (the engine's, the service's, an edge agent's), uploads' annotated answers.
Both take a frame's :class:`~maskwatch.core.faces.Faces` as the pipeline returns them, *all* candidates
(``FrameResult.candidates``), so which faces are blurred is decided in :func:`blur_regions` alone: today the
faces that count (``kept``); a recall-first policy (every candidate, grown to the head, and a lost track's
predicted box) changes that one function. :func:`pixelate` is the drawing primitive beneath, for callers
that hide a region that is not a face (a whole stored image).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.core.geometry import crop_box

__all__ = ["BLUR_GROW", "blur_faces", "blur_regions", "pixelate"]

BLUR_GROW = 0.2  # each blurred face box grows by this fraction of its size on each side (hair, ears, chin)


def blur_regions(faces: Faces) -> np.ndarray:
    """The boxes (N, 4) to blur in an image whose detector candidates are ``faces``: the box source of
    every blurred image. Today: the faces that count (``kept``)."""
    return faces.boxes[faces.kept]


def blur_faces(
    image_rgb: np.ndarray,
    faces: Faces,
    *,
    origin: tuple[float, float] = (0.0, 0.0),
    grow: float = BLUR_GROW,
    blocks: int = 6,
) -> np.ndarray:
    """A copy of the image with every face of :func:`blur_regions` pixelated (:func:`pixelate`).
    ``origin``: where ``image_rgb`` sits in the frame the faces were found in (a cut-out, e.g. a snapshot
    around one person: the faces' boxes are moved by it)."""
    boxes = blur_regions(faces)
    if origin != (0.0, 0.0):
        x, y = origin
        boxes = boxes - np.array([x, y, x, y])
    return pixelate(image_rgb, boxes, grow=grow, blocks=blocks)


def pixelate(
    image_rgb: np.ndarray, boxes: Iterable[Sequence[float]] | np.ndarray, *, grow: float = BLUR_GROW, blocks: int = 6
) -> np.ndarray:
    """A copy of the image with each box (x0, y0, x1, y1), grown by ``grow`` of its size on each side,
    pixelated to about ``blocks`` x ``blocks`` cells and then smoothed: no identity survives, the scene
    stays readable. Boxes reaching outside the image are clipped to it."""
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    for box in boxes:
        a, b, c, d = crop_box(box[:4], grow, w, h, outward=True)
        if c - a < 2 or d - b < 2:
            continue
        region = out[b:d, a:c]
        small = cv2.resize(
            region, (max(1, min(blocks, c - a)), max(1, min(blocks, d - b))), interpolation=cv2.INTER_AREA
        )
        coarse = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_LINEAR)
        k = max(3, (min(c - a, d - b) // 4) | 1)
        out[b:d, a:c] = cv2.GaussianBlur(coarse, (k, k), 0)
    return out
