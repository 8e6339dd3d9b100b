"""Stand-ins for the two networks, for fast tests of everything around them (sources, engine, CLI).

Faces are coloured squares on black: green = mask, red = no mask. :class:`BlobFinder` finds every
non-black blob (score = its brightness), :class:`ColourClassifier` calls a crop masked when it is greener
than red. Optional delays make them as slow as a real model where a test needs analysis to lag.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.detection.pipeline import MaskDetector

CLASSES = ["with_mask", "without_mask"]
GREEN, RED = (0, 230, 0), (220, 0, 0)


class BlobFinder:
    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0

    def detect(self, image_rgb):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        mask = (image_rgb.max(axis=2) > 20).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        boxes = [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h, _ in stats[1:n]]
        scores = [float(image_rgb[y + h // 2, x + w // 2].max()) / 255.0 for x, y, w, h, _ in stats[1:n]]
        return Faces(boxes, scores)


class ColourClassifier:
    classes = CLASSES
    backend = "fake"
    crop_margin = 0.15
    compliant_classes = ("with_mask",)

    def __init__(self, delay_per_crop: float = 0.0):
        self.delay_per_crop = delay_per_crop
        self.crops = 0
        self._lock = threading.Lock()

    def predict_proba(self, images):
        with self._lock:
            self.crops += len(images)
        if self.delay_per_crop:
            time.sleep(self.delay_per_crop * len(images))
        p = [0.97 if im[..., 1].mean() > im[..., 0].mean() else 0.04 for im in images]
        return np.array([[v, 1 - v] for v in p]).reshape(-1, 2)


def fake_detector(*, finder_delay: float = 0.0, crop_delay: float = 0.0, **options) -> MaskDetector:
    options.setdefault("scales", "fast")
    return MaskDetector(ColourClassifier(crop_delay), BlobFinder(finder_delay), box_adjust=None, **options)


def scene(squares, size=(240, 320)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    for x, y, side, colour in squares:
        image[y : y + side, x : x + side] = colour
    return image


def save_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def walking_frames(n: int, people: int = 2) -> list[np.ndarray]:
    """``n`` frames of ``people`` squares moving right (even ones masked, odd ones not)."""
    return [
        scene([(10 + 6 * i, 20 + 70 * k, 40, GREEN if k % 2 == 0 else RED) for k in range(people)]) for i in range(n)
    ]


def make_video(path: Path, n: int, fps: float = 10.0, people: int = 2) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for rgb in walking_frames(n, people):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class FakeCamera:
    """A ``cv2.VideoCapture`` stand-in for a live camera delivering frames at ``fps`` in real time
    (``read`` blocks until the next frame is due), with people passing by; ``frames`` then it drops."""

    def __init__(self, fps: float = 50.0, frames: int | None = None, opened: bool = True, hang: bool = False):
        self.fps, self.left, self.opened, self.hang = fps, frames, opened, hang
        self.start = time.monotonic()
        self.index = 0

    def isOpened(self):
        return self.opened

    def read(self):
        if self.hang:
            time.sleep(3600)
        if self.left is not None and self.left <= 0:
            return False, None
        due = self.start + self.index / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i = self.index
        self.index += 1
        if self.left is not None:
            self.left -= 1
        x = 10 + (i * 4) % 200  # a person crosses every 50 frames
        rgb = scene([(x, 40, 40, GREEN if (i // 50) % 2 == 0 else RED)])
        return True, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def grab(self):
        return True

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


# -- a third class: mask worn incorrectly (blue squares) -------------------------------------------------

THREE_CLASSES = ["with_mask", "without_mask", "mask_weared_incorrect"]
BLUE = (30, 30, 225)  # a face wearing its mask below the nose, for the 3-class fakes


class ThreeColourClassifier:
    """A 3-class stand-in: the crop's dominant channel decides (green mask, red none, blue worn incorrectly);
    like a real model, its compliant classes travel with it."""

    classes = THREE_CLASSES
    backend = "fake"
    crop_margin = 0.15
    compliant_classes = ("with_mask",)

    def __init__(self) -> None:
        self.crops = 0

    def predict_proba(self, images):
        self.crops += len(images)
        out = []
        for im in images:
            r, g, b = (float(im[..., c].mean()) for c in range(3))
            winner = int(np.argmax([g, r, b]))  # the order of THREE_CLASSES
            p = np.full(3, 0.03)
            p[winner] = 0.94
            out.append(p)
        return np.array(out).reshape(-1, 3)


def fake_three_class_detector(**options) -> MaskDetector:
    options.setdefault("scales", "fast")
    return MaskDetector(ThreeColourClassifier(), BlobFinder(), box_adjust=None, **options)
