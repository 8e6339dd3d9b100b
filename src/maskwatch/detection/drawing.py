"""Annotated images: a box per face coloured by class, a compact label, a counts banner and a colour legend.

Labels are laid out so that they stay inside the image and never cover one another (crowds of small faces):
each takes the first free spot above, below or inside its box, with text sized to the face, and falls back
to the percentage alone (the colour and the legend tell the class).

Colours (RGB): mask green, no mask red, mask worn incorrectly orange, any other class grey. A tracked face
shows its track's verdict and id (``#7``), so the colour does not flicker with single-frame misreads.
Drawing uses OpenCV only (torch-free) and never modifies the input array.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from maskwatch.core.faces import FaceView
from maskwatch.detection.results import FrameResult

__all__ = ["CLASS_COLORS", "LabelPlacement", "class_color", "draw_result", "label_layout", "short_label"]

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


def _face_caption(face: FaceView) -> tuple[str, str]:
    """The class a face is shown as (its track's verdict when tracked) and its caption."""
    track_label, track_p = face.track_label, face.track_probability
    label, p = (
        (track_label, track_p) if track_label is not None and track_p is not None else (face.label, face.probability)
    )
    caption = "face" if label is None or p is None else f"{short_label(label)} {100 * p:.0f}%"
    if face.track_id is not None:
        caption += f" #{face.track_id}"
    return label or "face", caption


def _banner(result: FrameResult, extra: Mapping[str, int] | None) -> str:
    parts = [f"{short_label(name)}: {count}" for name, count in result.counts.items()]
    rate = result.compliance
    parts.append("compliance: -" if rate is None else f"compliance: {100 * rate:.0f}%")
    if extra:
        parts.extend(f"{k}: {v}" for k, v in extra.items())
    return "  ".join(parts)


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), in pixels


@dataclass(frozen=True)
class LabelPlacement:
    """Where and how one face's label is drawn (``rect`` None: no free spot, the box colour alone tells)."""

    caption: str
    color: tuple[int, int, int]
    rect: Rect | None
    scale: float
    thickness: int


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_rect(caption: str, scale: float, thickness: int) -> tuple[int, int, int]:
    tw, th, base = _text_size(caption, scale, thickness)
    return tw + 3, th + base + 2, base


def _candidates(box: Rect, w: int, h: int, width: int, height: int) -> list[Rect]:
    """Spots for a ``w`` x ``h`` label around ``box``: above, below, inside top, inside bottom (left- then
    right-aligned), each moved inside the image."""
    x0, y0, x1, y1 = box
    spots = []
    for left in (x0, x1 - w):
        for top in (y0 - h, y1 + 1, y0 + 1, y1 - h):
            lx = min(max(0, left), width - w)
            ly = min(max(0, top), height - h)
            spots.append((lx, ly, lx + w, ly + h))
    return spots


def label_layout(
    result: FrameResult, width: int, height: int, *, reserved: list[Rect] | None = None
) -> list[LabelPlacement]:
    """Label of each face of ``result`` (in order): compact (``mask 97%``, just ``97%`` when room is short),
    sized to the face (smaller text for small faces), inside the image, and never over another label or a
    ``reserved`` area (banner, legend). Each label takes the first free spot of :func:`_candidates`, trying
    the full caption, then smaller text, then the percentage alone; larger faces are placed first."""
    unit = max(height, width) / 640.0
    base_scale = max(0.35, 0.45 * unit)
    thickness = max(1, round(unit))
    taken: list[Rect] = list(reserved or [])
    placements: list[LabelPlacement | None] = [None] * len(result.faces)

    def area(i: int) -> float:
        x0, y0, x1, y1 = result.faces[i].box
        return (x1 - x0) * (y1 - y0)

    order = sorted(range(len(result.faces)), key=area, reverse=True)
    for i in order:
        face = result.faces[i]
        label, caption = _face_caption(face)
        percent = caption.split(" #")[0].split()[-1]
        box = tuple(round(v) for v in face.box)
        face_h = max(1, box[3] - box[1])
        scale = float(np.clip(face_h / 45.0, 0.3, base_scale))
        chosen: LabelPlacement | None = None
        for text in dict.fromkeys((caption, percent)):
            for s in dict.fromkeys((scale, max(0.3, scale * 0.8), 0.3)):
                w, h, _ = _label_rect(text, s, thickness)
                if w > width or h > height:
                    continue
                for spot in _candidates(box, w, h, width, height):  # type: ignore[arg-type]
                    if not any(_overlaps(spot, other) for other in taken):
                        chosen = LabelPlacement(text, class_color(label), spot, s, thickness)
                        break
                if chosen:
                    break
            if chosen:
                break
        if chosen is None:
            chosen = LabelPlacement(caption, class_color(label), None, scale, thickness)
        else:
            assert chosen.rect is not None
            taken.append(chosen.rect)
        placements[i] = chosen
    return [p for p in placements if p is not None]


def _legend_entries(result: FrameResult) -> list[tuple[str, tuple[int, int, int]]]:
    names = list(dict.fromkeys([*result.classes, *(n for n in result.faces.label_names if n is not None)]))
    return [(short_label(name), class_color(name)) for name in names]


def _legend_rect(result: FrameResult, width: int, height: int, scale: float, thickness: int) -> Rect | None:
    entries = _legend_entries(result)
    if not entries:
        return None
    _, th, base = _text_size("Ag", scale, thickness)
    swatch = th
    total = sum(swatch + 4 + _text_size(text, scale, thickness)[0] + 8 for text, _ in entries) + 4
    h = th + base + 6
    w = min(width, total)
    return (0, max(0, height - h), w, height)


def _draw_legend(out: np.ndarray, result: FrameResult, rect: Rect, scale: float, thickness: int) -> None:
    x0, y0, x1, y1 = rect
    out[y0:y1, x0:x1] = (out[y0:y1, x0:x1] * 0.45).astype(np.uint8)
    th = _text_size("Ag", scale, thickness)[1]
    x = x0 + 4
    for text, color in _legend_entries(result):
        if x >= x1:
            break
        top = y0 + 3
        cv2.rectangle(out, (x, top), (x + th, top + th), color, -1)
        x += th + 4
        cv2.putText(out, text, (x, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        x += _text_size(text, scale, thickness)[0] + 8


def draw_result(
    image_rgb: np.ndarray,
    result: FrameResult,
    *,
    banner: bool = True,
    banner_extra: Mapping[str, int] | None = None,
) -> np.ndarray:
    """A copy of the RGB image with the faces of ``result`` drawn on it: a box per face in its class colour,
    a compact label that stays inside the image and off the other labels (:func:`label_layout`), a counts
    banner on top and a legend of the colours at the bottom (both with ``banner``)."""
    out = np.ascontiguousarray(image_rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    unit = max(h, w) / 640.0
    thickness = max(1, round(2 * unit))
    text_thickness = max(1, round(unit))
    reserved: list[Rect] = []
    banner_text = ""
    legend = None
    small_scale = max(0.3, 0.4 * unit)
    if banner:
        banner_text = _banner(result, banner_extra)
        scale = max(0.4, 0.5 * unit)
        tw, th, base = _text_size(banner_text, scale, text_thickness)
        pad = max(2, round(4 * unit))
        bw, bh = min(w, tw + 2 * pad), min(h, th + base + 2 * pad)
        reserved.append((0, 0, bw, bh))
        legend = _legend_rect(result, w, h, small_scale, text_thickness)
        if legend is not None:
            reserved.append(legend)
    for face in result.faces:
        x0, y0, x1, y1 = (round(v) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), class_color(_face_caption(face)[0]), thickness, cv2.LINE_AA)
    for placement in label_layout(result, w, h, reserved=reserved):
        if placement.rect is None:
            continue
        lx0, ly0, lx1, ly1 = placement.rect
        cv2.rectangle(out, (lx0, ly0), (lx1 - 1, ly1 - 1), placement.color, -1)
        _, _, base = _text_size(placement.caption, placement.scale, placement.thickness)
        cv2.putText(out, placement.caption, (lx0 + 1, ly1 - base - 1), cv2.FONT_HERSHEY_SIMPLEX, placement.scale,
                    (255, 255, 255), placement.thickness, cv2.LINE_AA)  # fmt: skip
    if banner:
        bx0, by0, bx1, by1 = reserved[0]
        out[by0:by1, bx0:bx1] = (out[by0:by1, bx0:bx1] * 0.45).astype(np.uint8)  # darken the banner's strip
        scale = max(0.4, 0.5 * unit)
        _, th, _ = _text_size(banner_text, scale, text_thickness)
        pad = max(2, round(4 * unit))
        cv2.putText(out, banner_text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    text_thickness, cv2.LINE_AA)  # fmt: skip
        if legend is not None:
            _draw_legend(out, result, legend, small_scale, text_thickness)
    return out
