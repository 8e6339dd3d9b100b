"""The model contract: what travels with a classifier (checkpoint dict, ONNX and TorchScript metadata) and
what every consumer of its output (pipeline, engine, counts, alerts) must agree on.

A model is trained on one face framing, so deployment must crop the same way (``crop_margin``); which
classes count as a mask worn correctly is the model's to say (``compliant_classes``); its probabilities are
``softmax(logits / temperature)``. Files that predate a field get the defaults below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "COMPLIANT_CLASSES",
    "CROP_MARGIN",
    "DEFAULT_CROP_MARGIN",
    "MASK_CLASSES",
    "META_ARCH",
    "META_CLASSES",
    "META_COMPLIANT_CLASSES",
    "META_CROP_MARGIN",
    "META_PRECISION",
    "META_PREPROCESSING",
    "META_SOURCE_SHA256",
    "META_TEMPERATURE",
    "META_VERSION",
    "TEMPERATURE",
    "TRAINING_DATA",
    "check_temperature",
    "compliance_rate",
    "default_compliant_classes",
    "model_fields",
]

DEFAULT_CROP_MARGIN = 0.15  # face crop = box grown by this fraction of its width / height on each side
MASK_CLASSES = ("with_mask", "mask")  # class names meaning "mask worn correctly", when a model names none

# keys of the checkpoint dict, the ONNX metadata and the TorchScript metadata (one name everywhere)
CROP_MARGIN = "crop_margin"  # float: face crop = box grown by this fraction per side (the training framing)
COMPLIANT_CLASSES = "compliant_classes"  # list of class names that count as a mask worn correctly
# float: probabilities are softmax(logits / temperature), fitted on validation data (maskwatch.calibration);
# the network itself (and an exported graph's ``logits`` output) stays uncalibrated, 1.0 = no scaling
TEMPERATURE = "temperature"
# what the model was trained on (datasets, split lists, image digests: maskwatch.provenance); an evaluation
# leaves those images out
TRAINING_DATA = "training_data"

# ONNX metadata_props keys (plain keys: Netron and `onnx` show them as is)
META_CLASSES = "classes"  # JSON list of class names, in output order
META_PREPROCESSING = "preprocessing"  # JSON of maskwatch.preprocess.Preprocessing.to_dict()
META_ARCH = "arch"
META_PRECISION = "precision"  # fp32 | int8
META_VERSION = "maskwatch_version"
META_SOURCE_SHA256 = "source_sha256"
META_CROP_MARGIN = CROP_MARGIN  # a number, as text
META_COMPLIANT_CLASSES = COMPLIANT_CLASSES  # JSON list of class names
META_TEMPERATURE = TEMPERATURE  # a number, as text; absent = 1.0


def default_compliant_classes(classes: Sequence[str]) -> list[str]:
    """The classes of a model that count as compliant when the model does not say: those of
    :data:`MASK_CLASSES` it has, in the model's order."""
    return [name for name in classes if name in MASK_CLASSES]


def compliance_rate(
    counts: Mapping[str, int], classes: Sequence[str], compliant_classes: Sequence[str] | None = None
) -> float | None:
    """Faces (or people) of a compliant class / all of them; None when there are none or no class is
    compliant. ``compliant_classes``: the model's; None: those of :data:`MASK_CLASSES` among ``classes``."""
    total = sum(counts.values())
    compliant = default_compliant_classes(classes) if compliant_classes is None else list(compliant_classes)
    if total == 0 or not compliant:
        return None
    return sum(counts.get(name, 0) for name in compliant) / total


def check_temperature(value: Any) -> float:
    """``value`` as a temperature: a finite number > 0 (``ValueError`` otherwise)."""
    try:
        temperature = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a finite number > 0, got {value!r}") from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {value!r}")
    return temperature


def model_fields(meta: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """``crop_margin``, ``compliant_classes`` and ``temperature`` of a model's metadata (a checkpoint dict,
    decoded ONNX or TorchScript metadata), with the defaults for files written before they existed (0.15,
    the classes named like a mask worn correctly, 1.0); checked against ``classes``."""
    margin = meta.get(CROP_MARGIN)
    compliant = meta.get(COMPLIANT_CLASSES)
    temperature = meta.get(TEMPERATURE)
    margin = DEFAULT_CROP_MARGIN if margin is None else float(margin)
    if not margin >= 0:
        raise ValueError(f"crop_margin must be >= 0, got {margin}")
    compliant = default_compliant_classes(classes) if compliant is None else [str(c) for c in compliant]
    unknown = [c for c in compliant if c not in classes]
    if unknown:
        raise ValueError(f"compliant classes {unknown} are not classes of the model {list(classes)}")
    temperature = 1.0 if temperature is None else check_temperature(temperature)
    return {CROP_MARGIN: margin, COMPLIANT_CLASSES: compliant, TEMPERATURE: temperature}
