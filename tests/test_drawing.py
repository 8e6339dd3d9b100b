"""Annotated images in a crowd: labels stay inside the image and never cover one another; a colour legend."""

from __future__ import annotations

import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.detection.drawing import _legend_rect, _overlaps, class_color, draw_result, label_layout
from maskwatch.detection.results import FrameResult

CLASSES = ["with_mask", "without_mask", "mask_weared_incorrect"]


def crowd(n: int = 42, width: int = 400, height: int = 267, seed: int = 0) -> FrameResult:
    """``n`` small faces (12-26 px) packed over a ``width`` x ``height`` photo, all three classes."""
    rng = np.random.default_rng(seed)
    boxes, probabilities = [], []
    cols = 8
    for i in range(n):
        size = float(rng.integers(12, 27))
        cx = (i % cols + 0.5) * width / cols + rng.uniform(-8, 8)
        cy = (i // cols + 0.5) * height / (n // cols + 1) + rng.uniform(-6, 6)
        box = (max(0.0, cx - size / 2), max(0.0, cy - size / 2), min(width - 1.0, cx + size / 2),
               min(height - 1.0, cy + size / 2))  # fmt: skip
        p = float(rng.uniform(0.5, 1.0))
        row = np.full(3, (1 - p) / 2)
        row[i % 3] = p  # the label: CLASSES[i % 3]
        boxes.append(box)
        probabilities.append(row)
    faces = Faces(boxes, np.full(n, 0.9), classes=CLASSES, probabilities=probabilities, classified=np.ones(n, bool))
    return FrameResult(faces, width=width, height=height)


def test_crowd_labels_stay_inside_and_never_overlap():
    result = crowd()
    placements = label_layout(result, 400, 267)
    rects = [p.rect for p in placements if p.rect is not None]
    assert len(placements) == 42
    assert len(rects) >= 38  # nearly every face gets its label; the rest keep the class colour of their box
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 267
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert not _overlaps(a, b), (a, b)


def test_labels_avoid_the_banner_and_legend_and_the_image_is_drawn():
    result = crowd()
    image = np.full((267, 400, 3), 120, np.uint8)
    reserved = [(0, 0, 200, 14), _legend_rect(result, 400, 267, 0.3, 1)]
    for p in label_layout(result, 400, 267, reserved=reserved):
        if p.rect is not None:
            assert not any(_overlaps(p.rect, r) for r in reserved)
    out = draw_result(image, result)
    assert out.shape == image.shape and (image == 120).all()  # the input is left alone
    legend = out[-12:, :150].reshape(-1, 3)
    for name in CLASSES:  # each class's swatch is in the legend
        assert (np.abs(legend.astype(int) - class_color(name)).sum(1) < 10).any(), name


def test_third_class_has_its_own_colour():
    colours = {class_color(name) for name in CLASSES}
    assert len(colours) == 3
