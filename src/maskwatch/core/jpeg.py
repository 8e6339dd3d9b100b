"""JPEG encoding of RGB frames: the one home (live views, snapshots, the agent's snapshot, uploads' results).

OpenCV is imported inside the function so importing this module stays light."""

from __future__ import annotations

import numpy as np

__all__ = ["JpegError", "encode_jpeg"]


class JpegError(ValueError):
    """An image could not be encoded."""


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB (or grayscale) uint8 image."""
    import cv2

    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    image = np.ascontiguousarray(rgb)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise JpegError(f"could not encode a {image.shape} image as JPEG")
    return bytes(data.tobytes())
