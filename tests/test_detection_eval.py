"""Detection evaluation on tiny hand-made sets whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maskwatch.data.voc import read_voc
from maskwatch.detection.evaluation import (
    average_precision,
    evaluate_detection,
    match_greedy,
    voc_target,
)
from maskwatch.detection.geometry import box_iou

CLASSES = ["with_mask", "without_mask"]


def _pred(boxes, scores, labels=None):
    d = {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "scores": np.array(scores, dtype=float)}
    if labels is not None:
        d["labels"] = labels
    return d


def _gt(boxes, labels):
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": labels}


def test_read_voc(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>100</width><height>80</height><depth>3</depth></size>"
        "<object><name>with_mask</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>45</ymax>"
        "</bndbox></object>"
        "<object><name> without_mask </name><bndbox><xmin>60</xmin><ymin>50</ymin><xmax>40</xmax>"
        "<ymax>30</ymax></bndbox></object></annotation>"
    )
    assert read_voc(xml) == [("with_mask", (10.0, 20.0, 30.0, 45.0)), ("without_mask", (40.0, 30.0, 60.0, 50.0))]
    target = voc_target(read_voc(xml))
    assert target["labels"] == ["with_mask", "without_mask"] and target["boxes"].shape == (2, 4)


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_greedy_matching_by_score():
    gt = np.array([[0, 0, 10, 10], [8, 0, 18, 10]], dtype=float)
    # the best-scored prediction overlaps both ground truths and takes the one it overlaps most (the second);
    # the next one then gets the first; a duplicate of the first is left unmatched
    pred = np.array([[7, 0, 17, 10], [1, 0, 11, 10], [0, 0, 10, 10]], dtype=float)
    gt_m, pred_m = match_greedy(pred, np.array([0.9, 0.8, 0.7]), gt, 0.5)
    assert gt_m.tolist() == [True, True] and pred_m.tolist() == [True, True, False]


def test_perfect_predictions():
    gts = [
        _gt([[10, 10, 40, 40], [100, 10, 150, 60]], ["with_mask", "without_mask"]),
        _gt([[0, 0, 70, 80]], ["with_mask"]),
    ]
    preds = [_pred(g["boxes"], [0.9] * len(g["labels"]), g["labels"]) for g in gts]
    r = evaluate_detection(preds, gts, CLASSES)
    assert r["map50"] == pytest.approx(1.0)
    assert r["ap50"] == pytest.approx({"with_mask": 1.0, "without_mask": 1.0})
    assert r["ap50_face"] == pytest.approx(1.0)
    assert r["precision"] == 1.0 and r["recall"]["all"] == 1.0 and r["count_mae"] == 0.0
    assert r["n_images"] == 2 and r["n_faces"] == 3


def test_false_positive_ranked_first_halves_ap():
    # one face; a false positive (score 0.9) outranks the true positive (0.8): precision 0.5 at every recall
    gts = [_gt([[10, 10, 50, 50]], ["with_mask"]), _gt([], [])]
    preds = [_pred([[200, 200, 240, 240], [10, 10, 50, 50]], [0.9, 0.8], [0, 0]), _pred([], [], [])]
    r = evaluate_detection(preds, gts, CLASSES)
    assert r["ap50"]["with_mask"] == pytest.approx(0.5)
    assert math.isnan(r["ap50"]["without_mask"])  # no ground truth: undefined, left out of the mean
    assert r["map50"] == pytest.approx(0.5)
    assert r["precision"] == pytest.approx(0.5) and r["recall"]["all"] == 1.0
    assert r["count_mae"] == pytest.approx(0.5)  # |2 - 1| and |0 - 0|


def test_ap_is_coco_101_point():
    # two faces, ranked TP (0.9), FP (0.8), TP (0.7): (recall, precision) = (.5, 1), (.5, .5), (1, 2/3).
    # Interpolated precision is 1 for recall <= 0.5 (51 of the 101 points) and 2/3 above (50 points):
    # COCO gives (51 + 50 * 2/3) / 101 = 0.83498; VOC all-point would give 0.5 + 0.5 * 2/3 = 0.83333.
    gts = [_gt([[0, 0, 30, 30], [100, 0, 130, 30]], ["with_mask", "with_mask"])]
    preds = [_pred([[0, 0, 30, 30], [300, 300, 330, 330], [100, 0, 130, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    ap = average_precision(preds, gts, CLASSES)["with_mask"]
    assert ap == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert ap != pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-3)


def test_wrong_class_is_a_miss_and_a_false_positive():
    gts = [_gt([[0, 0, 30, 30], [50, 0, 80, 30]], ["with_mask", "without_mask"])]
    preds = [_pred([[0, 0, 30, 30], [50, 0, 80, 30]], [0.9, 0.8], ["without_mask", "without_mask"])]
    r = evaluate_detection(preds, gts, CLASSES)
    assert r["ap50"]["with_mask"] == 0.0
    # without_mask: FP (0.9) then TP (0.8): precision 0.5 everywhere
    assert r["ap50"]["without_mask"] == pytest.approx(0.5)
    assert r["map50"] == pytest.approx(0.25)
    assert r["recall"]["all"] == 1.0 and r["ap50_face"] == pytest.approx(1.0)  # class-agnostic: all found


def test_labels_as_indices_or_names_agree():
    gts = [_gt([[0, 0, 30, 30], [50, 0, 80, 30]], ["with_mask", "without_mask"])]
    names = [_pred([[0, 0, 30, 30], [50, 0, 80, 30]], [0.9, 0.6], ["with_mask", "with_mask"])]
    indices = [_pred([[0, 0, 30, 30], [50, 0, 80, 30]], [0.9, 0.6], [0, 0])]
    assert evaluate_detection(names, gts, CLASSES)["ap50"] == evaluate_detection(indices, gts, CLASSES)["ap50"]
    # a predicted name outside the class list is left out (like ground truth of other classes); a bad index fails
    ignored = average_precision([_pred([[0, 0, 30, 30], [9, 9, 19, 19]], [0.9, 0.95], [0, "beard"])], gts, CLASSES)
    assert ignored["with_mask"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside"):
        average_precision([_pred([[0, 0, 1, 1]], [1.0], [5])], gts, CLASSES)


def test_recall_by_size_bucket_and_iou():
    # ground-truth faces with longest sides 10, 25, 40 and 100 px
    gt_boxes = [[0, 0, 10, 8], [100, 0, 125, 20], [200, 0, 240, 40], [300, 0, 400, 90]]
    gts = [_gt(gt_boxes, ["with_mask"] * 4)]
    # exact hits on the 25 px and 100 px faces; the 40 px face only at IoU 920/2280 = 0.40
    preds = [_pred([[100, 0, 125, 20], [300, 0, 400, 90], [200, 17, 240, 57]], [0.9, 0.8, 0.7])]
    r = evaluate_detection(preds, gts, CLASSES)
    assert r["recall"] == pytest.approx(
        {"<20": 0.0, "20-32": 1.0, "32-64": 0.0, ">=64": 1.0, ">=20": 2 / 3, "all": 0.5}
    )
    assert r["recall_iou30"] == pytest.approx(
        {"<20": 0.0, "20-32": 1.0, "32-64": 1.0, ">=64": 1.0, ">=20": 1.0, "all": 0.75}
    )
    assert r["precision"] == pytest.approx(2 / 3) and r["precision_iou30"] == pytest.approx(1.0)
    assert r["n_faces_by_bucket"] == {"<20": 1, "20-32": 1, "32-64": 1, ">=64": 1, ">=20": 3, "all": 4}
    # no labels predicted: only the class-agnostic metrics
    assert r["map50"] is None and r["ap50"] == {}
    assert 0 < r["ap50_face"] < 1


def test_count_error_and_voc_ground_truth_lists():
    gts = [
        [("with_mask", (0, 0, 20, 20)), ("with_mask", (30, 0, 50, 20)), ("without_mask", (60, 0, 80, 20))],
        [("with_mask", (0, 0, 40, 40))],
    ]
    preds = [
        _pred([[0, 0, 20, 20]], [0.9], [0]),
        _pred([[0, 0, 40, 40], [100, 100, 140, 140]], [0.9, 0.3], [0, 1]),
    ]
    r = evaluate_detection(preds, gts, CLASSES)
    assert r["count_mae"] == pytest.approx((2 + 1) / 2)
    assert r["n_faces"] == 4 and r["n_predictions"] == 3
    assert r["recall"]["all"] == pytest.approx(0.5) and r["precision"] == pytest.approx(2 / 3)
    # with_mask: 3 faces, two TPs ranked first: recall 2/3 at precision 1, never more → 67/101
    assert r["ap50"]["with_mask"] == pytest.approx(67 / 101)
    assert r["ap50"]["without_mask"] == 0.0  # its only prediction is a false positive


def test_no_predictions_at_all():
    gts = [_gt([[0, 0, 30, 30]], ["with_mask"])]
    r = evaluate_detection([_pred([], [], [])], gts, CLASSES)
    assert r["ap50"]["with_mask"] == 0.0 and r["map50"] == 0.0
    assert r["recall"]["all"] == 0.0 and math.isnan(r["precision"]) and r["count_mae"] == 1.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        evaluate_detection([], [_gt([[0, 0, 1, 1]], ["with_mask"])], CLASSES)
