"""Infrared and black-and-white cameras as a first-class case: tell a grey stream from a colour one, and
give the classifier the grey faces it was trained for.

Security cameras switch to infrared at dusk: the picture turns grey (or, when the colour mode stays on without
the IR-cut filter, grey under a cast, often magenta). What marks such a frame is not a low mean chroma but
a chroma that its brightness explains: every pixel has the same hue, more or less saturated with its
brightness. :func:`chroma_spread` measures what brightness does not explain; a colour scene leaves several
levels, a grey or cast frame about none.

:class:`ColorModeDetector` follows a stream frame by frame with hysteresis (a camera switches once at dusk
and once at dawn, a single dark or grey-walled frame must not flip it). In grey mode each face crop goes
through :func:`to_gray_faces` before the classifier: the cast is removed and the crop is exactly the
grayscale view the model's training augmentation made (``grayscale_prob`` / ``infrared_prob``).

The camera setting ``color: auto | color | gray`` (``engine.camera_defaults.color`` and each camera's own,
:mod:`maskwatch.stream.config`) makes a :class:`CameraColor` per source: ``color`` never converts, ``gray``
always, ``auto`` runs :class:`ColorModeDetector` on every frame the engine analyses. The engine's one hook is
in its classify step (:meth:`maskwatch.detection.pipeline.CropBatch.add` ``gray=``); the current mode is
published as ``color_mode`` in the source's ``stats`` and ``source_status`` events. The model card measures
the three settings on grey, infrared and colour faces.

    >>> color = CameraColor("auto")                                         # doctest: +SKIP
    >>> for frame in frames:                                                # doctest: +SKIP
    ...     crops = to_gray_faces(crops) if color.observe(frame) else crops
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "COLOR_MODES",
    "GRAY_SPREAD",
    "CameraColor",
    "ColorModeDetector",
    "chroma_spread",
    "is_grayscale",
    "to_gray_faces",
]

COLOR_MODES = ("auto", "color", "gray")
#: Chroma spread (YCrCb levels, 0-255) at or below which a frame counts as grey. Chosen on the 418 shared
#: scene images and their corrupted copies (models/MODEL_CARD.md, "Infrared and grayscale cameras"): every
#: grey and infrared copy and 99.8 % of the magenta-cast infrared copies lie at or below it, 1.9 % of the
#: colour originals (some are black-and-white photos). A cast frame compressed to JPEG quality 12 keeps
#: chroma noise (only 3 % detected): set such a camera to ``gray``.
GRAY_SPREAD = 2.0
THUMBNAIL = 128  # longest side the statistic is computed on: fast, and blind to single-pixel noise


def chroma_spread(frame: np.ndarray) -> float:
    """How much a frame's colour varies beyond what its brightness explains: the Cr and Cb channels (YCrCb,
    0-255 levels) are each fitted as a straight line of the luma Y, and the mean absolute residual is returned
    (on a thumbnail). 0 for a grey frame; near 0 under a colour cast too, whether the cast adds a hue
    (an offset) or tints in proportion to brightness (a slope); a colour scene's hues do not follow its
    brightness and leave large residuals."""
    if frame.ndim == 2:
        return 0.0
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {frame.shape}")
    height, width = frame.shape[:2]
    scale = THUMBNAIL / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frame = cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA)
    ycrcb = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2YCrCb).astype(np.float64)
    pixels = ycrcb.reshape(-1, 3)
    design = np.stack([np.ones(len(pixels)), pixels[:, 0]], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, pixels[:, 1:], rcond=None)
    return float(np.abs(pixels[:, 1:] - design @ coefficients).mean())


def is_grayscale(frame: np.ndarray, threshold: float = GRAY_SPREAD) -> bool:
    """Whether one frame looks like a grey (black-and-white or infrared) picture, cast or not."""
    return chroma_spread(frame) <= threshold


@dataclass
class ColorModeDetector:
    """A stream's colour mode with hysteresis: it turns grey after ``switch_after`` grey frames in a row and
    back to colour after as many colour frames in a row (a camera switches at dusk and dawn, not per frame)."""

    switch_after: int = 5
    threshold: float = GRAY_SPREAD
    gray: bool = False
    _run: int = 0

    def update(self, frame: np.ndarray) -> bool:
        """Feed one frame; returns whether the stream is in grey mode now."""
        if is_grayscale(frame, self.threshold) != self.gray:
            self._run += 1
            if self._run >= self.switch_after:
                self.gray, self._run = not self.gray, 0
        else:
            self._run = 0
        return self.gray


class CameraColor:
    """One camera's colour mode in the engine, from its ``color`` setting: whether the faces of each analysed
    frame go to the classifier grey. ``auto`` feeds every frame to a :class:`ColorModeDetector`, so a camera
    turns grey a few frames after it switches to infrared at dusk and back after it switches at dawn."""

    def __init__(self, setting: str = "color", *, switch_after: int = 5) -> None:
        if setting not in COLOR_MODES:
            raise ValueError(f"unknown colour mode {setting!r}; choose {' | '.join(COLOR_MODES)}")
        self.setting = setting
        self.gray = setting == "gray"
        self._detector = ColorModeDetector(switch_after=switch_after) if setting == "auto" else None

    def observe(self, frame: np.ndarray) -> bool:
        """Feed one analysed frame; returns whether its faces are classified grey."""
        if self._detector is not None:
            self.gray = self._detector.update(frame)
        return self.gray

    @property
    def mode(self) -> Literal["color", "gray"]:
        """The mode the camera's faces are classified in now: ``gray`` or ``color``."""
        return "gray" if self.gray else "color"


def to_gray_faces(faces: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Face crops as the classifier's grayscale view: BT.601 luma in all three channels (a colour cast goes)."""
    from maskwatch.data.corruptions import to_grayscale

    return [to_grayscale(np.ascontiguousarray(face)) for face in faces]
