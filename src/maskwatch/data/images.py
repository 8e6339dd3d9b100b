"""Safe image decoding: one place that turns any file into an RGB image or a clear reason why not.

Every loader in maskwatch goes through :func:`load_rgb`, so a zero-byte, truncated, corrupt or
non-image file, a decompression bomb or an exotic pixel mode is handled the same way everywhere:
the file is reported and skipped, never a crash in the middle of an epoch.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

# Images above this many pixels are refused as possible decompression bombs (about 8k x 8k).
MAX_PIXELS = 64_000_000

# Truncated files must fail loudly, never be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImageError(ValueError):
    """A file that cannot be used as an image; ``reason`` is short and human-readable."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Skipped:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


def has_image_extension(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is flattened on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        span = float(array.max() - array.min()) or 1.0
        return Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an upright RGB image, or raise :class:`BadImageError`.

    Applies the EXIF orientation, so a phone photo taken sideways arrives upright.
    """
    path = Path(path)
    if not has_image_extension(path):
        raise BadImageError(path, f"unknown image extension {path.suffix!r}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            # PIL only warns between MAX_PIXELS and 2x; treat the warning as the error it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(path, f"too many pixels, possible decompression bomb (limit {MAX_PIXELS})") from exc
    except UnidentifiedImageError as exc:
        raise BadImageError(path, "not an image or an unsupported format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        reason = "truncated image" if "truncated" in text.lower() else f"corrupt image ({text or type(exc).__name__})"
        raise BadImageError(path, reason) from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def try_load_rgb(path: str | Path) -> tuple[Image.Image | None, Skipped | None]:
    """:func:`load_rgb` that returns the failure instead of raising."""
    try:
        return load_rgb(path), None
    except BadImageError as exc:
        return None, Skipped(exc.path, exc.reason)


def check_images(paths: Sequence[str | Path], workers: int = 2) -> list[Skipped]:
    """Fully decode every file (in threads) and return the ones that are unusable."""

    def check(path: str | Path) -> Skipped | None:
        return try_load_rgb(path)[1]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results: Iterable[Skipped | None] = pool.map(check, paths)
        return [r for r in results if r is not None]
