"""What the scene pipeline returns: one face, one frame, and the compliance rate over them (nothing heavy imported).

These types are the pipeline's output and the stream engine's input, so they live apart from the detector
and import nothing heavy. Which classes count as compliant is the model's to say (``compliant_classes``,
stored with the model); files that predate that field get :func:`maskwatch.core.contract.default_compliant_classes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from maskwatch.core.contract import compliance_rate
from maskwatch.core.geometry import Box

__all__ = ["FaceResult", "FrameResult", "summarize"]


def _r(value: float, digits: int = 4) -> float:
    return float(round(float(value), digits))


@dataclass(frozen=True)
class FaceResult:
    """One face: where it is, how sure the detector is, and what the classifier says about its mask."""

    box: Box  # x0, y0, x1, y1 in image pixels
    score: float  # detector score (fused over views), 0..1
    label: str  # most likely class
    probability: float  # that class's probability
    probabilities: dict[str, float]  # every class
    landmarks: tuple[tuple[float, float], ...] = ()  # eyes (image left, right), nose, mouth (left, right)
    track_id: int | None = None  # set by a tracker in videos
    track_label: str | None = None  # the track's verdict so far (votes over its frames)
    track_probability: float | None = None

    @property
    def confidence(self) -> float:
        """Detector score × class probability: the score faces are ranked by (AP, filters)."""
        return self.score * self.probability

    @property
    def size(self) -> float:
        """Longest side of the box in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def display_label(self) -> str:
        """The track's verdict when tracked, else this frame's label."""
        return self.track_label or self.label

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": [_r(v, 1) for v in self.box],
            "score": _r(self.score),
            "label": self.label,
            "probability": _r(self.probability),
            "probabilities": {k: _r(v) for k, v in self.probabilities.items()},
            "confidence": _r(self.confidence),
            "landmarks": [[_r(x, 1), _r(y, 1)] for x, y in self.landmarks],
        }
        if self.track_id is not None:
            out["track_id"] = self.track_id
            out["track_label"] = self.track_label
            out["track_probability"] = None if self.track_probability is None else _r(self.track_probability)
        return out


@dataclass(frozen=True)
class FrameResult:
    """All faces of one image or video frame, with counts per class and the compliance rate.

    ``compliant_classes``: the classes that count as wearing a mask correctly (the model's); None means
    the default for ``classes`` (:func:`maskwatch.core.contract.default_compliant_classes`)."""

    faces: list[FaceResult]
    classes: list[str]
    width: int
    height: int
    source: str | None = None
    frame: int = 0  # frame number in a video (0 for still images)
    timestamp: float | None = None  # seconds into a video
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    compliant_classes: tuple[str, ...] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Faces per class (every class of the model, zeros included)."""
        tally = dict.fromkeys(self.classes, 0)
        for face in self.faces:
            tally[face.label] = tally.get(face.label, 0) + 1
        return tally

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
