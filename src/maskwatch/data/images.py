"""Safe image decoding: one place that turns any file or byte string into an RGB image, or a clear reason why not.

Every loader in maskwatch goes through :func:`decode_rgb` (numpy) or :func:`load_rgb` (PIL), so a zero-byte,
truncated, corrupt or non-image file, a decompression bomb or an exotic pixel mode is handled the same way
everywhere, whether it comes from a path, from bytes (an upload, a camera snapshot) or from an open file:
the input is reported and skipped, never a crash in the middle of an epoch. Transparency is flattened on
white and the EXIF orientation is applied, so the same picture gives the same pixels on every path.

Pixel limit (decompression bombs): :func:`max_pixels_limit` is the one configurable value (default
:data:`MAX_PIXELS`, environment variable ``MASKWATCH_MAX_PIXELS``, or the ``max_pixels`` argument of each
call). It is checked per call on the header, before any pixel is decoded, without touching process-global
state: PIL's own global check (``Image.MAX_IMAGE_PIXELS``) would have to be swapped around each call,
which is not thread-safe, so it is switched off once, here at import, and our per-call check replaces it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

# Images above this many pixels are refused as possible decompression bombs (about 8k x 8k); see
# max_pixels_limit() for how to change it.
MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "MASKWATCH_MAX_PIXELS"

# Truncated files must fail loudly, never be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# We check the pixel count ourselves, per call and thread-safely (see the module doc); PIL's global check
# would otherwise refuse or warn with a limit we cannot set per call.
Image.MAX_IMAGE_PIXELS = None

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image]


class BadImageError(ValueError):
    """A file that cannot be used as an image; ``reason`` is short and human-readable."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class TooManyPixelsError(BadImageError):
    """An image over the pixel limit (a possible decompression bomb), refused before decoding: its size and
    the limit in force, so that a caller with its own setting for the limit can name it."""

    def __init__(self, path: str | Path, width: int, height: int, limit: int):
        super().__init__(path, f"too many pixels ({width}x{height}), possible decompression bomb "
                               f"(limit {limit}; ${MAX_PIXELS_ENV} or max_pixels= changes it)")  # fmt: skip
        self.width, self.height, self.limit = width, height, limit


@dataclass(frozen=True)
class Skipped:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


def has_image_extension(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def max_pixels_limit(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force: ``max_pixels`` if given, else ``$MASKWATCH_MAX_PIXELS``, else :data:`MAX_PIXELS`.

    Read at call time, so tests and services can change it without reloading anything. A value ``<= 0``
    means no limit (None)."""
    if max_pixels is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if env:
            try:
                max_pixels = int(float(env))
            except ValueError as exc:
                raise ValueError(f"${MAX_PIXELS_ENV} must be a whole number of pixels, got {env!r}") from exc
        else:
            max_pixels = MAX_PIXELS
    return int(max_pixels) if int(max_pixels) > 0 else None


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


def _name_of(source: ImageInput) -> str:
    """How an input is named in error messages: its path, or what kind of input it was."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) and str(name) else f"<{type(source).__name__}>"


def _check_path(path: Path) -> None:
    if not has_image_extension(path):
        raise BadImageError(path, f"unknown image extension {path.suffix!r}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImageError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes)")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return "truncated image" if "truncated" in text.lower() else f"corrupt image ({text or type(exc).__name__})"


def _decode(source: ImageInput, max_pixels: int | None) -> Image.Image:
    """The one decoding path behind :func:`decode_rgb` and :func:`load_rgb`: open lazily (header only), check
    the pixel count against the limit, then decode, orient and convert to RGB."""
    name = _name_of(source)
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, (str, os.PathLike)):
        _check_path(Path(source))
        opener: Path | IO[bytes] | Image.Image = Path(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source) if isinstance(source, memoryview) else source
        if len(data) == 0:
            raise BadImageError(name, "empty file (0 bytes)")
        opener = io.BytesIO(data)
    elif isinstance(source, Image.Image) or hasattr(source, "read"):
        opener = source
    else:
        raise TypeError(f"expected a path, bytes, a binary file or a PIL image, got {type(source).__name__}")
    owned = not isinstance(opener, Image.Image)
    try:
        image = opener if isinstance(opener, Image.Image) else Image.open(opener)
    except UnidentifiedImageError as exc:
        raise BadImageError(name, "not an image or an unsupported format") from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise BadImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(name, _reason(exc)) from exc
    try:
        width, height = image.size
        if limit is not None and width * height > limit:
            raise TooManyPixelsError(name, width, height, limit)
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImageError(name, _reason(exc)) from exc
    finally:
        if owned:  # close the file we opened, keep the decoded pixels (unlike Image.close)
            image.__exit__(None, None, None)


def decode_rgb(source: ImageInput, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode a path, bytes (``bytes``, ``bytearray``, ``memoryview``), a binary file object or a PIL image
    into an upright HxWx3 uint8 RGB array, or raise :class:`BadImageError`.

    Alpha is flattened on white, the EXIF orientation applied; images over the pixel limit
    (:func:`max_pixels_limit`, or ``max_pixels`` for this call) are refused before decoding. The array is
    the caller's own (writable)."""
    return np.array(_decode(source, max_pixels), dtype=np.uint8)


def load_rgb(path: str | Path, *, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an upright RGB PIL image, or raise :class:`BadImageError` (the same decoding
    as :func:`decode_rgb`; it also accepts its other inputs)."""
    return _decode(path, max_pixels)


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


ACCEPTED_IMAGES = (
    "a path, encoded image bytes, a binary file, a PIL image, or a numpy array HxW (grayscale), HxWx1, HxWx3 "
    "(RGB) or HxWx4 (RGBA, flattened on white), uint8 0..255 or float (0..1 when its maximum is <= 1, else "
    "0..255)"
)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__module__}.{type(value).__name__}"


def is_single_image(value: object) -> bool:
    """Whether ``value`` is one image (as :func:`to_rgb_array` takes it) rather than a sequence of images."""
    if isinstance(value, np.ndarray):
        return value.ndim in (2, 3)
    return isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or hasattr(value, "read")


def to_rgb_array(image: object, *, max_pixels: int | None = None) -> np.ndarray:
    """Any reasonable image as an HxWx3 uint8 RGB array (see :data:`ACCEPTED_IMAGES`); anything else raises
    ``ValueError`` naming what was given and what is accepted. Paths, bytes, files and PIL images go through
    :func:`decode_rgb` (EXIF orientation, alpha on white, the pixel limit)."""
    if not isinstance(image, np.ndarray):
        if is_single_image(image):
            return decode_rgb(image, max_pixels=max_pixels)  # type: ignore[arg-type]
        if isinstance(image, (list, tuple)) or not hasattr(image, "__array__"):
            raise ValueError(f"expected one image: {ACCEPTED_IMAGES}; got {_describe(image)}")
        image = np.asarray(image)
    array: np.ndarray = image
    if array.size == 0 or array.ndim not in (2, 3):
        raise ValueError(f"expected one image: {ACCEPTED_IMAGES}; got {_describe(array)}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        hint = " (channels first? use array.transpose(1, 2, 0))" if array.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"expected 1, 3 or 4 channels last (HxWxC){hint}: {ACCEPTED_IMAGES}; got {_describe(array)}")
    if array.dtype == np.uint8:
        values = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"the image holds NaN or infinite values ({_describe(array)})")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ValueError(f"float pixel values must lie in 0..1 or 0..255, got {low:g}..{high:g}")
        scale = 255.0 if high <= 1.0 else 1.0
        values = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"pixel type {array.dtype} is not accepted: {ACCEPTED_IMAGES}; got {_describe(array)}")
    if values.ndim == 2:
        values = values[:, :, None]
    if values.shape[2] == 4:
        alpha = values[:, :, 3:4].astype(np.float32) / 255.0
        rgb = values[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return np.ascontiguousarray(values)
