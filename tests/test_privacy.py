"""Blurring: one box source (the frame's candidates, of which the faces that count are blurred) and one blur,
the same for a whole frame and for a cut-out of it."""

from __future__ import annotations

import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.detection.privacy import blur_faces, blur_regions, pixelate

rng = np.random.default_rng(0)
NOISE = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # every pixel differs from its neighbours


def texture(region: np.ndarray) -> float:
    return float(np.abs(np.diff(region.astype(np.int16), axis=1)).mean())


def candidates() -> Faces:
    """Two faces: the first counts, the second was a candidate under the score gate."""
    return Faces([[20, 20, 60, 60], [100, 40, 140, 80]], [0.9, 0.2], kept=[True, False])


def test_the_faces_that_count_are_blurred_and_nothing_else():
    faces = candidates()
    np.testing.assert_array_equal(blur_regions(faces), [[20, 20, 60, 60]])
    out = blur_faces(NOISE, faces)
    assert out.shape == NOISE.shape and out is not NOISE
    assert texture(out[25:55, 25:55]) < 0.2 * texture(NOISE[25:55, 25:55])  # the face is unreadable
    np.testing.assert_array_equal(out[45:75, 105:135], NOISE[45:75, 105:135])  # the candidate is not (yet)
    np.testing.assert_array_equal(out[100:, :], NOISE[100:, :])  # far from any face: untouched
    # grown by 20 % of the box on each side: 8 px around this 40 px face, and no further
    assert texture(out[13:17, 25:55]) < 0.5 * texture(NOISE[13:17, 25:55])
    np.testing.assert_array_equal(out[:11, :], NOISE[:11, :])


def test_a_cut_out_is_blurred_like_the_whole_frame():
    faces = candidates()
    whole = blur_faces(NOISE, faces)
    cut = blur_faces(NOISE[10:90, 10:90], faces, origin=(10, 10))
    np.testing.assert_array_equal(cut[10:50, 10:50], whole[20:60, 20:60])


def test_pixelate_hides_any_region_clipped_to_the_image():
    out = pixelate(NOISE, [(0.0, 0.0, 160.0, 120.0)], grow=0.0)
    assert texture(out) < 0.2 * texture(NOISE)
    assert pixelate(NOISE, [(150.0, 110.0, 400.0, 400.0)]).shape == NOISE.shape  # partly outside: clipped
    np.testing.assert_array_equal(pixelate(NOISE, []), NOISE)
