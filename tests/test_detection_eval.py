"""Detection evaluation on tiny hand-made sets whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maskwatch.core.geometry import box_iou
from maskwatch.data.voc import read_voc
from maskwatch.detection.evaluation import (
    average_precision,
    evaluate_detection,
    match_greedy,
    voc_target,
)

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


# -- evaluate_voc on one split's images, and a 3-class model (tiny generated VOC sets, fake models) --------


def _write_voc(folder, name, image, objects) -> None:
    from fakes import save_rgb

    save_rgb(folder / "images" / f"{name}.png", image)
    body = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for label, (x0, y0, x1, y1) in objects
    )
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.png</filename>{body}</annotation>"
    )


def _split_voc(tmp_path):
    """Three annotated images and one without annotation; the lists put ``a`` in train, ``b`` and ``c`` in valid.
    Only ``a`` holds an unmasked face, so a result that saw it cannot be a valid-only one."""
    from fakes import GREEN, RED, scene

    data = tmp_path / "voc"
    _write_voc(data, "a", scene([(20, 20, 40, RED)]), [("without_mask", (20, 20, 60, 60))])
    _write_voc(data, "b", scene([(20, 20, 40, GREEN)]), [("with_mask", (20, 20, 60, 60))])
    _write_voc(data, "c", scene([(100, 60, 30, GREEN), (20, 20, 40, GREEN)]),
               [("with_mask", (100, 60, 130, 90)), ("with_mask", (20, 20, 60, 60))])  # fmt: skip
    from fakes import save_rgb

    save_rgb(data / "images" / "unannotated.png", scene([]))
    lists = tmp_path / "splits"
    lists.mkdir()
    (lists / "train.txt").write_text("a\n")
    (lists / "valid.txt").write_text("b\nc  # two faces\n")
    (lists / "test.txt").write_text("")
    return data, lists


def test_evaluate_voc_scores_one_split_only_and_says_which(tmp_path):
    from fakes import fake_detector

    from maskwatch.detection.evaluation import ImageSubset, evaluate_voc

    data, lists = _split_voc(tmp_path)
    valid = ImageSubset.from_split_lists(lists, "valid")
    m = evaluate_voc(fake_detector(), data, images=valid)
    assert (m["n_images"], m["n_faces"]) == (2, 3)
    assert m["images"] == {"split": "valid", "list": str(lists / "valid.txt"), "n_listed": 2}
    assert m["ap50"]["without_mask"] is None  # its only face is in train: not scored
    assert m["skipped"] == []  # images outside the split are not 'skipped', they are not asked for
    # plain stems work too; the whole folder says no split
    assert evaluate_voc(fake_detector(), data, images=["a.png"])["n_faces"] == 1
    whole = evaluate_voc(fake_detector(), data)
    assert whole["n_images"] == 3 and whole["images"]["split"] is None
    # a listed image without an annotation is reported (and fails the command, see below)
    m = evaluate_voc(fake_detector(), data, images=["b", "zzz"])
    assert m["n_images"] == 1 and [s["reason"] for s in m["skipped"]] == ["listed image without an annotation"]
    with pytest.raises(ValueError, match="no 'dev' split"):
        ImageSubset.from_split_lists(lists, "dev")
    with pytest.raises(ValueError, match="listed images"):
        evaluate_voc(fake_detector(), data, images=["nothing"])


@pytest.fixture
def fake_load(monkeypatch):
    """``MaskDetector.load`` returns the fake pipeline (3 classes when the model path names 'three')."""
    from fakes import BlobFinder, ColourClassifier, ThreeColourClassifier

    from maskwatch.detection.pipeline import MaskDetector

    def load(cls, model=None, *, backend=None, preset="accurate", detector_model=None, candidate_threshold=0.1,
             threads=2, **options):  # fmt: skip
        options.setdefault("scales", preset)
        classifier = ThreeColourClassifier() if model is not None and "three" in str(model) else ColourClassifier()
        return MaskDetector(classifier, BlobFinder(), box_adjust=None, **options)

    monkeypatch.setattr(MaskDetector, "load", classmethod(load))


def test_evaluate_detection_command_takes_a_split(tmp_path, fake_load):
    import json

    from typer.testing import CliRunner

    from maskwatch.cli import app

    runner = CliRunner()
    data, lists = _split_voc(tmp_path)
    out = tmp_path / "m.json"
    args = ["evaluate-detection", "--data", str(data), "--json", str(out), "--preset", "fast", "--no-progress"]
    res = runner.invoke(app, [*args, "--splits", str(lists), "--split", "valid", "--report", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert m["images"]["split"] == "valid" and m["images"]["n_listed"] == 2 and m["n_images"] == 2
    assert "(valid)" in res.output and "split valid" in (tmp_path / "r.html").read_text()
    for extra, message in ((["--split", "valid"], "go together"), (["--splits", str(lists)], "go together"),
                           (["--splits", str(lists), "--split", "dev"], "no 'dev' split")):  # fmt: skip
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    (lists / "valid.txt").write_text("b\nmissing\n")
    res = runner.invoke(app, [*args, "--splits", str(lists), "--split", "valid"])
    assert res.exit_code == 1 and "listed image without an annotation" in " ".join(res.output.split())


def _three_class_voc(tmp_path):
    from fakes import BLUE, GREEN, RED, scene

    data = tmp_path / "voc3"
    _write_voc(data, "one", scene([(20, 20, 40, GREEN), (120, 30, 40, BLUE)]),
               [("with_mask", (20, 20, 60, 60)), ("mask_weared_incorrect", (120, 30, 160, 70))])  # fmt: skip
    _write_voc(data, "two", scene([(30, 30, 50, RED), (150, 120, 36, BLUE)]),
               [("without_mask", (30, 30, 80, 80)), ("mask_weared_incorrect", (150, 120, 186, 156))])  # fmt: skip
    return data


def test_a_three_class_model_gets_the_third_class_ap_beside_the_two_class_map(tmp_path, fake_load):
    import json

    from fakes import fake_detector, fake_three_class_detector
    from typer.testing import CliRunner

    from maskwatch.cli import app
    from maskwatch.detection.evaluation import evaluate_voc

    data = _three_class_voc(tmp_path)
    m = evaluate_voc(fake_three_class_detector(), data)
    assert m["ap50"] == pytest.approx({"with_mask": 1.0, "without_mask": 1.0, "mask_weared_incorrect": 1.0})
    assert m["map_classes"] == ["with_mask", "without_mask"] and m["map50"] == pytest.approx(1.0)
    assert m["map_all_classes"] == [*CLASSES, "mask_weared_incorrect"] and m["map50_all"] == pytest.approx(1.0)
    # a 2-class model calls the blue faces something else: no third AP, and the 2-class mAP pays for it
    two = evaluate_voc(fake_detector(), data)
    assert "mask_weared_incorrect" not in two["ap50"] and two["map50_all"] == two["map50"] < 1.0
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["evaluate-detection", "--data", str(data), "--json", str(out), "--model",
                                   str(tmp_path / "three.onnx"), "--preset", "fast", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    printed = " ".join(res.output.split())
    assert "AP50 mask_weared_incorrect 1.000" in printed and "mAP50 over all 3 classes 1.000" in printed
    assert json.loads(out.read_text())["ap50"]["mask_weared_incorrect"] == pytest.approx(1.0)


def test_evaluate_voc_reports_privacy_coverage_by_size(tmp_path):
    from fakes import fake_detector

    from maskwatch.detection.evaluation import evaluate_voc

    data, _ = _split_voc(tmp_path)
    m = evaluate_voc(fake_detector(), data)
    assert set(m["privacy_coverage"]) == set(m["recall"])  # the same size keys
    assert m["privacy_coverage"]["all"] == 1.0  # every square is found, and blurred
    assert 0 < m["blurred_area_share"] < 0.5
    assert m["privacy"]["cover"] == 0.9


def test_privacy_coverage_on_videos_made_from_the_images(tmp_path):
    pytest.importorskip("edgefirst.tracker")
    from fakes import fake_detector

    from maskwatch.stream.privacy import evaluate_privacy_video, video_from_image

    data, _ = _split_voc(tmp_path)
    m = evaluate_privacy_video(fake_detector(), data, frames=4)
    from maskwatch.detection.evaluation import SIZE_BUCKETS

    assert set(m["privacy_coverage"]) == set(SIZE_BUCKETS)
    assert m["n_videos"] == 3 and m["n_frames"] == 12
    assert m["privacy_coverage"]["all"] == 1.0 and m["never_exposed"]["all"] == 1.0
    # the made-up frames move the annotated boxes with the image
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 20:40] = 255
    for frame, boxes in video_from_image(image, np.array([[20.0, 20.0, 40.0, 40.0]]), 3, seed=1):
        x0, y0 = (int(v) for v in np.round(boxes[0, :2]))
        assert frame[y0 + 10, x0 + 10].mean() > 200  # the square is under its moved box
