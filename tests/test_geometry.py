"""Box geometry: one framing for training crops and deployment crops, IoU, NMS, detector box finishing.
(That it imports numpy only is checked with the other leaf modules in test_light_imports.py.)"""

from __future__ import annotations

import numpy as np

from maskwatch.core.geometry import adjust_boxes, box_iou, crop_box, finish_boxes, grow_box, nms


def test_grow_then_clip():
    assert grow_box((100, 50, 140, 98), 0.15) == (94, 43, 146, 105)  # 6 px and 7.2 px per side, rounded
    assert crop_box((100, 50, 140, 98), 0.15, 1000, 1000) == (94, 43, 146, 105)
    assert crop_box((0, 0, 10, 10), 0.5, 12, 12) == (0, 0, 12, 12)
    left, top, right, bottom = crop_box((20, 20, 30, 30), 0.0, 10, 10)  # outside the image
    assert right > left and bottom > top  # never an empty slice
    # outward: the pixels cover the grown box entirely (what a blurred region needs), still clipped
    assert grow_box((10.4, 10.6, 20.2, 20.5), 0.0) == (10, 11, 20, 20)
    assert grow_box((10.4, 10.6, 20.2, 20.5), 0.0, outward=True) == (10, 10, 21, 21)
    assert crop_box((0.5, 1.5, 9.5, 9.5), 0.1, 9, 20, outward=True) == (0, 0, 9, 11)


def test_iou_and_nms():
    a = np.array([[0, 0, 10, 10]])
    np.testing.assert_allclose(box_iou(a, [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]), [[1, 1 / 3, 0]])
    assert box_iou(np.zeros((0, 4)), a).shape == (0, 1)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    assert nms(boxes, np.array([0.8, 0.9, 0.7]), 0.3).tolist() == [1, 2]


def test_finish_boxes_adjusts_clips_filters_and_leaves_the_input_alone():
    boxes = np.array([[-5.0, 10, 15, 30], [50, 50, 52, 52]])
    original = boxes.copy()
    out, ok = finish_boxes(boxes, 40, 40, None, min_face=5)
    assert out[0].tolist() == [0, 10, 15, 30] and ok.tolist() == [True, False]
    np.testing.assert_array_equal(boxes, original)
    moved = adjust_boxes(np.array([[0.0, 0, 10, 20]]), (0.1, 0.0, 2.0, 1.0))
    assert moved[0].tolist() == [-4.0, 0.0, 16.0, 20.0]
