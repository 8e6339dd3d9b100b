"""Inference runtime: preprocessing parity, ONNX fp32/INT8 and TorchScript exports, backend dispatch, bench, CLI.

Unit tests use a MobileNetV2 at 64 px whose head separates generated faces (ImageNet backbone from the offline
weights, else random weights with recalibrated BatchNorm); real images come from the shared data when present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_face, shared_or_skip, write_class_folders
from PIL import Image
from typer.testing import CliRunner

from maskwatch.checkpoint import atomic_torch_save, make_checkpoint
from maskwatch.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, resize_rgb, to_batch
from maskwatch.runtime.base import load_classifier

CLASSES = ["with_mask", "without_mask"]
SIZE = 64


def _faces(n: int, seed: int = 0, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(make_face(i % 2, rng, size)) for i in range(n)]


def _real_faces(n: int) -> list[np.ndarray]:
    from maskwatch.data.images import load_rgb

    root = shared_or_skip("faces", "test")
    paths = sorted((root / "with_mask").iterdir())[: n // 2] + sorted((root / "without_mask").iterdir())[: n - n // 2]
    return [np.asarray(load_rgb(p)) for p in paths]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("data"), per_class=6)


PRETRAINED = {}


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory, data_root) -> Path:
    """A 64 px MobileNetV2 checkpoint that separates the generated faces: ImageNet backbone (offline weights;
    random init with recalibrated BatchNorm when they are missing) and a nearest-centroid head."""
    from maskwatch.models import WeightsNotFoundError, create_model

    torch.manual_seed(0)
    try:
        model = create_model("mobilenet_v2", len(CLASSES), weights="imagenet")
        PRETRAINED["ok"] = True
    except WeightsNotFoundError:
        model = create_model("mobilenet_v2", len(CLASSES), weights="none")
        PRETRAINED["ok"] = False
    prep = Preprocessing(size=SIZE)
    batch = torch.from_numpy(to_batch(_faces(32, seed=1), prep))
    labels = torch.arange(32) % 2
    if not PRETRAINED["ok"]:  # random init alone gives the same output for every input
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        with torch.no_grad():
            model(batch)
    model.eval()
    with torch.no_grad():
        features = model.features(batch).mean((2, 3))
        mu0, mu1 = features[labels == 0].mean(0), features[labels == 1].mean(0)
        direction = mu1 - mu0
        scale = 6.0 / float((mu1 - mu0) @ direction)  # logit difference about +-3 at the class centroids
        head = model.classifier[1]
        head.weight.zero_()
        head.weight[1], head.weight[0] = direction * scale / 2, -direction * scale / 2
        offset = float((mu0 + mu1) @ direction) / 2 * scale / 2
        head.bias[:] = torch.tensor([offset, -offset])
    checkpoint = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=CLASSES,
                                 preprocessing=prep.to_dict(), config={"data": str(data_root)})
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    atomic_torch_save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tiny_pt, tmp_path_factory) -> Path:
    from maskwatch.runtime.export import export_onnx

    return export_onnx(tiny_pt, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny_int8(tiny_pt, tmp_path_factory) -> Path:
    from maskwatch.runtime.export import export_onnx

    return export_onnx(tiny_pt, tmp_path_factory.mktemp("int8") / "tiny-int8.onnx", int8=True,
                       calibration=_faces(24, seed=2))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A private export cache, shared by this module's tests (each export is made once)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MASKWATCH_CACHE_DIR", str(folder))
        yield folder / "exports"


# ------------------------------------------------------------------------------------------------------
# preprocessing parity


def _reference_transform(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's classic recipe (ToTensor, Normalize) on the same resize: an independent reference."""
    from torchvision import transforms as tvt

    resized = Image.fromarray(resize_rgb(image, size))
    pipeline = tvt.Compose([tvt.ToTensor(), tvt.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return pipeline(resized).numpy()


@pytest.mark.parametrize("shape", [(64, 64), (1, 1), (7, 300), (48, 80), (200, 150), (224, 224), (500, 333)])
@pytest.mark.parametrize("size", [64, 224])
def test_to_batch_matches_training_eval_transform(shape, size):
    from maskwatch.data.transforms import eval_transform

    rng = np.random.default_rng(sum(shape) + size)
    images = [rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8) for _ in range(3)]
    batch = to_batch(images, Preprocessing(size=size))
    assert batch.shape == (3, 3, size, size) and batch.dtype == np.float32 and batch.flags.c_contiguous
    for image, row in zip(images, batch):
        train_view = eval_transform(size)(Image.fromarray(image)).numpy()
        np.testing.assert_allclose(row, train_view, atol=1e-6)
        np.testing.assert_allclose(row, _reference_transform(image, size), atol=2e-6)


@pytest.mark.integration
def test_to_batch_matches_eval_transform_on_real_faces():
    from maskwatch.data.transforms import eval_transform

    faces = _real_faces(8)
    assert len({f.shape for f in faces}) > 1  # several sizes, in one batch
    batch = to_batch(faces, Preprocessing(size=224))
    for image, row in zip(faces, batch):
        np.testing.assert_allclose(row, eval_transform(224)(Image.fromarray(image)).numpy(), atol=1e-6)
        np.testing.assert_allclose(row, _reference_transform(image, 224), atol=2e-6)


# ------------------------------------------------------------------------------------------------------
# ONNX fp32


def test_onnx_matches_torch_on_generated_faces(tiny_pt, tiny_onnx):
    faces = _faces(20, seed=3) + _faces(4, seed=4, size=150)
    torch_p = load_classifier(tiny_pt, backend="torch").predict_proba(faces)
    onnx = load_classifier(tiny_onnx)
    assert onnx.backend == "onnx"
    onnx_p = onnx.predict_proba(faces)
    assert torch_p.std() > 0.1, "the test model should give spread-out probabilities"
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)


@pytest.mark.integration
def test_onnx_matches_torch_on_real_faces(tiny_pt, tiny_onnx):
    faces = _real_faces(16)
    np.testing.assert_allclose(load_classifier(tiny_onnx).predict_proba(faces),
                               load_classifier(tiny_pt, backend="torch").predict_proba(faces), atol=1e-4)


@pytest.mark.integration
def test_real_checkpoint_onnx_matches_torch(tmp_path):
    """The trained model (bundled, or $MASKWATCH_MODEL) at 224 px on real faces."""
    from maskwatch.bundled import default_model_path
    from maskwatch.runtime.export import export_onnx

    try:
        model = default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(f"no trained model: {exc}")
    faces = _real_faces(8)
    onnx_p = load_classifier(export_onnx(model, tmp_path / "real.onnx")).predict_proba(faces)
    torch_p = load_classifier(model, backend="torch").predict_proba(faces)
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)


def test_metadata_round_trips(tiny_pt, tiny_onnx):
    from maskwatch.core.digests import file_sha256
    from maskwatch.runtime.onnx_backend import read_metadata

    meta = read_metadata(tiny_onnx)
    assert meta["classes"] == CLASSES
    assert Preprocessing.from_dict(meta["preprocessing"]) == Preprocessing(size=SIZE)
    assert meta["arch"] == "mobilenet_v2" and meta["precision"] == "fp32"
    assert meta["source_sha256"] == file_sha256(tiny_pt)
    assert meta["maskwatch_version"]
    clf = load_classifier(tiny_onnx)
    assert clf.classes == CLASSES and clf.preprocessing == Preprocessing(size=SIZE)


def test_exported_file_alone_runs_without_torch(tiny_onnx, tmp_path):
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(tiny_onnx, alone)
    faces = _faces(4, seed=5)
    np.save(tmp_path / "faces.npy", np.stack(faces))
    script = (
        "import sys, json, numpy as np\n"
        "sys.modules['torch'] = None  # any torch import now fails\n"
        "from maskwatch.runtime import load_classifier\n"
        f"clf = load_classifier({str(alone)!r})\n"
        f"p = clf.predict_proba(list(np.load({str(tmp_path / 'faces.npy')!r})))\n"
        "print(json.dumps({'backend': clf.backend, 'p': p.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnx"
    np.testing.assert_allclose(result["p"], load_classifier(tiny_onnx).predict_proba(faces), atol=1e-6)


def test_importing_runtime_does_not_import_torch():
    code = ("import sys, maskwatch.runtime, maskwatch.runtime.onnx_backend, maskwatch.runtime.export, "
            "maskwatch.bench, maskwatch.commands.runtime, maskwatch.cli; "
            "bad = [m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules]; assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_onnx_without_metadata_needs_classes(tiny_onnx, tmp_path):
    import onnx

    from maskwatch.runtime.onnx_backend import OnnxClassifier

    model = onnx.load(str(tiny_onnx))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="no maskwatch metadata"):
        OnnxClassifier(bare)
    clf = OnnxClassifier(bare, classes=CLASSES, preprocessing=Preprocessing(size=SIZE))
    assert clf.predict_proba(_faces(2)).shape == (2, 2)


def test_session_options():
    from maskwatch.runtime.onnx_backend import physical_cores, session_options

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    options = session_options()
    assert options.intra_op_num_threads == physical_cores() and options.inter_op_num_threads == 1
    assert session_options(3, spin=False).intra_op_num_threads == 3
    with pytest.raises(ValueError):
        session_options(optimization="fast")


SPIN = "session.intra_op.allow_spinning"


def test_scene_pipeline_sessions_do_not_spin(tiny_onnx, tiny_pt):
    """The detector and the classifier take turns on the same cores: neither session's idle threads may
    busy-wait (that made both about 2x slower on 2 cores); a lone classifier keeps ONNX Runtime's default."""
    from maskwatch.detection.centerface import ModelNotFoundError
    from maskwatch.detection.pipeline import MaskDetector

    try:
        detector = MaskDetector.load(tiny_onnx, preset="fast")
    except ModelNotFoundError as exc:
        pytest.skip(f"CenterFace model not installed: {exc}")
    assert detector.classifier.session.get_session_options().get_session_config_entry(SPIN) == "0"
    assert detector.face_finder._session.get_session_options().get_session_config_entry(SPIN) == "0"
    spinning = MaskDetector.load(tiny_onnx, preset="fast", spin=True)
    assert spinning.face_finder._session.get_session_options().get_session_config_entry(SPIN) == "1"
    lone = load_classifier(tiny_onnx)
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ONNX Runtime's default
        lone.session.get_session_options().get_session_config_entry(SPIN)
    # a torch checkpoint has no thread pool to configure: the option is dropped, not an error
    assert MaskDetector.load(tiny_pt, backend="torch", preset="fast").classifier.backend == "torch"


# ------------------------------------------------------------------------------------------------------
# backend dispatch and the export cache


def test_load_classifier_dispatch_and_cache(tiny_pt, tiny_onnx, cache):
    from maskwatch.runtime.onnx_backend import OnnxClassifier
    from maskwatch.runtime.torch_backend import TorchClassifier

    assert isinstance(load_classifier(tiny_pt, backend="torch"), TorchClassifier)
    first = load_classifier(tiny_pt, backend="onnx")
    assert isinstance(first, OnnxClassifier) and first.path.parent == cache
    inode = first.path.stat().st_ino
    again = load_classifier(tiny_pt)  # auto: ONNX Runtime on a CPU machine, from the cache
    assert again.backend == "onnx" and again.path == first.path and again.path.stat().st_ino == inode  # not rewritten
    assert load_classifier(tiny_pt, backend="auto", device="cpu").backend == "onnx"
    with pytest.raises(ValueError, match="unknown backend"):
        load_classifier(tiny_pt, backend="tensorrt")
    with pytest.raises(ValueError, match="ONNX file"):
        load_classifier(tiny_onnx, backend="torch")
    with pytest.raises(ValueError, match="not an INT8"):
        load_classifier(tiny_onnx, backend="onnx-int8")
    with pytest.raises(FileNotFoundError):
        load_classifier(cache / "missing.pt", backend="onnx")


def test_changed_checkpoint_gets_a_new_export(tiny_pt, tiny_onnx, tmp_path, monkeypatch):
    from maskwatch.runtime import export

    made = []

    def fake_export(checkpoint, out, **kwargs):
        made.append((Path(checkpoint), kwargs))
        Path(out).write_bytes(tiny_onnx.read_bytes())
        return Path(out)

    monkeypatch.setenv("MASKWATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(export, "export_onnx", fake_export)
    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_pt, copy)
    first = export.cached_export(copy)
    assert export.cached_export(copy) == first and len(made) == 1  # cached
    assert export.cached_export(tmp_path / "copy.pt", int8=True) != first and made[-1][1]["int8"] is True
    checkpoint = torch.load(copy, weights_only=True)
    checkpoint["classes"] = ["a", "b"]
    atomic_torch_save(checkpoint, copy)
    assert export.cached_export(copy) not in (first,) and len(made) == 3  # new content, new export
    moved = tmp_path / "elsewhere" / "renamed.pt"
    moved.parent.mkdir()
    shutil.copy(copy, moved)
    export.cached_export(moved)
    assert len(made) == 3  # same content under another name: same export
    cached = sorted((tmp_path / "cache" / "exports").glob("*.onnx"))
    for age, path in enumerate(cached):
        os.utime(path, (1000 + age, 1000 + age))
    export._prune(cached[0].parent, keep=1)
    assert list(cached[0].parent.glob("*.onnx")) == [cached[-1]]  # the most recently used stays


# ------------------------------------------------------------------------------------------------------
# INT8


def test_int8_export_is_close_to_fp32(tiny_onnx, tiny_int8):
    from maskwatch.runtime.onnx_backend import read_metadata

    meta = read_metadata(tiny_int8)
    assert meta["precision"] == "int8" and meta["classes"] == CLASSES and "24 given images" in meta["calibration"]
    assert tiny_int8.stat().st_size < tiny_onnx.stat().st_size / 2
    faces = _faces(32, seed=6)
    int8 = load_classifier(tiny_int8)
    assert int8.backend == "onnx-int8"
    p8, p32 = int8.predict_proba(faces), load_classifier(tiny_onnx).predict_proba(faces)
    if not PRETRAINED["ok"]:
        pytest.skip("ImageNet MobileNetV2 weights not available offline: a random network is no test of INT8 accuracy")
    assert (p32.argmax(1) == np.arange(32) % 2).mean() >= 0.9  # the test model works
    assert np.abs(p8 - p32).max() < 0.1
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.95


def test_int8_quantization_leaves_the_working_directory_clean(tiny_onnx, tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference drops sym_shape_infer_temp.onnx and <uuid>.data files in the
    current directory; the export runs it in its temporary folder and gives the caller's directory back."""
    import os

    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    from maskwatch.preprocess import Preprocessing
    from maskwatch.runtime.export import _quantize

    original = SymbolicShapeInference.infer_shapes

    def leaky(model, *args, **kwargs):  # what ONNX Runtime does when it cannot infer every shape
        Path("sym_shape_infer_temp.onnx").write_bytes(b"partial model")
        Path("0000-leak.data").write_bytes(b"weights")
        return original(model, *args, **kwargs)

    monkeypatch.setattr(SymbolicShapeInference, "infer_shapes", staticmethod(leaky))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    data = _quantize(tiny_onnx.read_bytes(), _faces(4, seed=3), Preprocessing(size=SIZE), arch="mobilenet_v2")
    assert len(data) > 0
    assert Path(os.getcwd()) == work
    assert sorted(p.name for p in work.iterdir()) == []


def test_int8_default_calibration_uses_training_split(tiny_pt, cache):
    clf = load_classifier(tiny_pt, backend="onnx-int8")  # exported on the fly, calibrated on config["data"]
    assert clf.backend == "onnx-int8" and clf.path.parent == cache
    assert "train split" in clf.metadata["calibration"]
    assert "12 images" in clf.metadata["calibration"]  # 6 per class in the generated train split


def test_calibration_sources(data_root, tmp_path):
    from maskwatch.runtime.export import calibration_images

    images, described = calibration_images(data_root, size=4)
    assert len(images) == 4 and "train" in described  # a dataset root: its train split only
    images, _ = calibration_images(data_root / "test", size=100)
    assert len(images) == 12
    with pytest.raises(ValueError, match="does not exist"):
        calibration_images(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="not available"):
        calibration_images(None, checkpoint={"classes": CLASSES, "config": {"data": str(tmp_path / "gone")}})


def test_default_calibration_of_a_multi_dataset_run(data_root, tmp_path):
    """A run trained on several datasets saves config["data"] as a list, each with its own options: INT8
    calibration samples the train split of all of them."""
    from maskwatch.runtime.export import calibration_images

    other = write_class_folders(tmp_path / "other", per_class=3, seed=4)
    config = {"data": [str(data_root), {"path": str(other), "weight": 2.0, "name": "other"}], "seed": 0}
    images, described = calibration_images(None, checkpoint={"classes": CLASSES, "config": config}, size=100)
    assert len(images) == 12 + 6 and str(other) in described and str(data_root) in described
    gone = {"data": [str(data_root), {"path": str(tmp_path / "gone")}]}
    with pytest.raises(ValueError, match="not available"):
        calibration_images(None, checkpoint={"classes": CLASSES, "config": gone})


# ------------------------------------------------------------------------------------------------------
# TorchScript


def test_torchscript_export_loads_and_matches(tiny_pt, tmp_path):
    from maskwatch.runtime.export import export_torchscript, load_torchscript

    path = export_torchscript(tiny_pt, tmp_path / "tiny.ts")
    _module, classes, prep = load_torchscript(path)
    assert classes == CLASSES and prep == Preprocessing(size=SIZE)
    faces = _faces(8, seed=7)
    np.testing.assert_allclose(load_classifier(path).predict_proba(faces),
                               load_classifier(tiny_pt, backend="torch").predict_proba(faces), atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# bench and CLI


def test_bench_result_keys(tiny_pt, cache):
    from maskwatch.bench import format_table, load_backends, run_bench
    from maskwatch.paths import shared_data_dir

    result = run_bench(tiny_pt, backends=["onnx", "onnx-int8"], rounds=2, latency_iters=3, scenes=2,
                       faces_dir=shared_data_dir() / "faces" / "test",
                       scenes_dir=shared_data_dir() / "scenes" / "images")
    for backend in ("onnx", "onnx-int8"):
        row = result["classifier"][backend]
        assert row["throughput_ips"] > 0 and 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
    assert result["ratios"]["onnx-int8/onnx"] > 0 and result["size"] == SIZE
    assert {"cpu", "physical_cores", "versions", "cpu_share"} <= set(result["machine"])
    assert result["memory"]["peak_rss_mb"] > 0
    assert "detector_ms" in result and "pipeline_ips" in result
    if result["detector_ms"] is not None:  # shared scenes and CenterFace present
        assert result["pipeline_ips"] > 0 and result["pipeline"]["onnx"]["images"] == 2
    json.dumps(result)
    assert "onnx-int8" in format_table(result)
    # another input size than the model's (speed only): torch directly, ONNX through a fresh export
    classifiers, _ = load_backends(tiny_pt, ["torch", "onnx"], size=32, workdir=cache.parent)
    assert {c.preprocessing.size for c in classifiers.values()} == {32}
    assert classifiers["onnx"].predict_proba(_faces(2)).shape == (2, 2)


def test_cli_export_evaluate_and_bench(tiny_pt, data_root, cache, tmp_path):
    from maskwatch.cli import app

    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    result = runner.invoke(app, ["export", "--model", str(tiny_pt), "--format", "onnx", "--out", str(out),
                                 "--no-check"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    for model, backend in ((out, "onnx"), (tiny_pt, "onnx-int8")):
        result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data_root), "--backend", backend])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--model", str(tiny_pt), "--format", "tflite"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["bench", "--model", str(out), "--rounds", "1", "--scenes", "0", "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{"):])
    assert list(payload["classifier"]) == ["onnx"]
    result = runner.invoke(app, ["bench", "--model", str(tiny_pt), "--backend", "onnx,cuda"])
    assert result.exit_code == 2


# ------------------------------------------------------------------------------------------------------
# what travels with a model: face crop margin and compliant classes


def test_crop_margin_compliant_classes_and_temperature_travel_through_checkpoint_onnx_and_torchscript(
        tiny_pt, tmp_path, cache):
    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.runtime.export import export_onnx, export_torchscript
    from maskwatch.runtime.onnx_backend import read_metadata
    from maskwatch.runtime.types import softmax

    checkpoint = torch.load(tiny_pt, map_location="cpu", weights_only=True)
    checkpoint.update({"crop_margin": 0.25, "compliant_classes": ["with_mask", "without_mask"], "temperature": 2.5})
    custom = tmp_path / "custom.pt"
    atomic_torch_save(checkpoint, custom)
    assert load_checkpoint(custom)["crop_margin"] == 0.25 and load_checkpoint(custom)["temperature"] == 2.5
    onnx_path = export_onnx(custom, tmp_path / "custom.onnx")
    meta = read_metadata(onnx_path)
    assert meta["crop_margin"] == 0.25 and meta["compliant_classes"] == ["with_mask", "without_mask"]
    assert meta["temperature"] == 2.5
    ts_path = export_torchscript(custom, tmp_path / "custom.ts")
    faces = _faces(6, seed=5)
    raw = load_classifier(tiny_pt, "torch").predict_proba(faces)
    for path, backend in ((custom, "torch"), (custom, "onnx"), (onnx_path, "onnx"), (ts_path, "auto")):
        classifier = load_classifier(path, backend)
        assert classifier.crop_margin == 0.25, path
        assert classifier.compliant_classes == ["with_mask", "without_mask"], path
        assert classifier.temperature == 2.5, path
        # every backend applies it: same top class, probabilities softmax(logits / 2.5)
        logits = classifier.logits(faces)
        np.testing.assert_allclose(classifier.predict_proba(faces), softmax(logits, 2.5), atol=1e-6)
        np.testing.assert_allclose(softmax(logits), raw, atol=1e-4)
        assert (classifier.predict_proba(faces).argmax(1) == raw.argmax(1)).all(), path


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_old_model_files_get_the_default_margin_compliant_classes_and_temperature(tiny_pt, tmp_path):
    import json

    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.core.contract import DEFAULT_CROP_MARGIN
    from maskwatch.runtime.export import TORCHSCRIPT_META, export_torchscript
    from maskwatch.runtime.types import softmax

    defaults = (DEFAULT_CROP_MARGIN, ["with_mask"], 1.0)
    checkpoint = torch.load(tiny_pt, map_location="cpu", weights_only=True)
    assert (checkpoint["crop_margin"], checkpoint["compliant_classes"], checkpoint["temperature"]) == defaults
    for key in ("crop_margin", "compliant_classes", "temperature"):
        del checkpoint[key]
    old = tmp_path / "old.pt"
    atomic_torch_save(checkpoint, old)
    loaded = load_checkpoint(old)
    assert (loaded["crop_margin"], loaded["compliant_classes"], loaded["temperature"]) == defaults
    classifier = load_classifier(old, "torch")
    assert (classifier.crop_margin, classifier.compliant_classes, classifier.temperature) == defaults
    faces = _faces(4, seed=3)
    np.testing.assert_allclose(classifier.predict_proba(faces), softmax(classifier.logits(faces)), atol=1e-9)
    bare = _onnx_without_fields(tiny_pt, tmp_path)
    assert (bare.crop_margin, bare.compliant_classes, bare.temperature) == defaults
    # a TorchScript file written before the fields existed
    ts = export_torchscript(tiny_pt, tmp_path / "new.ts")
    extra = {TORCHSCRIPT_META: ""}
    module = torch.jit.load(str(ts), _extra_files=extra)
    meta = {k: v for k, v in json.loads(extra[TORCHSCRIPT_META]).items()
            if k not in ("crop_margin", "compliant_classes", "temperature")}
    torch.jit.save(module, str(tmp_path / "old.ts"), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
    old_ts = load_classifier(tmp_path / "old.ts")
    assert (old_ts.crop_margin, old_ts.compliant_classes, old_ts.temperature) == defaults
    with pytest.raises(ValueError, match="not classes of the model"):
        make_checkpoint({}, arch="mobilenet_v2", classes=CLASSES, preprocessing={}, compliant_classes=["mask"])


def _onnx_without_fields(tiny_pt, tmp_path):
    """An ONNX export as older maskwatch wrote it: without the three metadata entries."""
    import onnx

    from maskwatch.runtime.export import export_onnx
    from maskwatch.runtime.onnx_backend import OnnxClassifier

    model = onnx.load(str(export_onnx(tiny_pt, tmp_path / "new.onnx")))
    keep = [p for p in model.metadata_props if p.key not in ("crop_margin", "compliant_classes", "temperature")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    return OnnxClassifier(model.SerializeToString())


def test_the_bundled_model_loads_with_the_defaults():
    from maskwatch.bundled import default_model_path
    from maskwatch.core.contract import DEFAULT_CROP_MARGIN

    classifier = load_classifier(default_model_path(), "torch")
    assert (classifier.crop_margin, classifier.compliant_classes) == (DEFAULT_CROP_MARGIN, ["with_mask"])
    assert classifier.temperature > 0  # 1.0 until the bundled model is calibrated


def test_backends_do_not_import_the_factory():
    """runtime.types is the backends' interface; runtime.base (the factory) imports them, never the reverse."""
    import ast

    import maskwatch.runtime

    folder = Path(maskwatch.runtime.__file__).parent
    for name in ("types", "onnx_backend", "torch_backend", "export"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "maskwatch.runtime.base" not in imported, name


def test_export_reports_each_step(tiny_pt, tmp_path):
    from maskwatch.runtime.export import export_onnx

    steps = []
    export_onnx(tiny_pt, tmp_path / "m.onnx", on_step=steps.append)
    assert steps[0].startswith("converting the mobilenet_v2 network to ONNX") and steps[-1].startswith("checking")


def test_bench_flags_an_end_to_end_speed_above_the_engine_speed():
    """An end-to-end figure above the network-only one is noise; bench says so instead of printing it as a speed."""
    from maskwatch.bench import format_table, timing_warnings

    rows = {
        "onnx": {"throughput_ips": 300.0, "throughput_e2e_ips": 250.0},
        "onnx-int8": {"throughput_ips": 400.0, "throughput_e2e_ips": 420.0},
    }
    warnings = timing_warnings(rows, cpu_share=0.4)
    assert len(warnings) == 1 and warnings[0].startswith("onnx-int8:") and "impossible" in warnings[0]
    assert timing_warnings({"onnx": rows["onnx"]}, cpu_share=0.9) == []
    table = format_table({
        "size": 224, "batch": 32, "machine": {"threads": 2, "cpu": "x", "cpu_share": 0.4}, "ratios": {},
        "classifier": {k: {**v, "latency_p50_ms": 1.0, "latency_p95_ms": 2.0} for k, v in rows.items()},
        "memory": {"isolated_peak_rss_mb": {}, "peak_rss_mb": 100.0}, "warnings": warnings,
    })
    assert "420.0!" in table and "warning: onnx-int8" in table and "250.0!" not in table


def test_sessions_share_one_memory_arena_unless_asked_not_to():
    """Every session uses the process's one registered CPU arena (the detector's and the classifier's peaks
    no longer add up: benchmarks/bench_memory.py); a session can still have its own."""
    from maskwatch.runtime.onnx_backend import session_options

    assert session_options(1).get_session_config_entry("session.use_env_allocators") == "1"
    own = session_options(1, shared_arena=False)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type for a missing entry
        own.get_session_config_entry("session.use_env_allocators")
    assert session_options(1, mem_arena=False).enable_cpu_mem_arena is False
