"""The classifier interface every inference backend implements, and what travels with a model.

A classifier takes RGB uint8 face images of any size and returns class probabilities. Preprocessing is
shared (``maskwatch.preprocess``) and vectorised over the batch; backends only differ in ``_logits``.

This module is the backends' only dependency inside ``maskwatch.runtime``: the factory
(:func:`maskwatch.runtime.base.load_classifier`) imports the backends, never the other way round.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from maskwatch.core.contract import COMPLIANT_CLASSES, CROP_MARGIN, TEMPERATURE, check_temperature, model_fields
from maskwatch.preprocess import Preprocessing, to_batch

__all__ = ["Classifier", "ImageLike", "as_rgb_array", "check_temperature", "model_fields", "softmax"]

ImageLike = np.ndarray | Image.Image


def as_rgb_array(image: Any) -> np.ndarray:
    """One image as HxWx3 uint8 RGB: :func:`maskwatch.data.images.to_rgb_array` (paths, PIL images, uint8
    or float arrays, grayscale, RGBA; a clear ``ValueError`` for anything else)."""
    from maskwatch.data.images import to_rgb_array

    return to_rgb_array(image)


def _image_list(images: Any) -> tuple[list[Any], bool]:
    """``images`` as a list, and whether a single image was given instead of a sequence."""
    from maskwatch.data.images import ACCEPTED_IMAGES, is_single_image

    if is_single_image(images):
        return [images], True
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images), False
        raise ValueError(
            f"expected one image or a sequence of images ({ACCEPTED_IMAGES}; or an NxHxWxC array); "
            f"got an array of shape {images.shape}"
        )
    try:
        return list(images), False
    except TypeError:
        raise ValueError(
            f"expected one image or a sequence of images ({ACCEPTED_IMAGES}); got a {type(images).__name__}"
        ) from None


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` of an N x classes array (float64, overflow-safe): the one
    place maskwatch turns logits into probabilities."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Classifier(ABC):
    """Face crop(s) in, class probabilities out.

    ``crop_margin`` (the face framing the model was trained on), ``compliant_classes`` (which of its
    classes mean a mask worn correctly) and ``temperature`` (probabilities are ``softmax(logits / T)``)
    come from the model file; None takes the defaults of files that predate them (:func:`model_fields`)."""

    backend: str = "?"

    def __init__(
        self,
        classes: Sequence[str],
        preprocessing: Preprocessing,
        batch_size: int = 32,
        *,
        crop_margin: float | None = None,
        compliant_classes: Sequence[str] | None = None,
        temperature: float | None = None,
    ):
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        fields = model_fields(
            {CROP_MARGIN: crop_margin, COMPLIANT_CLASSES: compliant_classes, TEMPERATURE: temperature}, self.classes
        )
        self.crop_margin: float = fields[CROP_MARGIN]
        self.compliant_classes: list[str] = fields[COMPLIANT_CLASSES]
        self.temperature: float = fields[TEMPERATURE]

    @abstractmethod
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """NCHW float32 normalised batch -> N x classes logits."""

    def logits(self, images: Any) -> np.ndarray:
        """The network's raw scores, before the temperature: N x classes (float64) for a sequence of images,
        one row for a single image. What calibration fits on; predictions use :meth:`predict_proba`."""
        items, single = _image_list(images)
        arrays = [as_rgb_array(im) for im in items]
        if single:
            return self.logits(arrays)[0]
        out = [
            self._logits(to_batch(arrays[i : i + self.batch_size], self.preprocessing)).astype(np.float64)
            for i in range(0, len(arrays), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict_proba(self, images: Any) -> np.ndarray:
        """Calibrated class probabilities, ``softmax(logits / temperature)``: N x classes for a sequence of
        images, one row (a vector) for a single image. Images: paths, PIL images, HxWx3 uint8 or float
        arrays, grayscale, RGBA (see :func:`maskwatch.data.images.to_rgb_array`)."""
        scores = self.logits(images)
        if scores.ndim == 1:
            return softmax(scores[None], self.temperature)[0]
        return softmax(scores, self.temperature) if len(scores) else scores

    def predict(self, images: Any) -> Any:
        """(class name, probability) of the most likely class for each image of a sequence, or one such pair
        for a single image (a path, a PIL image or one array)."""
        items, single = _image_list(images)
        probabilities = self.predict_proba(items)
        pairs = [(self.classes[int(p.argmax())], float(p.max())) for p in probabilities]
        return pairs[0] if single else pairs
