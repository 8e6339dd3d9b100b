"""The classifier interface every inference backend implements.

A classifier takes RGB uint8 face images of any size and returns class probabilities. Preprocessing is
shared (``maskwatch.preprocess``) and vectorised over the batch; backends only differ in ``_logits``.
"""

from __future__ import annotations

import logging
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


BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def load_classifier(path: str | Path, backend: str = "auto", **options) -> Classifier:
    """Open a model file with the named backend: ``auto`` | ``torch`` | ``onnx`` | ``onnx-int8``.

    * ``.onnx`` file (exported by maskwatch): ONNX Runtime; the precision is the file's own.
    * ``.ts`` / ``.torchscript`` file: torch (TorchScript).
    * ``.pt`` checkpoint: ``torch`` runs it as is; ``onnx`` / ``onnx-int8`` export it once to the export
      cache (keyed by the checkpoint's sha256, see ``maskwatch.runtime.export``) and run that; ``auto`` is
      ``onnx`` when onnxruntime is importable and no CUDA device is asked for or present, else ``torch``.

    ``options`` go to the backend (``batch_size``; ``threads`` and ``spin`` for ONNX; ``device`` for torch).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    path = Path(path)
    suffix = path.suffix.lower()
    spin = options.pop("spin", None)  # an ONNX Runtime thread-pool setting; torch has none
    if suffix == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file; use backend onnx (or auto), or give the .pt checkpoint")
        from maskwatch.runtime.onnx_backend import OnnxClassifier

        classifier = OnnxClassifier(path, spin=spin, **options)
        if backend == "onnx-int8" and classifier.backend != "onnx-int8":
            raise ValueError(f"{path} is not an INT8 export; export one with `maskwatch export --format onnx-int8`")
        return classifier
    if suffix in (".ts", ".torchscript"):
        from maskwatch.runtime.export import load_torchscript
        from maskwatch.runtime.torch_backend import TorchClassifier

        module, classes, prep = load_torchscript(path)
        return TorchClassifier(module, classes, prep, **options)
    chosen = backend
    if backend == "auto":
        from maskwatch.runtime.onnx_backend import prefer_onnx

        chosen = "onnx" if prefer_onnx(options) else "torch"
    if chosen != "torch":
        from maskwatch.runtime.onnx_backend import OnnxClassifier

        try:
            from maskwatch.runtime.export import cached_export

            return OnnxClassifier(cached_export(path, int8=chosen == "onnx-int8"), spin=spin, **options)
        except ImportError as exc:  # the exporter needs torch + onnx
            if backend != "auto":
                raise
            logging.getLogger("maskwatch").warning("ONNX export unavailable (%s); running %s with torch", exc, path)
    try:
        from maskwatch.runtime.torch_backend import TorchClassifier
    except ImportError as exc:
        raise ImportError(f"{path} is a torch checkpoint and torch is not installed ({exc}): install "
                          "'maskwatch[train]', or use an exported .onnx file (`maskwatch export`)") from exc
    return TorchClassifier.from_checkpoint(path, **options)
