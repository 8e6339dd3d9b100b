"""Privacy: blur every face before an image is stored or streamed (the service's default)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from maskwatch.core.geometry import crop_box

__all__ = ["blur_faces"]


def blur_faces(
    image_rgb: np.ndarray, boxes: Iterable[Sequence[float]], *, grow: float = 0.2, blocks: int = 6
) -> np.ndarray:
    """A copy of the image with each box (x0, y0, x1, y1), grown by ``grow`` of its size on each side,
    pixelated to about ``blocks`` x ``blocks`` cells and then smoothed: no identity survives, the scene
    stays readable."""
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
