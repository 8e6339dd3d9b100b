"""The classifier interface every inference backend implements.

A classifier takes RGB uint8 face images of any size and returns class probabilities. Preprocessing is
shared (``maskwatch.preprocess``) and vectorised over the batch; backends only differ in ``_logits``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from maskwatch.preprocess import Preprocessing, to_batch

ImageLike = np.ndarray | Image.Image


def as_rgb_array(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {array.shape} dtype {array.dtype}")
    return array


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Classifier(ABC):
    """Face crop(s) in, class probabilities out."""

    backend: str = "?"

    def __init__(self, classes: Sequence[str], preprocessing: Preprocessing, batch_size: int = 32):
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.batch_size = batch_size

    @abstractmethod
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 normalised batch -> N x classes logits."""

    def predict_proba(self, images: Sequence[ImageLike]) -> np.ndarray:
        arrays = [as_rgb_array(im) for im in images]
        out = [
            softmax(self._logits(to_batch(arrays[i : i + self.batch_size], self.preprocessing)).astype(np.float64))
            for i in range(0, len(arrays), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, images: Sequence[ImageLike]) -> list[tuple[str, float]]:
        """(class name, probability) of the most likely class for each image."""
        probabilities = self.predict_proba(images)
        return [(self.classes[int(p.argmax())], float(p.max())) for p in probabilities]


def load_classifier(path: str | Path, backend: str = "torch", **options) -> Classifier:
    """Open a model file with the named backend."""
    if backend == "torch":
        from maskwatch.runtime.torch_backend import TorchClassifier

        return TorchClassifier.from_checkpoint(path, **options)
    raise ValueError(f"unknown backend {backend!r}; available: torch")
