"""The Python API takes what users have at hand (paths, PIL images, uint8/float arrays, grayscale, RGBA, one
image or many) and refuses the rest with a ValueError naming what was given and what is accepted."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_pipeline import fake_detector

from maskwatch.data.images import to_rgb_array
from maskwatch.preprocess import Preprocessing
from maskwatch.runtime.types import Classifier


class Brightness(Classifier):
    """p(with_mask) grows with the mean brightness of the (normalised) input."""

    backend = "fake"

    def __init__(self):
        super().__init__(["with_mask", "without_mask"], Preprocessing(size=16, mean=(0, 0, 0), std=(1, 1, 1)))

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        level = batch.mean(axis=(1, 2, 3)) - 0.5
        return np.stack([level * 10, -level * 10], axis=1)


GREY = np.full((20, 16, 3), 200, np.uint8)


@pytest.mark.parametrize(
    "image",
    [
        GREY,
        GREY.astype(np.float32) / 255.0,  # float 0..1
        GREY.astype(np.float64),  # float 0..255
        GREY[:, :, 0],  # grayscale HxW
        GREY[:, :, :1],  # grayscale HxWx1
        np.dstack([GREY, np.full((20, 16), 255, np.uint8)]),  # RGBA, opaque
        Image.fromarray(GREY),
        Image.fromarray(GREY).convert("L"),
        Image.fromarray(GREY).convert("RGBA"),
    ],
    ids=["uint8", "float01", "float255", "gray2d", "gray1", "rgba", "pil", "pil-L", "pil-RGBA"],
)
def test_reasonable_images_become_the_same_rgb_array(image):
    out = to_rgb_array(image)
    assert out.dtype == np.uint8 and out.shape == (20, 16, 3)
    assert np.array_equal(out, GREY)


def test_transparent_rgba_is_flattened_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
    assert (to_rgb_array(rgba) == 255).all()


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (np.zeros((0, 0, 3), np.uint8), "shape (0, 0, 3)"),
        (np.zeros((0,), np.uint8), "shape (0,)"),
        (np.zeros((3, 20, 16), np.uint8), "channels first"),
        (np.zeros((20, 16, 5), np.uint8), "shape (20, 16, 5)"),
        (np.zeros((20, 16, 3), np.uint16), "uint16"),
        (np.full((20, 16, 3), 300.0), "0..1 or 0..255"),
        (np.full((20, 16, 3), np.nan), "NaN"),
        (np.zeros((2, 20, 16, 3), np.uint8), "shape (2, 20, 16, 3)"),
        (42, "builtins.int"),
        (None, "NoneType"),
    ],
)
def test_unusable_inputs_are_a_clear_value_error(bad, named):
    with pytest.raises(ValueError, match=r"expected|accepted|must lie|NaN") as caught:
        to_rgb_array(bad)
    assert named in str(caught.value)


def test_predict_takes_one_image_or_many(tmp_path):
    classifier = Brightness()
    path = tmp_path / "face.png"
    Image.fromarray(GREY).save(path)
    single = classifier.predict(str(path))
    assert single[0] == "with_mask" and 0.5 < single[1] <= 1.0
    assert classifier.predict(path) == single
    assert classifier.predict(GREY) == single
    assert classifier.predict(GREY.astype(np.float32) / 255) == single
    assert classifier.predict(Image.fromarray(GREY)) == single
    assert classifier.predict([GREY, str(path), GREY[:, :, 0]]) == [single] * 3
    assert classifier.predict(np.stack([GREY, GREY])) == [single] * 2  # an NxHxWx3 batch
    assert classifier.predict([]) == []
    assert classifier.predict_proba(GREY).shape == (2,)
    assert classifier.predict_proba([GREY]).shape == (1, 2)
    with pytest.raises(ValueError, match=r"shape \(0, 0, 3\)"):
        classifier.predict(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match="expected one image or a sequence"):
        classifier.predict(42)


def test_detect_takes_the_same_inputs_and_refuses_empty_arrays(tmp_path):
    detector = fake_detector()
    image = np.zeros((64, 80, 3), np.uint8)
    for given in (image, image.astype(np.float32), image[:, :, 0], np.dstack([image, image[:, :, :1] + 255])):
        result = detector.detect(given)
        assert (result.width, result.height) == (80, 64)
    with pytest.raises(ValueError, match=r"shape \(0, 0, 3\)"):
        detector.detect(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match=r"accepted|expected"):
        detector.detect(np.zeros((64, 80, 2), np.uint8))


def test_mask_detector_is_importable_from_the_top_level():
    code = "from maskwatch import MaskDetector; import maskwatch; assert maskwatch.MaskDetector is MaskDetector"
    subprocess.run([sys.executable, "-c", code], check=True)
