"""Train/eval presets: shapes, normalisation, and the small-face and framing augmentations."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from maskwatch.data.transforms import RandomLowResolution, RandomZoomOut, eval_transform, train_transform
from maskwatch.preprocess import IMAGENET_MEAN, IMAGENET_STD


def test_eval_transform_normalises_with_imagenet_statistics():
    image = Image.new("RGB", (50, 30), (255, 0, 128))
    tensor = eval_transform(64)(image)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(tensor.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4)


def test_train_transform_is_random_but_shaped_like_eval():
    random.seed(0)
    torch.manual_seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8))
    transform = train_transform(64, crop_scale=0.8, zoom_out_prob=0.5, lowres_prob=0.5, blur_prob=0.5)
    a, b = transform(image), transform(image)
    assert a.shape == b.shape == (3, 64, 64)
    assert not torch.equal(a, b)


def test_low_resolution_view_loses_detail():
    random.seed(0)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    small = RandomLowResolution(1.0, 16, 16)(image)
    assert max(small.size) == 16
    assert RandomLowResolution(0.0, 16, 16)(image) is image


def test_zoom_out_keeps_size_and_shrinks_content():
    random.seed(3)
    image = Image.new("RGB", (100, 100), (0, 0, 0))
    image.paste((255, 255, 255), (30, 30, 70, 70))  # a 40x40 white square; the edges stay black
    out = RandomZoomOut(1.0, 0.5)(image)
    assert out.size == (100, 100)
    white = int((np.asarray(out).min(axis=2) > 128).sum())
    assert 0.25 * 1600 * 0.9 <= white < 0.95 * 1600  # scale in [0.5, 1): area shrinks by scale squared
    assert RandomZoomOut(0.0, 0.5)(image) is image
