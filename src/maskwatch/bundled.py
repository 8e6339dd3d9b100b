"""The model that ships with maskwatch, so ``detect`` and ``serve`` work right after install."""

from __future__ import annotations

import os
from pathlib import Path

BUNDLED_NAME = "maskwatch-mobilenet_v2.pt"
# its ready INT8 export (the classifier of the ``fast`` preset: videos and streams), so serving never needs
# the training data for calibration; accuracy deltas in models/MODEL_CARD.md
BUNDLED_INT8_NAME = "maskwatch-mobilenet_v2-int8.onnx"


def default_model_path() -> Path:
    """``$MASKWATCH_MODEL`` if set, else the bundled checkpoint (inside the package, or ``models/`` of a
    source checkout)."""
    override = os.environ.get("MASKWATCH_MODEL")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here / "assets" / BUNDLED_NAME, here.parents[1] / "models" / BUNDLED_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"bundled model {BUNDLED_NAME} not found (looked in {here / 'assets'} and {here.parents[1] / 'models'}); "
        "pass --model PATH or set MASKWATCH_MODEL"
    )


def default_int8_model_path() -> Path | None:
    """The bundled model's INT8 export next to it, or None (also when ``$MASKWATCH_MODEL`` picks another model)."""
    if os.environ.get("MASKWATCH_MODEL"):
        return None
    here = Path(__file__).resolve().parent
    for candidate in (here / "assets" / BUNDLED_INT8_NAME, here.parents[1] / "models" / BUNDLED_INT8_NAME):
        if candidate.is_file():
            return candidate
    return None
