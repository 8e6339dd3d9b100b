"""Faces, the columnar currency: one mask selects every column, empty and concatenated faces keep their
shapes, counts and compliance follow the labels, and the row views read the same arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maskwatch.core.faces import NO_TRACK, Faces, FaceView

CLASSES = ("with_mask", "without_mask")


def sample() -> Faces:
    """Three faces: masked (0.9), unmasked (0.8), and one not classified; the second is tracked."""
    marks = np.arange(30, dtype=float).reshape(3, 5, 2)
    return Faces(
        [[0, 0, 10, 10], [20, 20, 40, 50], [60, 0, 70, 8]],
        [0.9, 0.6, 0.2],
        marks,
        classes=CLASSES,
        probabilities=[[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]],
        track_ids=[NO_TRACK, 7, NO_TRACK],
        track_probabilities=[[np.nan, np.nan], [0.3, 0.7], [np.nan, np.nan]],
        classified=[True, True, False],
        kept=[True, True, False],
    )


def test_a_mask_selects_every_column_alike():
    faces = sample()
    kept = faces[faces.kept]
    assert len(kept) == 2 and kept.classes == CLASSES
    np.testing.assert_array_equal(kept.boxes, faces.boxes[:2])
    np.testing.assert_array_equal(kept.landmarks, faces.landmarks[:2])
    np.testing.assert_array_equal(kept.track_ids, [NO_TRACK, 7])
    np.testing.assert_array_equal(kept.classified, [True, True])
    np.testing.assert_array_equal(kept.probabilities, [[0.9, 0.1], [0.2, 0.8]])
    # indices (in any order) and slices select the same way; an int gives one face's view
    flipped = faces[[2, 0]]
    np.testing.assert_array_equal(flipped.scores, [0.2, 0.9])
    assert faces[1:][0].track_id == 7 and faces[-1].label is None
    assert faces[np.array([], dtype=int)] == Faces.empty(CLASSES)
    with pytest.raises(IndexError, match="one value per face"):
        faces[np.array([True, False])]
    with pytest.raises(IndexError):
        faces[3]


def test_derived_columns_and_counts():
    faces = sample()
    np.testing.assert_array_equal(faces.labels, [0, 1, -1])
    assert faces.label_names == ["with_mask", "without_mask", None]
    np.testing.assert_allclose(faces.confidence, [0.81, 0.48, np.nan])
    np.testing.assert_array_equal(faces.sizes, [10, 30, 10])
    np.testing.assert_array_equal(faces.tracked, [False, True, False])
    np.testing.assert_array_equal(faces.shown_labels, [0, 1, -1])  # the track's verdict for the tracked face
    assert faces.counts() == {"with_mask": 1, "without_mask": 1}  # the unclassified face is not counted
    assert faces.compliance() == 0.5
    assert faces.compliance(["with_mask", "without_mask"]) == 1.0  # the model's compliant classes decide
    assert faces[faces.labels == 0].compliance() == 1.0
    assert Faces.empty(CLASSES).counts() == {"with_mask": 0, "without_mask": 0}
    assert Faces.empty(CLASSES).compliance() is None


def test_empty_faces_keep_their_shapes():
    empty = Faces.empty(CLASSES)
    assert len(empty) == 0 and not empty
    assert empty.boxes.shape == (0, 4) and empty.landmarks.shape == (0, 5, 2)
    assert empty.probabilities.shape == (0, 2) and empty.track_probabilities.shape == (0, 2)
    assert list(empty) == [] and empty.labels.shape == (0,)
    assert empty[empty.kept] == empty


def test_concatenation_and_class_widening():
    faces = sample()
    detector_faces = Faces([[1, 2, 3, 4]], [0.5])  # a detector's: no classes, kept, not classified
    assert detector_faces.probabilities.shape == (1, 0) and detector_faces.kept.all()
    both = Faces.concat([faces, detector_faces])
    assert len(both) == 4 and both.classes == CLASSES
    assert np.isnan(both.probabilities[3]).all() and both.track_ids[3] == NO_TRACK and both[3].label is None
    np.testing.assert_array_equal(both[:3].boxes, faces.boxes)
    assert Faces.concat([], classes=CLASSES) == Faces.empty(CLASSES)
    assert Faces.concat([faces[:1], faces[1:]]) == faces
    with pytest.raises(ValueError, match="different classes"):
        Faces.concat([faces, Faces.empty(["mask", "no_mask"])])
    widened = detector_faces.with_classes(CLASSES)
    assert widened.probabilities.shape == (1, 2) and widened.with_classes(CLASSES) is widened
    with pytest.raises(ValueError, match="classes"):
        faces.with_classes(["a", "b", "c"])


def test_replace_and_put_make_checked_copies():
    faces = sample()
    dropped = faces.replace(kept=np.zeros(3, dtype=bool))
    assert not dropped.kept.any() and faces.kept.sum() == 2  # the original is left alone
    with pytest.raises(ValueError, match="shape"):
        faces.replace(scores=[1.0])
    with pytest.raises(TypeError, match="unknown"):
        faces.replace(colour=[1, 2, 3])
    with pytest.raises(AttributeError, match="immutable"):
        faces.scores = np.zeros(3)  # type: ignore[misc]
    tracked = faces[[0]].replace(track_ids=[42])
    merged = faces.put([0], tracked)
    np.testing.assert_array_equal(merged.track_ids, [42, 7, NO_TRACK])
    assert faces.track_ids[0] == NO_TRACK
    np.testing.assert_array_equal(faces.put(faces.kept, faces[faces.kept]).scores, faces.scores)
    with pytest.raises(ValueError, match="rows"):
        faces.put([0, 1], tracked)


def test_constructor_checks_every_column():
    with pytest.raises(ValueError, match="scores"):
        Faces([[0, 0, 1, 1]], [0.5, 0.6])
    with pytest.raises(ValueError, match="probabilities"):
        Faces([[0, 0, 1, 1]], [0.5], classes=CLASSES, probabilities=[[0.5, 0.3, 0.2]])
    with pytest.raises(ValueError, match="landmarks"):
        Faces([[0, 0, 1, 1]], [0.5], np.zeros((1, 4, 2)))


def test_row_views_read_the_columns():
    faces = sample()
    views = list(faces)
    assert all(isinstance(v, FaceView) for v in views) and [v.index for v in views] == [0, 1, 2]
    masked, unmasked, unknown = views
    assert masked.box == (0.0, 0.0, 10.0, 10.0) and masked.score == 0.9
    assert (masked.label, masked.probability) == ("with_mask", 0.9)
    assert masked.probabilities == {"with_mask": 0.9, "without_mask": 0.1}
    assert masked.confidence == pytest.approx(0.81) and masked.size == 10.0
    assert masked.track_id is None and masked.track_label is None and masked.classified and masked.kept
    assert unmasked.track_id == 7 and unmasked.track_label == "without_mask" and unmasked.track_probability == 0.7
    assert unknown.label is None and unknown.probability is None and unknown.probabilities == {}
    assert not unknown.kept and unknown.confidence is None
    np.testing.assert_array_equal(unknown.landmarks, faces.landmarks[2])
    record = json.loads(json.dumps(unmasked.to_dict()))
    assert record["track_id"] == 7 and record["track_label"] == "without_mask" and record["box"] == [20, 20, 40, 50]
    assert set(masked.to_dict()) == {"box", "score", "label", "probability", "probabilities", "confidence", "landmarks"}


def test_equality_compares_every_column_and_copies_are_equal():
    import copy
    import pickle

    assert sample() == sample() == pickle.loads(pickle.dumps(sample())) == copy.deepcopy(sample())
    assert sample() != sample().replace(classified=[True, True, True])
    assert sample() != sample()[:2]
