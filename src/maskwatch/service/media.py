"""Images the service keeps or serves: snapshots of people (stored by the engine's snapshot sink, served,
deleted by retention) and rendered views of analysed frames (live JPEG and MJPEG, ``/infer``'s annotated
image). Every face is blurred unless an admin turned blurring off (``privacy.blur_faces``); one encoder,
:func:`maskwatch.core.jpeg.encode_jpeg`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from maskwatch.core.jpeg import JpegError, encode_jpeg
from maskwatch.core.timeutil import day_stamp

if TYPE_CHECKING:
    from maskwatch.detection.results import FrameResult
    from maskwatch.service.settings import PrivacySettings

__all__ = ["UNBLURRED_SUFFIX", "Media", "Snapshot", "pixelate_whole", "render_jpeg"]

log = logging.getLogger("maskwatch.service")

UNBLURRED_SUFFIX = ".unblurred.jpg"  # a snapshot stored while an admin had blurring off


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot's bytes; ``unblurred``: stored while blurring was off (served whole to admins only)."""

    data: bytes
    unblurred: bool


def render_jpeg(
    image_rgb: np.ndarray,
    result: FrameResult | None,
    *,
    blur: bool = True,
    annotate: bool = True,
    quality: int = 80,
    max_side: int | None = 960,
) -> bytes:
    """The frame with every face blurred (unless ``blur`` is False; :func:`maskwatch.detection.privacy.blur_faces`
    of the frame's result, before anything is drawn or encoded) and the detections drawn, as JPEG. The
    frame's privacy zones were blacked out by the engine before it was analysed."""
    import cv2

    from maskwatch.detection.drawing import draw_result
    from maskwatch.detection.privacy import blur_faces

    image = image_rgb
    if blur and result is not None:
        image = blur_faces(image, result)  # the one blur: every candidate and held box, grown to the head
    if annotate and result is not None:
        image = draw_result(image, result)
    if max_side and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return encode_jpeg(image, quality)


class Media:
    """Snapshots under ``root`` (``DATA_DIR/snapshots/CAMERA/DAY/ID.jpg``) and the blurring policy.

    ``privacy`` is read live: an admin turning blurring back on takes effect at once for what is served.
    Whether a *stored* snapshot is blurred is fixed at construction (the engine blurs before the sink)."""

    def __init__(self, root: Path, privacy: PrivacySettings) -> None:
        self.root = root
        self.privacy = privacy
        self.stored_blurred = privacy.blur_faces

    # -- policy ------------------------------------------------------------------------------------------

    def must_blur(self, *, admin: bool) -> bool:
        """Faces are blurred unless blurring is off and an admin is looking (each such view is audited)."""
        return self.privacy.blur_faces or not admin

    # -- snapshots ---------------------------------------------------------------------------------------

    def store(self, source: str, track_id: int, rgb: np.ndarray) -> str | None:
        """The engine's snapshot sink: a person's best view (faces already blurred unless an admin turned
        blurring off) as a JPEG; returns its path relative to ``root`` (kept in the event), None when it
        could not be written."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in source)[:64] or "camera"
        name = f"{uuid.uuid4().hex}{'.jpg' if self.stored_blurred else UNBLURRED_SUFFIX}"
        rel = Path(safe) / day_stamp() / name
        try:
            data = encode_jpeg(rgb, 85)
        except JpegError:
            log.warning("snapshot of %s track %d not encoded", source, track_id)
            return None
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel.as_posix()

    def _path(self, ref: str) -> Path | None:
        """The file of a reference, when it lies inside ``root`` (never outside, whatever the reference)."""
        root = self.root.resolve()
        path = (root / ref).resolve()
        return path if path.is_relative_to(root) else None

    def delete(self, refs: list[str]) -> int:
        """Remove snapshot files; returns how many existed."""
        n = 0
        for ref in refs:
            path = self._path(ref)
            if path is not None and path.is_file():
                path.unlink(missing_ok=True)
                n += 1
        return n

    def read(self, ref: str) -> Snapshot | None:
        """A stored snapshot, or None when its file is gone (retention) or the reference points outside."""
        path = self._path(ref)
        if path is None or not path.is_file():
            return None
        return Snapshot(path.read_bytes(), path.name.endswith(UNBLURRED_SUFFIX))


def pixelate_whole(jpeg: bytes) -> bytes | None:
    """The image blurred whole (an unblurred snapshot shown to someone who may not see faces); None when the
    bytes are not an image."""
    from maskwatch.data.images import BadImageError, decode_rgb
    from maskwatch.detection.privacy import pixelate

    try:
        image = decode_rgb(jpeg)
    except BadImageError:
        return None
    h, w = image.shape[:2]
    return encode_jpeg(pixelate(image, [(0.0, 0.0, float(w), float(h))]), 90)
