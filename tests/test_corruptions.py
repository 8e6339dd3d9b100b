"""Camera conditions: each corruption keeps the image's size and type, does what its name says, and is seeded;
the training augmentation draws them with their probabilities."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from PIL import Image

from maskwatch.data.corruptions import (
    CLEAN,
    CORRUPTIONS,
    ISSUE_CONDITIONS,
    Condition,
    all_conditions,
    corrupt,
    parse_condition,
)
from maskwatch.data.transforms import RandomCameraConditions, train_transform


def _face(size=(90, 120)) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.zeros((*size, 3), dtype=np.uint8)
    image[...] = (180, 120, 90)  # skin-ish
    image[size[0] // 2 :, :, :] = (30, 60, 160)  # a blue mask over the lower half
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def _sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _chroma(image: np.ndarray) -> float:
    return float(np.abs(image.astype(int) - image.mean(axis=2, keepdims=True)).mean())


@pytest.mark.parametrize("condition", all_conditions(), ids=lambda c: c.label)
def test_every_condition_keeps_size_and_type_and_is_seeded(condition):
    image = _face()
    a = condition.apply(image, np.random.default_rng(1))
    b = condition.apply(image, np.random.default_rng(1))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, image)


def test_each_corruption_does_what_its_name_says():
    image, rng = _face(), np.random.default_rng(0)
    assert _chroma(corrupt(image, "grayscale", 1, rng)) == 0
    for level in (1, 2):
        assert _chroma(corrupt(image, "infrared", level, rng)) == 0
    assert _chroma(corrupt(image, "infrared", 3, rng)) > 3  # colour mode left on at night: a cast
    sharp = _sharpness(image)
    blurred = [_sharpness(corrupt(image, "blur", level, rng)) for level in (1, 2, 3)]
    assert sharp > blurred[0] > blurred[1] > blurred[2]
    assert _sharpness(corrupt(image, "motion_blur", 3, rng)) < sharp
    dark = [corrupt(image, "dark", level, rng).mean() for level in (1, 2, 3)]
    assert image.mean() > dark[0] > dark[1] > dark[2]
    noisy = [np.abs(corrupt(image, "noise", level, rng).astype(int) - image).mean() for level in (1, 2, 3)]
    assert noisy[0] < noisy[1] < noisy[2]
    small = corrupt(image, "lowres", 3, rng)  # 16 px and back: little detail left
    assert _sharpness(small) < _sharpness(corrupt(image, "lowres", 1, rng)) < sharp
    jpeg = [np.abs(corrupt(image, "jpeg", level, rng).astype(int) - image).mean() for level in (1, 3)]
    assert 0 < jpeg[0] < jpeg[1]


def test_conditions_parse_and_the_issue_table_is_there():
    assert parse_condition("jpeg-3") == Condition("jpeg", 3) and parse_condition("clean") == CLEAN
    assert parse_condition("grayscale") == Condition("grayscale", 1)
    assert [c.label for c in ISSUE_CONDITIONS] == ["grayscale", "blur-2", "dark-2", "jpeg-3", "lowres-2", "noise-2"]
    assert len(all_conditions()) == 3 * (len(CORRUPTIONS) - 1) + 1
    for bad in ("fog-1", "jpeg-4", "jpeg-x"):
        with pytest.raises(ValueError):
            parse_condition(bad)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        corrupt(np.zeros((4, 4), dtype=np.uint8), "blur", 1, np.random.default_rng(0))


def test_camera_augmentation_follows_its_probabilities():
    random.seed(0)
    image = Image.fromarray(_face())
    never = RandomCameraConditions({"grayscale": 0.0})
    assert never(image) is image
    always_gray = RandomCameraConditions({"grayscale": 1.0})
    assert _chroma(np.asarray(always_gray(image))) == 0
    half = RandomCameraConditions({"grayscale": 0.5})
    gray = sum(_chroma(np.asarray(half(image))) == 0 for _ in range(400))
    assert 160 < gray < 240
    with pytest.raises(ValueError, match="unknown camera conditions"):
        RandomCameraConditions({"fog": 0.5})
    tensor = train_transform(64, camera={"infrared": 1.0, "jpeg": 1.0})(image)
    assert tuple(tensor.shape) == (3, 64, 64)
    assert float((tensor[0] - tensor[1]).abs().mean()) > 0.05  # ImageNet normalisation differs per channel
