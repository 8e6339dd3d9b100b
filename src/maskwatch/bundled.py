"""The model that ships with maskwatch, so ``detect`` and ``serve`` work right after install."""

from __future__ import annotations

import os
from pathlib import Path

BUNDLED_NAME = "maskwatch-mobilenet_v2.pt"


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
