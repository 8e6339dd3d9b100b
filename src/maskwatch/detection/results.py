"""What the scene pipeline returns for one image or video frame, and totals over many (nothing heavy
imported).

A :class:`FrameResult` holds the frame's :class:`~maskwatch.core.faces.Faces`: every candidate the
detector returned, with ``kept`` marking the faces that count (past the score and confidence gates). Its
``faces`` are those kept; counts and compliance are over them; privacy blurs from the candidates
(:mod:`maskwatch.detection.privacy`). Which classes count as compliant is the model's to say
(``compliant_classes``, stored with the model); files that predate that field get
:func:`maskwatch.core.contract.default_compliant_classes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from maskwatch.core.contract import compliance_rate
from maskwatch.core.faces import Faces

__all__ = ["FrameResult", "summarize"]


def _r(value: float, digits: int = 4) -> float:
    return float(round(float(value), digits))


@dataclass(frozen=True, eq=False)
class FrameResult:
    """All faces of one image or video frame, with counts per class and the compliance rate.

    ``candidates``: every face the detector returned (``kept`` marks those that count);
    ``held_boxes``: (m, 4) where faces were a moment ago and the detector lost them on this frame (a video's
    privacy tracks, predicted: blurred, never counted; :class:`maskwatch.stream.privacy.BlurHold`);
    ``privacy_zones``: the source's privacy zones (polygons in fractions of the frame), black in the frame
    already and painted black again after any blur (a blurred head next to a zone must not smear into it);
    ``compliant_classes``: the classes that count as wearing a mask correctly (the model's); None means
    the default for the classes (:func:`maskwatch.core.contract.default_compliant_classes`)."""

    candidates: Faces
    width: int
    height: int
    source: str | None = None
    frame: int = 0  # frame number in a video (0 for still images)
    timestamp: float | None = None  # seconds into a video
    extra: dict[str, Any] = field(default_factory=dict)
    compliant_classes: tuple[str, ...] | None = None
    held_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    privacy_zones: list[list[tuple[float, float]]] = field(default_factory=list)

    @cached_property
    def faces(self) -> Faces:
        """The faces that count (the candidates kept), best detector score first."""
        kept = self.candidates.kept
        return self.candidates if kept.all() else self.candidates[kept]

    @property
    def classes(self) -> list[str]:
        return list(self.candidates.classes)

    @property
    def counts(self) -> dict[str, int]:
        """Faces per class (every class of the model, zeros included)."""
        return self.faces.counts()

    @property
    def compliance(self) -> float | None:
        return compliance_rate(self.counts, self.classes, self.compliant_classes)

    def to_dict(self) -> dict[str, Any]:
        compliance = self.compliance
        out: dict[str, Any] = {
            "source": self.source,
            "frame": self.frame,
            "timestamp": None if self.timestamp is None else _r(self.timestamp, 3),
            "width": self.width,
            "height": self.height,
            "n_faces": len(self.faces),
            "counts": self.counts,
            "compliance": None if compliance is None else _r(compliance),
            "faces": [face.to_dict() for face in self.faces],
        }
        out.update(self.extra)
        return out


def summarize(
    results: Iterable[FrameResult], classes: Sequence[str], compliant_classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Totals over many images or frames: faces per class and the overall compliance rate
    (``compliant_classes``: the model's; None: taken from the results, else the default)."""
    counts = dict.fromkeys(classes, 0)
    n_frames = n_faces = 0
    for result in results:
        n_frames += 1
        if compliant_classes is None and result.compliant_classes is not None:
            compliant_classes = result.compliant_classes
        for name, value in result.counts.items():
            counts[name] = counts.get(name, 0) + value
            n_faces += value
    rate = compliance_rate(counts, classes, compliant_classes)
    return {"n_frames": n_frames, "n_faces": n_faces, "counts": counts,
            "compliance": None if rate is None or math.isnan(rate) else _r(rate)}  # fmt: skip
