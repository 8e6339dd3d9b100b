"""Annotated images: a box per face coloured by class, its label and percentage, and a counts banner.

Colours (RGB): mask green, no mask red, mask worn incorrectly orange, any other class grey. A tracked face
shows its track's verdict and id (``#7``), so the colour does not flicker with single-frame misreads.
Drawing uses OpenCV only (torch-free) and never modifies the input array.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from maskwatch.detection.results import FaceResult, FrameResult

__all__ = ["CLASS_COLORS", "class_color", "draw_result", "short_label"]

CLASS_COLORS: dict[str, tuple[int, int, int]] = {  # RGB
    "with_mask": (40, 190, 70),
    "mask": (40, 190, 70),
    "without_mask": (230, 40, 40),
    "no_mask": (230, 40, 40),
    "mask_weared_incorrect": (250, 150, 20),
    "mask_worn_incorrectly": (250, 150, 20),
    "incorrect_mask": (250, 150, 20),
}
OTHER_COLOR = (150, 150, 150)

SHORT_LABELS = {
    "with_mask": "mask",
    "without_mask": "no mask",
    "no_mask": "no mask",
    "mask_weared_incorrect": "incorrect",
    "mask_worn_incorrectly": "incorrect",
    "incorrect_mask": "incorrect",
}


def class_color(label: str) -> tuple[int, int, int]:
    """RGB colour of a class; names mentioning 'incorrect' are orange, unknown classes grey."""
    if label in CLASS_COLORS:
        return CLASS_COLORS[label]
    return CLASS_COLORS["mask_weared_incorrect"] if "incorrect" in label.lower() else OTHER_COLOR


def short_label(label: str) -> str:
    return SHORT_LABELS.get(label, label.replace("_", " "))


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    return w, h, baseline


def _face_caption(face: FaceResult) -> tuple[str, str]:
    if face.track_label is not None and face.track_probability is not None:
        label, p = face.track_label, face.track_probability
    else:
        label, p = face.label, face.probability
    caption = f"{short_label(label)} {100 * p:.0f}%"
    if face.track_id is not None:
        caption += f" #{face.track_id}"
    return label, caption


def _banner(result: FrameResult, extra: Mapping[str, int] | None) -> str:
    parts = [f"{short_label(name)}: {count}" for name, count in result.counts.items()]
    rate = result.compliance
    parts.append("compliance: -" if rate is None else f"compliance: {100 * rate:.0f}%")
    if extra:
        parts.extend(f"{k}: {v}" for k, v in extra.items())
    return "  ".join(parts)


def draw_result(
    image_rgb: np.ndarray,
    result: FrameResult,
    *,
    banner: bool = True,
    banner_extra: Mapping[str, int] | None = None,
) -> np.ndarray:
    """A copy of the RGB image with the faces of ``result`` drawn on it (and a counts banner on top)."""
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    unit = max(h, w) / 640.0
    thickness = max(1, round(2 * unit))
    font_scale = max(0.35, 0.45 * unit)
    text_thickness = max(1, round(unit))
    for face in result.faces:
        label, caption = _face_caption(face)
        color = class_color(label)
        x0, y0, x1, y1 = (round(v) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
        tw, th, base = _text_size(caption, font_scale, text_thickness)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 2, ty + 1), color, -1)
        cv2.putText(out, caption, (x0 + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    text_thickness, cv2.LINE_AA)  # fmt: skip
    if banner:
        text = _banner(result, banner_extra)
        scale = max(0.4, 0.5 * unit)
        tw, th, base = _text_size(text, scale, text_thickness)
        pad = max(2, round(4 * unit))
        bw, bh = min(w, tw + 2 * pad), min(h, th + base + 2 * pad)
        out[:bh, :bw] = (out[:bh, :bw] * 0.45).astype(np.uint8)  # darken the banner's strip
        cv2.putText(out, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), text_thickness,
                    cv2.LINE_AA)  # fmt: skip
    return out
