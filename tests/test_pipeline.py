"""The scene pipeline: view fusion, crop framing, typed results and their JSON schema, batch classification."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from maskwatch.core.contract import compliance_rate
from maskwatch.core.faces import Faces, FaceView
from maskwatch.core.geometry import crop_box
from maskwatch.detection.evaluation import evaluate_voc
from maskwatch.detection.pipeline import PRESETS, MaskDetector, fuse_views
from maskwatch.detection.results import FrameResult, summarize
from maskwatch.paths import shared_data_dir

CLASSES = ["with_mask", "without_mask"]


# -- fakes: "faces" are coloured squares on black; green means mask, red means no mask -----------------


class BlobFinder:
    """Finds non-black rectangles; score = brightest channel / 255; landmarks on a fixed face layout."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image_rgb: np.ndarray) -> Faces:
        self.calls += 1
        mask = (image_rgb.max(axis=2) > 20).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        boxes, scores, marks = [], [], []
        for x, y, w, h, _area in stats[1:n]:
            scores.append(float(image_rgb[y + h // 2, x + w // 2].max()) / 255.0)
            marks.append([[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h], [x + 0.5 * w, y + 0.6 * h],
                          [x + 0.35 * w, y + 0.8 * h], [x + 0.65 * w, y + 0.8 * h]])  # fmt: skip
            boxes.append((float(x), float(y), float(x + w), float(y + h)))
        faces = Faces(boxes, scores, np.array(marks).reshape(-1, 5, 2))
        return faces[np.argsort(-faces.scores, kind="stable")]


class ColourClassifier:
    """p(with_mask) from how green the crop is compared with red."""

    classes = CLASSES
    backend = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_proba(self, images):
        self.batches.append(len(images))
        out = []
        for im in images:
            r, g = float(im[..., 0].mean()), float(im[..., 1].mean())
            p = 0.99 if g > r else 0.01
            out.append([p, 1 - p])
        return np.array(out).reshape(-1, 2)


def fake_detector(**options) -> MaskDetector:
    options.setdefault("scales", (256,))
    options.setdefault("flip", False)
    options.setdefault("box_adjust", None)
    return MaskDetector(ColourClassifier(), BlobFinder(), **options)


def scene(squares, size=(256, 256)) -> np.ndarray:
    """A black image with coloured squares: (x, y, side, (r, g, b))."""
    image = np.zeros((*size, 3), np.uint8)
    for x, y, side, colour in squares:
        image[y : y + side, x : x + side] = colour
    return image


GREEN, RED = (0, 230, 0), (220, 0, 0)


# -- pieces ----------------------------------------------------------------------------------------------


def test_fuse_single_view_is_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    fused = fuse_views([Faces(boxes, [0.9, 0.8, 0.7])], iou=0.3)
    assert fused.scores.tolist() == [0.9, 0.7] and fused.boxes[0].tolist() == [0, 0, 10, 10]


def test_fuse_two_views_averages_scores_and_boxes():
    a = Faces([[0, 0, 10, 10], [50, 50, 60, 60]], [0.8, 0.6], np.zeros((2, 5, 2)))
    b = Faces([[2, 0, 12, 10]], [0.8], np.ones((1, 5, 2)))
    fused = fuse_views([a, b], iou=0.3)
    assert fused.scores.tolist() == pytest.approx([0.8, 0.3])  # seen by both; seen by one view of two
    assert fused.boxes[0].tolist() == pytest.approx([1, 0, 11, 10])
    assert fused.landmarks[0, 0].tolist() == pytest.approx([0.5, 0.5])


def test_fuse_empty_views():
    fused = fuse_views([Faces.empty(), Faces.empty()])
    assert fused.boxes.shape == (0, 4) and fused.scores.shape == (0,) and fused.landmarks.shape == (0, 5, 2)


def test_accurate_preset_runs_six_views_and_find_faces_fuses_them():
    sides = []

    class Spy(BlobFinder):
        def detect(self, image_rgb):
            sides.append(max(image_rgb.shape[:2]))
            return super().detect(image_rgb)

    detector = MaskDetector(ColourClassifier(), Spy(), scales="accurate", box_adjust=None)
    image = scene([(40, 40, 20, GREEN)], size=(150, 200))
    found = detector.find_faces(image)
    assert sides == [640, 640, 1024, 1024, 1280, 1280]  # each scale as is and mirrored
    assert found.boxes.tolist() == [pytest.approx([40, 40, 60, 60], abs=0.5)]
    assert found.classes == tuple(CLASSES) and found.kept.all() and not found.classified.any()  # not yet gated
    views = [detector.detect_view(image, side, mirrored) for side in (640, 1024, 1280) for mirrored in (False, True)]
    again = detector.fuse(views, 200, 150)
    np.testing.assert_allclose(again.boxes, found.boxes)
    np.testing.assert_allclose(again.scores, found.scores)


def test_crop_box_matches_the_dataset_crop_framing():
    # open_dataset(crops=True) grows a VOC box by margin * size per side and rounds; we must do the same
    x0, y0, x1, y1, margin = 100, 50, 140, 98, 0.15
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    expected = (round(x0 - mx), round(y0 - my), round(x1 + mx), round(y1 + my))
    assert crop_box((x0, y0, x1, y1), margin, 1000, 1000) == expected
    assert crop_box((0, 0, 10, 10), 0.5, 12, 12) == (0, 0, 12, 12)  # clipped to the image


def test_compliance_rate():
    assert compliance_rate({"with_mask": 3, "without_mask": 1}, CLASSES) == 0.75
    assert compliance_rate({"with_mask": 0, "without_mask": 0}, CLASSES) is None
    assert compliance_rate({"a": 1}, ["a", "b"]) is None  # no mask class known
    three = ["mask_weared_incorrect", "with_mask", "without_mask"]
    assert compliance_rate({"with_mask": 2, "without_mask": 1, "mask_weared_incorrect": 1}, three) == 0.5


def test_presets_are_valid():
    for name, preset in PRESETS.items():
        detector = fake_detector(scales=name, flip=None)  # the preset decides
        assert detector.scales == tuple(preset["scales"]) and detector.flip == preset["flip"]
        assert detector.classify_tta == preset["classify_tta"]
    with pytest.raises(ValueError, match="unknown preset"):
        fake_detector(scales="turbo")
    accurate = fake_detector(scales="accurate", flip=None)
    assert accurate.classify_tta and not accurate.configured(scales="fast").classify_tta
    assert accurate.configured(scales="fast", classify_tta=True).classify_tta
    assert not fake_detector(scales="accurate", flip=None, classify_tta=False).classify_tta
    with pytest.raises(ValueError, match="classify_tta needs crop_margin"):
        fake_detector(classify_tta=True, crop_margin=0.0)


# -- the pipeline ----------------------------------------------------------------------------------------


def test_detect_returns_typed_results_with_the_json_schema():
    detector = fake_detector()
    image = scene([(20, 30, 40, GREEN), (150, 40, 30, RED), (100, 150, 50, GREEN)])
    result = detector.detect(image, source="x.jpg")
    assert isinstance(result, FrameResult) and isinstance(result.faces, Faces)
    assert all(isinstance(f, FaceView) for f in result.faces) and result.faces.classified.all()
    assert result.counts == {"with_mask": 2, "without_mask": 1}
    assert result.compliance == pytest.approx(2 / 3)
    d = json.loads(json.dumps(result.to_dict()))
    assert set(d) >= {"source", "frame", "timestamp", "width", "height", "n_faces", "counts", "compliance", "faces"}
    assert (d["source"], d["width"], d["height"], d["n_faces"]) == ("x.jpg", 256, 256, 3)
    face = d["faces"][0]
    assert set(face) == {"box", "score", "label", "probability", "probabilities", "confidence", "landmarks"}
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert set(face["probabilities"]) == set(CLASSES)
    assert face["confidence"] == pytest.approx(face["score"] * face["probability"], abs=1e-3)
    red = next(f for f in result.faces if f.label == "without_mask")
    assert red.box == pytest.approx((150, 40, 180, 70), abs=0.5)
    assert red.score == pytest.approx(220 / 255, abs=1e-3)


def test_no_faces():
    result = fake_detector().detect(np.zeros((64, 80, 3), np.uint8))
    assert len(result.faces) == 0 and result.counts == {"with_mask": 0, "without_mask": 0}
    assert result.compliance is None and result.to_dict()["compliance"] is None


def test_score_threshold_and_min_face():
    image = scene([(20, 20, 40, (0, 250, 0)), (150, 150, 40, (0, 60, 0)), (100, 20, 8, (0, 250, 0))])
    assert len(fake_detector(score_threshold=0.5).detect(image).faces) == 2
    assert len(fake_detector(score_threshold=0.1, min_face=10).detect(image).faces) == 2
    assert len(fake_detector(score_threshold=0.1).detect(image).faces) == 3


def test_confidence_gate():
    class Unsure(ColourClassifier):
        def predict_proba(self, images):
            return np.array([[0.55, 0.45] if im.shape[0] > 40 else [0.99, 0.01] for im in images]).reshape(-1, 2)

    image = scene([(20, 20, 40, (0, 200, 0)), (150, 150, 30, (0, 200, 0))])  # score 0.78 each
    detector = MaskDetector(Unsure(), BlobFinder(), scales=(256,), flip=False, box_adjust=None, min_confidence=0.6)
    faces = detector.detect(image).faces
    assert len(faces) == 1 and faces[0].probability == 0.99  # 0.78 x 0.55 < 0.6 is dropped
    assert len(detector.detect(image, min_confidence=0.0).faces) == 2


def test_faces_of_several_images_are_classified_together():
    detector = fake_detector()
    images = [scene([(10, 10, 30, GREEN)]), scene([(10, 10, 30, RED), (100, 100, 30, GREEN)]), scene([])]
    results = detector.detect_batch(images)
    assert [len(r.faces) for r in results] == [1, 2, 0]
    assert detector.classifier.batches == [3]  # one call for all faces of the batch


def test_flip_and_second_scale_map_boxes_back():
    image = scene([(30, 40, 40, GREEN)], size=(200, 300))
    detector = fake_detector(scales=(300, 600), flip=True)
    result = detector.detect(image)
    assert len(result.faces) == 1 and detector.face_finder.calls == 4
    face = result.faces[0]
    assert face.box == pytest.approx((30, 40, 70, 80), abs=1.0)
    left_eye, right_eye = face.landmarks[0], face.landmarks[1]
    assert left_eye[0] < right_eye[0]  # mirrored detections swap their left/right landmarks back


def test_crop_margin_reaches_the_classifier():
    seen = []

    class Spy(ColourClassifier):
        def predict_proba(self, images):
            seen.extend(im.shape for im in images)
            return super().predict_proba(images)

    image = scene([(100, 100, 40, GREEN)])
    MaskDetector(Spy(), BlobFinder(), scales=(256,), flip=False, box_adjust=None, crop_margin=0.25).detect(image)
    assert seen == [(60, 60, 3)]


def test_classify_tta_averages_six_crops_per_face():
    """With classify_tta each face is seen at three margins, each as is and mirrored, and its probabilities
    are the mean over those six crops; faces keep their own crops when several are classified together."""
    seen = []

    class LeftSided(ColourClassifier):
        """p(with_mask) = share of green among the coloured pixels of the crop's left half."""

        def predict_proba(self, images):
            out = []
            for im in images:
                seen.append(im.shape[:2])
                left = im[:, : im.shape[1] // 2].astype(float)
                green, red = left[..., 1].sum() / 230, left[..., 0].sum() / 220
                out.append([green / (green + red), red / (green + red)])
            return np.array(out).reshape(-1, 2)

    # two 40 px faces: one green on its left and red on its right, one red
    image = scene([(60, 60, 20, GREEN), (80, 60, 20, RED), (80, 80, 20, RED), (60, 80, 20, GREEN),
                   (170, 170, 40, RED)])  # fmt: skip
    plain = MaskDetector(LeftSided(), BlobFinder(), scales=(256,), flip=False, box_adjust=None)
    tta = MaskDetector(LeftSided(), BlobFinder(), scales=(256,), flip=False, box_adjust=None, classify_tta=True)
    assert plain.views_per_face == 1 and tta.views_per_face == 6
    faces = {f.box: f for f in plain.detect(image).faces}
    assert seen == [(52, 52), (52, 52)]  # margin 0.15
    seen.clear()
    tta_faces = {f.box: f for f in tta.detect(image).faces}
    assert sorted(set(seen)) == [(48, 48), (52, 52), (56, 56)]  # margins 0.10, 0.15, 0.20
    assert len(seen) == 12  # one call, 6 crops per face
    split, red = (60.0, 60.0, 100.0, 100.0), (170.0, 170.0, 210.0, 210.0)
    assert faces[split].probabilities["with_mask"] == pytest.approx(1.0)  # the left half is all green
    assert tta_faces[split].probabilities["with_mask"] == pytest.approx(0.5)  # mirrored crops see red there
    assert faces[red].label == tta_faces[red].label == "without_mask"
    assert tta_faces[red].probabilities["without_mask"] == pytest.approx(1.0)


def test_detect_accepts_paths_and_pil(tmp_path):
    from PIL import Image

    image = scene([(10, 10, 30, GREEN)])
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    detector = fake_detector()
    assert detector.detect(path).source == str(path)
    assert detector.detect(Image.fromarray(image)).counts["with_mask"] == 1


def test_summarize():
    detector = fake_detector()
    results = detector.detect_batch([scene([(10, 10, 30, GREEN)]), scene([(10, 10, 30, RED)])])
    assert summarize(results, CLASSES) == {"n_frames": 2, "n_faces": 2, "counts": {"with_mask": 1, "without_mask": 1},
                                           "compliance": 0.5}  # fmt: skip


def write_voc(folder: Path, name: str, image: np.ndarray, objects) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    body = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for label, (x0, y0, x1, y1) in objects
    )
    (folder / "annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.png</filename>{body}</annotation>"
    )


def hand_made_voc(folder: Path) -> None:
    """with_mask: a false positive (0.98) outranks two true faces (0.90, 0.78): AP = 2/3 (COCO 101-point);
    without_mask: one face found first: AP = 1. Faces: 3 annotated, 4 found."""
    write_voc(folder, "one", scene([(20, 20, 30, (0, 230, 0)), (150, 150, 40, (0, 250, 0))]),
              [("with_mask", (20, 20, 50, 50))])  # fmt: skip
    write_voc(folder, "two", scene([(30, 30, 70, (0, 200, 0)), (160, 40, 24, (220, 0, 0))]),
              [("with_mask", (30, 30, 100, 100)), ("without_mask", (160, 40, 184, 64))])  # fmt: skip


def test_evaluate_voc_known_ap(tmp_path):
    hand_made_voc(tmp_path)
    m = evaluate_voc(fake_detector(score_threshold=0.3), tmp_path)
    assert m["ap50"]["with_mask"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["ap50"]["without_mask"] == pytest.approx(1.0)
    assert m["map50"] == pytest.approx(5 / 6, abs=1e-3)
    assert m["recall"]["all"] == 1.0 and m["precision"] == 0.75 and m["count_mae"] == 0.5
    assert (m["n_images"], m["n_faces"]) == (2, 3)


# -- lazy, torch-free import -----------------------------------------------------------------------------


def test_top_level_export_is_lazy_and_torch_free():
    code = (
        "import sys, maskwatch; assert 'maskwatch.detection.pipeline' not in sys.modules; "
        "from maskwatch import MaskDetector; import maskwatch.detection.drawing, maskwatch.detection.results; "
        "assert MaskDetector.__name__ == 'MaskDetector'; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- real detector on a real scene -----------------------------------------------------------------------


def test_real_scene_with_centerface():
    from maskwatch.core.geometry import box_iou
    from maskwatch.detection.centerface import CenterFaceDetector, ModelNotFoundError

    path = shared_data_dir() / "scenes" / "images" / "maksssksksss389.jpg"
    if not path.is_file():
        pytest.skip(f"shared scenes data not found at {path.parent} (set MASKWATCH_SHARED_DATA)")
    try:
        finder = CenterFaceDetector(score_threshold=0.1, max_side=None, box_adjust=None)
    except ModelNotFoundError as exc:
        pytest.skip(f"CenterFace model not installed: {exc}")
    detector = MaskDetector(ColourClassifier(), finder, scales="fast")
    result = detector.detect(path)
    boxes = np.array([f.box for f in result.faces])
    for known in [(339.0, 59.0, 393.0, 111.0), (123.0, 148.0, 188.0, 217.0)]:  # from its VOC annotation
        assert box_iou(boxes, np.array([known])).max() > 0.5
    assert 8 <= len(result.faces) <= 20  # 12 annotated faces


# -- one home per concern, both import paths -------------------------------------------------------------


def test_faces_have_one_currency():
    """The detector, the pipeline and the results share Faces: no per-face result type and no detector Face
    that data is converted into; the per-image result has one home."""
    from maskwatch.detection import centerface, pipeline, results

    assert not hasattr(results, "FaceResult") and not hasattr(centerface, "Face")
    assert pipeline.FrameResult is results.FrameResult
    # evaluate_voc and write_html_report have one home each, no longer re-exported by the pipeline
    assert not hasattr(pipeline, "evaluate_voc") and not hasattr(pipeline, "write_html_report")
    # the dead frame helpers are gone
    assert not hasattr(pipeline.MaskDetector, "detect_frames")
    assert not hasattr(pipeline.MaskDetector, "detect_frame_batch")


def test_detect_accepts_encoded_bytes_and_files(tmp_path):
    import io

    from PIL import Image

    image = scene([(10, 10, 30, GREEN), (100, 100, 30, RED)])
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    data = buffer.getvalue()
    detector = fake_detector()
    expected = detector.detect(image).to_dict()
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert detector.detect(source).to_dict() == expected
    rgba = Image.fromarray(image).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(image.max(axis=2) > 0, 255, 0).astype(np.uint8)))
    # transparent background flattened on white by the one decoder, whether given as PIL or as bytes
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    assert detector.detect(rgba).to_dict() == detector.detect(buffer.getvalue()).to_dict()


def test_compliance_follows_the_models_compliant_classes():
    three = ["mask_weared_incorrect", "with_mask", "without_mask"]
    counts = {"with_mask": 2, "without_mask": 1, "mask_weared_incorrect": 1}
    assert compliance_rate(counts, three, ["with_mask", "mask_weared_incorrect"]) == 0.75
    assert compliance_rate(counts, three, []) is None

    class Lenient(ColourClassifier):
        # a model that counts every face as compliant
        compliant_classes: ClassVar[list[str]] = ["with_mask", "without_mask"]

    detector = MaskDetector(Lenient(), BlobFinder(), scales=(256,), flip=False, box_adjust=None)
    result = detector.detect(scene([(10, 10, 30, GREEN), (100, 100, 30, RED)]))
    assert result.compliant_classes == ("with_mask", "without_mask") and result.compliance == 1.0
    assert summarize([result], CLASSES)["compliance"] == 1.0
    assert fake_detector().detect(scene([(10, 10, 30, GREEN), (100, 100, 30, RED)])).compliance == 0.5  # default


def test_crop_margin_defaults_to_the_models():
    from maskwatch.core.contract import DEFAULT_CROP_MARGIN

    seen = []

    class WideFramed(ColourClassifier):
        crop_margin = 0.25

        def predict_proba(self, images):
            seen.extend(im.shape for im in images)
            return super().predict_proba(images)

    image = scene([(100, 100, 40, GREEN)])
    detector = MaskDetector(WideFramed(), BlobFinder(), scales=(256,), flip=False, box_adjust=None)
    assert detector.crop_margin == 0.25
    detector.detect(image)
    assert seen == [(60, 60, 3)]
    assert MaskDetector(WideFramed(), BlobFinder(), crop_margin=0.1).crop_margin == 0.1  # an explicit one wins
    assert fake_detector().crop_margin == DEFAULT_CROP_MARGIN  # a classifier that says nothing


# -- the shipped INT8 face detector --------------------------------------------------------------------------


def test_fast_preset_runs_the_int8_detector_and_the_others_fp32():
    detector = fake_detector()
    int8 = BlobFinder()
    base = MaskDetector(ColourClassifier(), detector.face_finder, scales="accurate", int8_face_finder=int8,
                        box_adjust=None)  # fmt: skip
    assert base.detector_precision == "fp32" and base.active_finder is base.face_finder
    fast = base.configured(scales="fast")
    assert fast.detector_precision == "int8" and fast.active_finder is int8 and fast.settings()["detector"] == "int8"
    assert base.configured(scales="balanced").detector_precision == "fp32"
    assert base.configured(scales="fast", detector="fp32").detector_precision == "fp32"
    # asking for INT8 without an INT8 finder runs the fp32 one, and says so
    assert MaskDetector(ColourClassifier(), BlobFinder(), scales="fast").detector_precision == "fp32"
    with pytest.raises(ValueError, match="detector must be one of"):
        MaskDetector(ColourClassifier(), BlobFinder(), detector="int4")


def test_shipped_int8_centerface_is_found_checked_and_agrees_with_fp32(tmp_path):
    from maskwatch.core.geometry import box_iou
    from maskwatch.detection.centerface import (
        CENTERFACE_INT8_SHA256,
        CenterFaceDetector,
        ModelIntegrityError,
        ModelNotFoundError,
        find_centerface_int8_model,
    )

    path = find_centerface_int8_model()
    assert path is not None and path.name == "centerface-int8.onnx"
    tampered = tmp_path / "centerface-int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        CenterFaceDetector(tampered, expected_sha256=CENTERFACE_INT8_SHA256)
    image = shared_data_dir() / "scenes" / "images" / "maksssksksss389.jpg"
    if not image.is_file():
        pytest.skip(f"shared scenes data not found at {image.parent} (set MASKWATCH_SHARED_DATA)")
    try:
        fp32 = CenterFaceDetector(score_threshold=0.3, max_side=640, box_adjust=None)
    except ModelNotFoundError as exc:
        pytest.skip(f"CenterFace model not installed: {exc}")
    int8 = CenterFaceDetector(path, score_threshold=0.3, max_side=640, box_adjust=None)  # checked by its sha256
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    a = np.array([f.box for f in fp32.detect(rgb)])
    b = np.array([f.box for f in int8.detect(rgb)])
    assert len(a) >= 8 and abs(len(a) - len(b)) <= 2
    matched = (box_iou(a, b).max(axis=1) > 0.7).mean()
    assert matched >= 0.85  # the same faces, nearly the same boxes


def test_fast_preset_runs_the_int8_classifier_when_given():
    class Int8Colour(ColourClassifier):
        calls = 0

        def predict_proba(self, images):
            type(self).calls += len(images)
            return super().predict_proba(images)

    int8 = Int8Colour()
    base = MaskDetector(ColourClassifier(), BlobFinder(), scales="accurate", int8_classifier=int8, box_adjust=None)
    assert base.classifier_precision == "fp32" and base.configured(scales="balanced").classifier_precision == "fp32"
    fast = base.configured(scales="fast")
    assert fast.classifier_precision == "int8" and fast.settings()["classifier_precision"] == "int8"
    fast.detect(scene([(20, 20, 40, (0, 230, 0))]))
    assert Int8Colour.calls == 1
    base.detect(scene([(20, 20, 40, (0, 230, 0))]))
    assert Int8Colour.calls == 1  # the accurate preset keeps the fp32 classifier

    class OtherClasses(ColourClassifier):
        classes: ClassVar[list[str]] = ["mask", "no_mask"]

    with pytest.raises(ValueError, match="classes"):
        MaskDetector(ColourClassifier(), BlobFinder(), int8_classifier=OtherClasses())


def test_the_bundled_int8_classifier_ships_next_to_the_bundled_model():
    from maskwatch.bundled import default_int8_model_path, default_model_path
    from maskwatch.core.digests import file_sha256
    from maskwatch.runtime.base import load_classifier

    path = default_int8_model_path()
    assert path is not None and path.parent == default_model_path().parent
    int8 = load_classifier(path)
    fp32 = load_classifier(default_model_path(), "onnx")
    assert int8.backend == "onnx-int8" and list(int8.classes) == list(fp32.classes)
    assert int8.crop_margin == fp32.crop_margin and list(int8.compliant_classes) == list(fp32.compliant_classes)
    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["source_sha256"] == file_sha256(default_model_path())  # exported from exactly the bundled model
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, (48, 40, 3), dtype=np.uint8) for _ in range(4)]
    assert np.abs(int8.predict_proba(faces) - fp32.predict_proba(faces)).max() < 0.2


# -- recall-first blur: privacy candidates (issue 19) ----------------------------------------------------


def test_faint_and_small_faces_stay_candidates_to_blur_but_do_not_count():
    # a bright face (counts), a faint one (under the candidates' floor: blurred only), a tiny bright one
    image = scene([(20, 20, 40, (0, 250, 0)), (150, 150, 40, (0, 30, 0)), (100, 20, 8, (0, 250, 0))])
    result = fake_detector(candidate_threshold=0.2, min_face=10).detect(image)
    assert len(result.faces) == 1  # only the bright, big face counts
    assert len(result.candidates) == 3  # the faint and the tiny one are still there to blur
    weak = result.candidates[~result.candidates.kept]
    assert sorted(weak.scores.round(2)) == [0.12, 0.98]
    assert not weak.has_probabilities.any()  # never classified


def test_loaded_pipeline_keeps_candidates_far_under_the_score_gate():
    from maskwatch.detection.centerface import ModelNotFoundError
    from maskwatch.detection.privacy import BLUR_SCORE

    path = shared_data_dir() / "scenes" / "images" / "maksssksksss389.jpg"
    if not path.is_file():
        pytest.skip(f"shared scenes data not found at {path.parent} (set MASKWATCH_SHARED_DATA)")
    try:
        detector = MaskDetector.load(preset="fast")
    except ModelNotFoundError as exc:
        pytest.skip(f"CenterFace model not installed: {exc}")
    result = detector.detect(path)
    scores = result.candidates.scores
    assert scores.min() >= BLUR_SCORE - 1e-6
    assert (scores < detector.score_threshold).any()  # candidates the gate drops, kept to be blurred
    assert not result.candidates.kept[scores < detector.score_threshold].any()
    assert len(result.faces) == int(result.candidates.kept.sum())
    assert detector.settings()["blur_threshold"] == pytest.approx(BLUR_SCORE)
