"""Train and eval transform presets (PIL image in, normalised CHW tensor out).

Train: random crop (framing varies between datasets), rotation +/-15 deg, horizontal flip, colour jitter,
occasional blur, a downscale-then-upscale view that imitates the small, far faces of real scenes, and the
camera conditions of :mod:`maskwatch.data.corruptions` (grayscale and infrared night cameras, motion blur,
JPEG, low light, noise; :class:`RandomCameraConditions`), each with its own probability.
Eval: the deployment preprocessing of :mod:`maskwatch.preprocess`, so training measures what users get.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms as tvt

from maskwatch.preprocess import IMAGENET_MEAN, Preprocessing, to_batch

Transform = Callable[[Image.Image], torch.Tensor]


class RandomAreaCrop:
    """Crop a random box covering at least ``min_area`` of the image, aspect within ``ratio``."""

    def __init__(self, min_area: float, ratio: tuple[float, float] = (0.8, 1.25)):
        self.min_area = min_area
        self.ratio = ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.min_area >= 1:
            return image
        width, height = image.size
        for _ in range(10):
            area = random.uniform(self.min_area, 1.0) * width * height
            aspect = np.exp(random.uniform(np.log(self.ratio[0]), np.log(self.ratio[1])))
            w, h = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
            if 0 < w <= width and 0 < h <= height:
                left, top = random.randint(0, width - w), random.randint(0, height - h)
                return image.crop((left, top, left + w, top + h))
        return image


class RandomZoomOut:
    """With probability ``p``, shrink the image to ``lo..1`` of its size inside a canvas of the original size,
    borders replicated. Tight and loose framings then appear in every class, so a model cannot tell the
    class from how closely a dataset happened to crop its faces."""

    def __init__(self, p: float, lo: float):
        self.p, self.lo = p, lo

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p or self.lo >= 1:
            return image
        scale = random.uniform(self.lo, 1.0)
        width, height = image.size
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        small = cv2.resize(np.asarray(image), (w, h), interpolation=cv2.INTER_AREA)
        left, top = random.randint(0, width - w), random.randint(0, height - h)
        canvas = cv2.copyMakeBorder(small, top, height - h - top, left, width - w - left, cv2.BORDER_REPLICATE)
        return Image.fromarray(canvas)


class RandomLowResolution:
    """With probability ``p``, shrink so the longest side is ``lo..hi`` px (the later resize enlarges it)."""

    def __init__(self, p: float, lo: int, hi: int):
        self.p, self.lo, self.hi = p, lo, hi

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        side = random.randint(self.lo, self.hi)
        width, height = image.size
        scale = side / max(width, height)
        if scale >= 1:
            return image
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        array = cv2.resize(np.asarray(image), small, interpolation=cv2.INTER_AREA)
        return Image.fromarray(array)


class RandomCameraConditions:
    """Each camera condition of :mod:`maskwatch.data.corruptions` with its own probability, at a random
    severity, in a fixed order (how a camera makes a picture: light, optics and motion, sensor noise, colour
    mode, compression). The protocol tests the same functions, so what a model was trained for is known."""

    ORDER = ("low_light", "motion_blur", "noise", "infrared", "grayscale", "jpeg")

    def __init__(self, probabilities: dict[str, float]):
        unknown = set(probabilities) - set(self.ORDER)
        if unknown:
            raise ValueError(f"unknown camera conditions {sorted(unknown)}; known: {', '.join(self.ORDER)}")
        self.probabilities = {name: float(probabilities.get(name, 0.0)) for name in self.ORDER}

    def __call__(self, image: Image.Image) -> Image.Image:
        from maskwatch.data.corruptions import corrupt

        chosen = [name for name, p in self.probabilities.items() if p and random.random() < p]
        if not chosen:
            return image
        if "infrared" in chosen and "grayscale" in chosen:
            chosen.remove("grayscale")  # the infrared picture is grey already
        array = np.asarray(image.convert("RGB"))
        rng = np.random.default_rng(random.getrandbits(63))
        for name in chosen:
            corruption = "dark" if name == "low_light" else name
            array = corrupt(array, corruption, random.randint(1, 3), rng)
        return Image.fromarray(array)


class ToModelInput:
    """PIL image -> normalised CHW float tensor, exactly as deployment preprocesses a face."""

    def __init__(self, prep: Preprocessing):
        self.prep = prep

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(to_batch([np.asarray(image.convert("RGB"))], self.prep)[0])


def eval_transform(size: int = 224) -> Transform:
    return ToModelInput(Preprocessing(size=size))


def train_transform(
    size: int = 224,
    *,
    rotation: float = 15.0,
    hflip: float = 0.5,
    jitter: float = 0.2,
    crop_scale: float = 1.0,
    zoom_out_prob: float = 0.0,
    zoom_out_min: float = 0.7,
    lowres_prob: float = 0.0,
    lowres_min: int = 14,
    lowres_max: int = 56,
    blur_prob: float = 0.0,
    camera: dict[str, float] | None = None,
) -> Transform:
    fill = tuple(round(255 * m) for m in IMAGENET_MEAN)  # rotated-in corners normalise to ~0
    steps: list[Callable] = [RandomAreaCrop(crop_scale)]
    if zoom_out_prob:
        steps.append(RandomZoomOut(zoom_out_prob, zoom_out_min))
    if rotation:
        steps.append(tvt.RandomRotation(rotation, interpolation=tvt.InterpolationMode.BILINEAR, fill=fill))
    if hflip:
        steps.append(tvt.RandomHorizontalFlip(hflip))
    if jitter:
        steps.append(tvt.ColorJitter(brightness=jitter, contrast=jitter))
    if blur_prob:
        steps.append(tvt.RandomApply([tvt.GaussianBlur(5, sigma=(0.3, 1.5))], p=blur_prob))
    if lowres_prob:
        steps.append(RandomLowResolution(lowres_prob, lowres_min, lowres_max))
    if camera and any(camera.values()):
        steps.append(RandomCameraConditions(camera))
    steps.append(ToModelInput(Preprocessing(size=size)))
    return tvt.Compose(steps)


def train_transform_from_config(cfg) -> Transform:
    if not cfg.augment:
        return eval_transform(cfg.image_size)
    return train_transform(
        cfg.image_size,
        rotation=cfg.rotation,
        hflip=cfg.hflip,
        jitter=cfg.jitter,
        crop_scale=cfg.crop_scale,
        zoom_out_prob=cfg.zoom_out_prob,
        zoom_out_min=cfg.zoom_out_min,
        lowres_prob=cfg.lowres_prob,
        lowres_min=cfg.lowres_min,
        lowres_max=cfg.lowres_max,
        blur_prob=cfg.blur_prob,
        camera=camera_probabilities(cfg),
    )


def camera_probabilities(cfg) -> dict[str, float]:
    """The config's camera-condition probabilities (``grayscale_prob``, ``infrared_prob``, ...), by condition."""
    return {name: float(getattr(cfg, f"{name}_prob", 0.0)) for name in RandomCameraConditions.ORDER}
