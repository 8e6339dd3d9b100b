"""maskwatch: train, evaluate, explain and deploy a face-mask classifier.

The top-level import stays light (no torch): heavy modules load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the lazy exports; at run time ``__getattr__`` loads them
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.runtime.base import Classifier

__all__ = ["MaskDetector", "__version__", "load"]


def load(path: str | Path | None = None, backend: str = "auto", **options: Any) -> Classifier:
    """The mask classifier at ``path``; by default the bundled model (see ``models/MODEL_CARD.md``).

    >>> import maskwatch
    >>> maskwatch.load().predict([face_rgb])   # [("with_mask", 0.99)]
    >>> maskwatch.load().predict("face.jpg")   # ("with_mask", 0.99): one image in, one pair out

    Images: paths, PIL images, HxWx3 uint8 or float (0..1, or 0..255 when the maximum is above 1) arrays,
    grayscale (HxW, HxWx1), RGBA (flattened on white); anything else is a ValueError saying what it got.
    """
    from maskwatch.bundled import default_model_path
    from maskwatch.runtime.base import load_classifier

    return load_classifier(path or default_model_path(), backend=backend, **options)


def __getattr__(name: str) -> Any:
    """Lazy exports, so ``import maskwatch`` stays light: ``from maskwatch import MaskDetector``."""
    if name == "MaskDetector":
        from maskwatch.detection import pipeline

        return pipeline.MaskDetector
    raise AttributeError(f"module 'maskwatch' has no attribute {name!r}")
