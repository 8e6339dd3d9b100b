"""Grey (black-and-white, infrared) streams: told from colour ones frame by frame, with hysteresis, and turned
into the classifier's grayscale view."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_or_skip

from maskwatch.camera_color import ColorModeDetector, chroma_spread, is_grayscale, to_gray_faces
from maskwatch.data.corruptions import corrupt


def _colour_scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scene = np.zeros((120, 160, 3), dtype=np.uint8)
    for _ in range(12):  # patches of unrelated hues and brightness, as in a street
        x, y = rng.integers(0, 140), rng.integers(0, 100)
        scene[y : y + 30, x : x + 40] = rng.integers(0, 255, 3)
    return scene


def test_grey_and_cast_frames_are_grey_and_colour_frames_are_not():
    rng = np.random.default_rng(0)
    colour = _colour_scene()
    assert not is_grayscale(colour)
    assert is_grayscale(corrupt(colour, "grayscale", 1, rng))
    assert is_grayscale(corrupt(colour, "infrared", 2, rng))
    assert is_grayscale(corrupt(colour, "infrared", 3, rng))  # magenta cast: still a grey picture
    gray = corrupt(colour, "grayscale", 1, rng).astype(np.float32)
    tinted = np.clip(gray * (1.1, 0.9, 1.15) + (12, -5, 9), 0, 255).astype(np.uint8)  # another cast
    assert chroma_spread(tinted) < 1.0 < chroma_spread(colour)
    assert chroma_spread(np.zeros((10, 10), dtype=np.uint8)) == 0.0
    with pytest.raises(ValueError, match="HxWx3"):
        chroma_spread(np.zeros((4, 4, 4), dtype=np.uint8))


def test_the_stream_switches_only_after_several_frames_in_a_row():
    rng = np.random.default_rng(0)
    colour = _colour_scene()
    night = corrupt(colour, "infrared", 2, rng)
    detector = ColorModeDetector(switch_after=3)
    assert [detector.update(f) for f in (colour, night, night, colour, night)] == [False] * 5  # a blip: no switch
    assert [detector.update(night) for _ in range(3)] == [False, True, True]
    assert [detector.update(f) for f in (colour, colour, night, colour, colour, colour)] == [
        True, True, True, True, True, False]  # fmt: skip


def test_gray_faces_drop_the_cast_and_keep_the_size():
    rng = np.random.default_rng(0)
    faces = [corrupt(_colour_scene(i), "infrared", 3, rng) for i in range(3)]
    gray = to_gray_faces(faces)
    for before, after in zip(faces, gray):
        assert after.shape == before.shape and after.dtype == np.uint8
        assert np.array_equal(after[:, :, 0], after[:, :, 2]) and chroma_spread(after) < 1e-6


@pytest.mark.integration
def test_on_the_shared_scenes_colour_photos_are_rarely_called_grey():
    """The threshold's figures (models/MODEL_CARD.md): most colour scenes stay colour; their infrared and grey
    copies are all grey."""
    from maskwatch.data.images import load_rgb

    folder = shared_or_skip("scenes", "images")
    rng = np.random.default_rng(0)
    paths = sorted(folder.glob("*.jpg"))[::6]
    colour = [np.asarray(load_rgb(p)) for p in paths]
    called = np.mean([is_grayscale(im) for im in colour])
    assert called <= 0.05
    assert all(is_grayscale(corrupt(im, "infrared", level, rng)) for im in colour for level in (1, 2))
