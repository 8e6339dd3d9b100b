"""How cameras fail, as image corruptions: one set for training augmentation and for the robustness protocol.

Every corruption is a pure function of an RGB uint8 face crop (H x W x 3, at the crop's own resolution, as a
camera delivers it, before the model's resize), a severity 1..3 and a numpy random generator (noise, angles),
returning an RGB uint8 image of the same size. The same functions make the training views
(:class:`maskwatch.data.transforms.RandomCameraConditions`) and the corrupted test sets
(:mod:`maskwatch.robustness`), so a model is tested on exactly the conditions it may have been trained for,
and the protocol says which.

Severities come from how cameras fail, not from a benchmark suite:

===============  ===========================================================================================
``grayscale``    a camera in black-and-white mode (one level): luma of BT.601, copied to the three channels.
``infrared``     a camera at night under its infrared illuminator: near-infrared light makes skin bright and
                 flat and fabric dyes unpredictable; the picture is grey from mostly the red channel, with
                 the automatic gain's high contrast, the illuminator's hot centre (vignetting) and sensor
                 noise. 3: the colour mode left on (no IR-cut filter: a magenta cast), which the grayscale
                 mode of :mod:`maskwatch.camera_color` removes.
``blur``         out of focus: Gaussian sigma 1, 2, 3 px.
``motion_blur``  a person walking past a slow shutter: a line kernel of 5, 9, 15 px at a random angle.
``dark``         dusk and poorly lit rooms: gamma 1.5 / 2.2 / 2.2 and exposure 0.7 / 0.5 / 0.3; level 3 adds
                 the sensor noise the gain brings up (sigma 6).
``jpeg``         a starved stream bitrate: JPEG quality 30, 20, 12.
``lowres``       a far face: shrunk to 32, 24, 16 px on its longest side and enlarged back.
``noise``        gain noise: Gaussian sigma 10, 25, 40 (0-255 scale).
===============  ===========================================================================================

:data:`ISSUE_CONDITIONS` are the six conditions of issue 21's table (grayscale, blur 2, dark 2.2 / 0.5,
JPEG 12, 24 px, noise 25), so its figures can be compared with ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "CORRUPTIONS",
    "ISSUE_CONDITIONS",
    "SEVERITIES",
    "Condition",
    "all_conditions",
    "corrupt",
    "parse_condition",
    "to_grayscale",
]

SEVERITIES = (1, 2, 3)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _check(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def _clip(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """RGB -> the BT.601 luma copied to three channels (what a black-and-white camera and
    ``cv2.COLOR_RGB2GRAY`` give)."""
    gray = cv2.cvtColor(np.ascontiguousarray(_check(image)), cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[:, :, None], 3, axis=2)


def grayscale(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return to_grayscale(image)


def infrared(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    image = _check(image).astype(np.float32)
    # near-infrared reflectance follows red most (skin is bright in NIR), green less, blue hardly
    weights = (0.6, 0.3, 0.1) if severity == 1 else (0.75, 0.2, 0.05)
    gray = image @ np.asarray(weights, dtype=np.float32)
    low, high = np.percentile(gray, (2, 98)) if gray.size else (0.0, 255.0)
    stretched = (gray - low) / max(high - low, 1.0)  # the automatic gain spreads what it sees
    gamma = (0.9, 0.8, 0.8)[severity - 1]
    gray = np.clip(stretched, 0, 1) ** gamma * 255.0
    height, width = gray.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.hypot((ys - height / 2) / max(height / 2, 1), (xs - width / 2) / max(width / 2, 1))
    falloff = (0.15, 0.3, 0.3)[severity - 1]
    gray = gray * (1.0 - falloff * np.clip(radius, 0, 1.5) ** 2)  # the illuminator's hot centre
    gray = gray + rng.normal(0.0, (4.0, 8.0, 8.0)[severity - 1], gray.shape)
    out = np.repeat(gray[:, :, None], 3, axis=2)
    if severity == 3:  # colour mode left on at night: a magenta cast over the grey picture
        out = out * np.asarray((1.08, 0.86, 1.1), dtype=np.float32) + np.asarray((10, -6, 12), dtype=np.float32)
    return _clip(out)


def blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = float(severity)
    return cv2.GaussianBlur(_check(image), (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised line kernel ``length`` px long at ``angle`` degrees (a straight streak)."""
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2
    dx, dy = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        kernel[round(float(centre + t * dy)), round(float(centre + t * dx))] = 1.0
    return kernel / kernel.sum()


def motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    length = (5, 9, 15)[severity - 1]
    kernel = motion_kernel(length, float(rng.uniform(0, 180)))
    return cv2.filter2D(_check(image), -1, kernel, borderType=cv2.BORDER_REFLECT)


def dark(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    gamma, exposure = ((1.5, 0.7), (2.2, 0.5), (2.2, 0.3))[severity - 1]
    out = (_check(image).astype(np.float32) / 255.0) ** gamma * exposure * 255.0
    if severity == 3:
        out = out + rng.normal(0.0, 6.0, out.shape)
    return _clip(out)


def jpeg(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = (30, 20, 12)[severity - 1]
    bgr = cv2.cvtColor(np.ascontiguousarray(_check(image)), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:  # pragma: no cover - OpenCV encodes and decodes any uint8 BGR image
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def lowres(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    side = (32, 24, 16)[severity - 1]
    height, width = _check(image).shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (10.0, 25.0, 40.0)[severity - 1]
    return _clip(_check(image).astype(np.float32) + rng.normal(0.0, sigma, image.shape))


#: name -> corruption, in the order tables list them
CORRUPTIONS: dict[str, Corruption] = {
    "grayscale": grayscale,
    "infrared": infrared,
    "blur": blur,
    "motion_blur": motion_blur,
    "dark": dark,
    "jpeg": jpeg,
    "lowres": lowres,
    "noise": noise,
}
ONE_LEVEL = frozenset({"grayscale"})  # corruptions with a single severity


@dataclass(frozen=True)
class Condition:
    """One corruption at one severity (``clean`` has none): the unit of the robustness tables."""

    name: str
    severity: int = 0

    @property
    def label(self) -> str:
        return self.name if self.name == "clean" or self.name in ONE_LEVEL else f"{self.name}-{self.severity}"

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return image if self.name == "clean" else corrupt(image, self.name, self.severity, rng)


CLEAN = Condition("clean")
#: issue 21's six conditions: grayscale, Gaussian blur 2, dark (gamma 2.2, half exposure), JPEG 12, 24 px, noise 25
ISSUE_CONDITIONS = (
    Condition("grayscale", 1),
    Condition("blur", 2),
    Condition("dark", 2),
    Condition("jpeg", 3),
    Condition("lowres", 2),
    Condition("noise", 2),
)


def all_conditions() -> list[Condition]:
    """Every corruption at every severity (grayscale once): the protocol's grid, clean excluded."""
    return [
        Condition(name, severity) for name in CORRUPTIONS for severity in ((1,) if name in ONE_LEVEL else SEVERITIES)
    ]


def parse_condition(label: str) -> Condition:
    """``clean``, ``grayscale`` or ``NAME-SEVERITY`` (e.g. ``jpeg-3``) -> Condition; ``ValueError`` otherwise."""
    if label == "clean":
        return CLEAN
    name, _, level = label.rpartition("-")
    if not name:
        name, level = label, "1"
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown condition {label!r}; corruptions: {', '.join(CORRUPTIONS)}")
    if not level.isdigit() or int(level) not in ((1,) if name in ONE_LEVEL else SEVERITIES):
        raise ValueError(f"condition {label!r}: severity must be one of {list(SEVERITIES)}")
    return Condition(name, int(level))


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` under corruption ``name`` at ``severity`` (1..3), same size, RGB uint8."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity}")
    return CORRUPTIONS[name](_check(image), severity, rng)
