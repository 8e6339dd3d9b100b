"""Where a CAM puts its mass: upper face, lower face (nose and mouth, where a mask sits) or outside the face.

A face crop is the face box plus a margin (``crop_margin`` of the box on each side, clipped at the image
border), squashed to the model's square input. :func:`face_region_in_crop` gives the face box inside such a
crop in relative coordinates; :func:`cam_mass_shares` splits a map's total mass into the three parts. A
mask classifier that looks at the mask puts most of its mass on the lower face; one that puts it outside
the face has learnt something about the background or the photo source instead.

The shares are computed on the maps a user sees (ReLU, min-max scaled per image); a map with no mass at
all has undefined shares (NaN) and is left out of the summaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FULL_FRAME = (0.0, 0.0, 1.0, 1.0)
PARTS = ("lower_face", "upper_face", "outside")


def face_region_in_crop(
    crop_box: Sequence[float] | None, margin: float, image_size: tuple[int, int] | None
) -> tuple[float, float, float, float]:
    """The face box inside a crop, as (x0, y0, x1, y1) fractions of the crop's width and height.

    ``crop_box`` is the sample's box (face box grown by ``margin`` per side, before clipping);
    ``image_size`` is (width, height) of the full image. Without a box the whole frame is the face.
    """
    if crop_box is None or image_size is None:
        return FULL_FRAME
    left, top, right, bottom = (float(v) for v in crop_box)
    width, height = image_size
    scale = 1.0 + 2.0 * margin
    face_w, face_h = (right - left) / scale, (bottom - top) / scale
    face = (left + margin * face_w, top + margin * face_h, right - margin * face_w, bottom - margin * face_h)
    cx0, cy0, cx1, cy1 = max(0.0, left), max(0.0, top), min(float(width), right), min(float(height), bottom)
    cw, ch = max(cx1 - cx0, 1e-9), max(cy1 - cy0, 1e-9)
    rel = ((face[0] - cx0) / cw, (face[1] - cy0) / ch, (face[2] - cx0) / cw, (face[3] - cy0) / ch)
    return tuple(float(np.clip(v, 0.0, 1.0)) for v in rel)  # type: ignore[return-value]


def _span(lo: float, hi: float, n: int) -> slice:
    """Pixel indices whose centres fall in [lo, hi) of a length-n axis."""
    return slice(int(np.ceil(lo * n - 0.5)), int(np.ceil(hi * n - 0.5)))


def cam_mass_shares(cam: np.ndarray, face: Sequence[float] = FULL_FRAME) -> dict[str, float]:
    """Fractions of ``cam``'s total mass on the lower half of the face, the upper half, and outside it."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    height, width = cam.shape
    total = cam.sum()
    if not np.isfinite(total) or total <= 0:
        return {part: float("nan") for part in PARTS}
    x0, y0, x1, y1 = face
    mid = (y0 + y1) / 2.0
    cols = _span(x0, x1, width)
    upper = cam[_span(y0, mid, height), cols].sum()
    lower = cam[_span(mid, y1, height), cols].sum()
    return {
        "lower_face": float(lower / total),
        "upper_face": float(upper / total),
        "outside": float(max(0.0, total - lower - upper) / total),
    }


def mass_table(cams: np.ndarray, faces: Sequence[Sequence[float]] | None = None) -> dict[str, np.ndarray]:
    """:func:`cam_mass_shares` for a stack of maps: one array per part."""
    faces = faces if faces is not None else [FULL_FRAME] * len(cams)
    rows = [cam_mass_shares(cam, face) for cam, face in zip(cams, faces)]
    return {part: np.array([r[part] for r in rows], dtype=np.float64) for part in PARTS}


def summarize_by_class(table: dict[str, np.ndarray], labels: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    """Per class: images used, mean and median of each part's share, and the fraction of images whose
    lower face holds more than half of the mass."""
    labels = np.asarray(labels)
    summary: dict[str, dict] = {}
    for index, name in enumerate(classes):
        mine = labels == index
        lower = table["lower_face"][mine]
        ok = np.isfinite(lower)
        entry: dict = {"n": int(ok.sum()), "undefined": int((~ok).sum())}
        for part in PARTS:
            values = table[part][mine][ok]
            entry[f"{part}_mean"] = float(values.mean()) if values.size else float("nan")
            entry[f"{part}_median"] = float(np.median(values)) if values.size else float("nan")
        entry["lower_majority"] = float((lower[ok] > 0.5).mean()) if ok.any() else float("nan")
        summary[name] = entry
    return summary
