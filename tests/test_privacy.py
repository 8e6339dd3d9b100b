"""Recall-first blur (issue 19): one box source (every candidate of the frame, grown to the head, and the
boxes of faces the detector lost a moment ago) and one blur, the same for a whole frame and a cut-out of it;
privacy zones blacked out; what the evaluation counts as blurred is exactly what the blur changes."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.core.faces import Faces
from maskwatch.detection.evaluation import face_coverage, privacy_coverage
from maskwatch.detection.privacy import (
    BLUR_HOLD_S,
    HEAD_GROW,
    black_out,
    blur_faces,
    blur_mask,
    blur_regions,
    head_boxes,
    pixelate,
)
from maskwatch.detection.results import FrameResult

rng = np.random.default_rng(0)
NOISE = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # every pixel differs from its neighbours


def texture(region: np.ndarray) -> float:
    return float(np.abs(np.diff(region.astype(np.int16), axis=1)).mean())


def candidates() -> Faces:
    """Two faces: the first counts, the second was a candidate under the score gate."""
    return Faces([[20, 30, 60, 70], [100, 40, 140, 80]], [0.9, 0.05], kept=[True, False])


def result(faces: Faces, held: np.ndarray | None = None) -> FrameResult:
    extra = {} if held is None else {"held_boxes": held}
    return FrameResult(faces, width=160, height=120, **extra)


def test_every_candidate_is_blurred_grown_to_the_head():
    frame = result(candidates())
    np.testing.assert_allclose(blur_regions(frame), head_boxes(candidates().boxes))
    out = blur_faces(NOISE, frame)
    assert out.shape == NOISE.shape and out is not NOISE
    assert texture(out[35:65, 25:55]) < 0.2 * texture(NOISE[35:65, 25:55])  # the face that counts
    assert texture(out[45:75, 105:135]) < 0.2 * texture(NOISE[45:75, 105:135])  # the faint candidate too
    # grown to the head: above the brows (hair) and on each side (ears)
    side, top, _ = HEAD_GROW
    assert texture(out[int(30 - top * 40) + 1 : 28, 25:55]) < 0.5 * texture(NOISE[11:28, 25:55])
    assert texture(out[35:65, int(20 - side * 40) + 1 : 18]) < 0.5 * texture(NOISE[35:65, 11:18])
    np.testing.assert_array_equal(out[:, 77:84], NOISE[:, 77:84])  # between the two heads: untouched


def test_held_boxes_are_blurred_with_the_candidates():
    frame = result(Faces.empty(), held=np.array([[60.0, 40.0, 90.0, 70.0]]))
    out = blur_faces(NOISE, frame)
    assert texture(out[45:65, 65:85]) < 0.2 * texture(NOISE[45:65, 65:85])
    np.testing.assert_array_equal(blur_faces(NOISE, result(Faces.empty())), NOISE)  # nothing found, nothing held


def test_a_cut_out_is_blurred_like_the_whole_frame():
    frame = result(candidates())
    whole = blur_faces(NOISE, frame)
    cut = blur_faces(NOISE[0:95, 2:92], frame, origin=(2, 0))  # holds the first head whole
    np.testing.assert_array_equal(cut[30:65, 18:58], whole[30:65, 20:60])
    assert texture(cut[30:65, 18:58]) < 0.2 * texture(NOISE[30:65, 20:60])


def test_the_blur_mask_is_what_the_blur_changes():
    frame = result(candidates(), held=np.array([[0.5, 100.3, 9.7, 119.9]]))
    changed = (blur_faces(NOISE, frame) != NOISE).any(axis=2)
    mask = blur_mask(blur_regions(frame), 160, 120)
    assert not (changed & ~mask).any()  # nothing changed outside the mask
    assert changed[mask].mean() > 0.9  # and (nearly) all of it changed (a blurred pixel may keep its value)


def test_face_coverage_and_privacy_coverage_by_size():
    mask = np.zeros((100, 100), dtype=bool)
    mask[0:50, 0:50] = True
    cover = face_coverage(mask, np.array([[0, 0, 40, 40], [30, 30, 70, 70], [90, 90, 90.2, 90.2]]))
    np.testing.assert_allclose(cover, [1.0, 0.25, 0.0])
    # a frame with a big face blurred and a small one missed
    faces = Faces([[10, 10, 50, 50]], [0.9])
    frame = FrameResult(faces, width=100, height=100)
    got = privacy_coverage([frame], [[("face", (10, 10, 50, 50)), ("face", (80, 80, 90, 90))]])
    assert got["privacy_coverage"][">=20"] == 1.0 and got["privacy_coverage"]["<20"] == 0.0
    assert got["n_faces_by_bucket"]["<20"] == 1
    assert 0 < got["blurred_area_share"] < 0.5


def test_black_out_paints_the_zones_at_any_resolution():
    zone = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]
    out = black_out(NOISE, [zone])
    assert not out[:59, :79].any()  # the top-left quarter is black
    np.testing.assert_array_equal(out[62:, :], NOISE[62:, :])
    np.testing.assert_array_equal(out[:, 82:], NOISE[:, 82:])
    assert black_out(NOISE, []) is NOISE
    big = np.repeat(np.repeat(NOISE, 2, axis=0), 2, axis=1)
    assert not black_out(big, [zone])[:118, :158].any()  # fractions of the frame: the same quarter


def test_pixelate_hides_any_region_clipped_to_the_image():
    out = pixelate(NOISE, [(0.0, 0.0, 160.0, 120.0)], grow=0.0)
    assert texture(out) < 0.2 * texture(NOISE)
    assert pixelate(NOISE, [(150.0, 110.0, 400.0, 400.0)]).shape == NOISE.shape  # partly outside: clipped
    np.testing.assert_array_equal(pixelate(NOISE, []), NOISE)


def test_the_blur_hold_keeps_a_lost_face_for_about_a_second():
    pytest.importorskip("edgefirst.tracker")
    from maskwatch.stream.privacy import BlurHold

    hold = BlurHold()
    fps = 10.0
    face = Faces([[40, 40, 60, 60]], [0.08])  # a faint face: under the counting gate, it still starts a track
    for k in range(5):
        assert len(hold.update(face, k / fps)) == 0  # seen: its own box is blurred, nothing held
    held_for = []
    for k in range(5, 30):  # the detector loses it
        held = hold.update(Faces.empty(), k / fps)
        if len(held):
            assert held.shape == (1, 4)
            assert box_iou_one(held[0], [40, 40, 60, 60]) > 0.5  # where it was (a still face)
            held_for.append(k)
    assert held_for and held_for[0] == 5  # held from the first frame it is lost
    assert (held_for[-1] - 4) / fps == pytest.approx(BLUR_HOLD_S, abs=0.11)  # about a second, then let go
    # time running backwards (a looping file): the hold starts afresh
    assert len(hold.update(Faces.empty(), 0.0)) == 0


def box_iou_one(a: np.ndarray, b: list[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area)


def test_a_source_blacks_out_its_zones_before_analysis():
    from maskwatch.stream.privacy import SourcePrivacy
    from maskwatch.stream.sources import Frame

    privacy = SourcePrivacy.for_source([[(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]], sequence=False)
    frame = Frame(NOISE, "x.jpg", 0)
    out = privacy.black_out(frame)
    assert not out.image[:, 81:].any()
    np.testing.assert_array_equal(out.image[:, :79], NOISE[:, :79])
    assert privacy.held(candidates(), 0.0).shape == (0, 4)  # still images: no hold
    assert SourcePrivacy.for_source(None, sequence=False).black_out(frame) is frame


def test_a_blurred_head_next_to_a_zone_does_not_smear_into_it():
    zone = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]  # the lower half
    image = black_out(NOISE, [zone])
    frame = FrameResult(Faces([[40, 20, 80, 60]], [0.9]), width=160, height=120, privacy_zones=[zone])
    out = blur_faces(image, frame)  # the head grows 15 % below the chin, into the zone
    assert not out[60:].any()
    assert texture(out[25:55, 45:75]) < 0.2 * texture(NOISE[25:55, 45:75])
    cut = blur_faces(image[10:100, 20:120], frame, origin=(20, 10))  # a cut-out: the zone in its place
    assert not cut[50:].any()
