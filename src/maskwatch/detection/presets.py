"""The scene pipeline's presets by name: which detector views, classifier views and precisions each runs.

Plain data (no OpenCV, no model runtime), so settings that name a preset (the engine's, the service's) can
be checked without loading the pipeline; :class:`~maskwatch.detection.pipeline.MaskDetector` applies them.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = ["DETECTOR_PRECISIONS", "PRESETS", "TTA_MARGIN_OFFSETS", "PresetName", "check_preset"]

PresetName = Literal["fast", "balanced", "accurate"]

# detector views (longest sides of the network input, also run mirrored) and classifier views (see
# ``classify_tta``: each face classified on 6 crops instead of 1)
# and the face detector's precision: ``fast`` runs the INT8 CenterFace shipped in maskwatch/assets (about 2x
# faster, about half a point of face recall: models/MODEL_CARD.md), the others the fp32 original
PRESETS: dict[str, dict[str, Any]] = {
    # one detector run: video and streams
    "fast": {"scales": (640,), "flip": False, "classify_tta": False, "detector": "int8", "classifier": "int8"},
    # two runs
    "balanced": {"scales": (640,), "flip": True, "classify_tta": False, "detector": "fp32", "classifier": "fp32"},
    # six runs: still images, evaluation (1280 px added for faces under 20 px: benchmarks/study_small_faces.py)
    "accurate": {
        "scales": (640, 1024, 1280),
        "flip": True,
        "classify_tta": True,
        "detector": "fp32",
        "classifier": "fp32",
    },
}
assert tuple(PRESETS) == get_args(PresetName)
DETECTOR_PRECISIONS = ("fp32", "int8")

# classifier test-time augmentation: crop margins relative to ``crop_margin``, each crop also mirrored
TTA_MARGIN_OFFSETS = (-0.05, 0.0, 0.05)


def check_preset(name: str) -> str:
    """``name`` when it is a preset; else ValueError listing them."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name
