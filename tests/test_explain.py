"""Grad-CAM wrapper, CAM mass, network visuals and `maskwatch explain`, on tiny models and inputs."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from maskwatch.checkpoint import atomic_torch_save, make_checkpoint
from maskwatch.explain.cam import (
    CamExplainer,
    available_methods,
    explain_batch,
    find_target_layer,
    overlay,
    split_at_layer,
)
from maskwatch.explain.mass import cam_mass_shares, face_region_in_crop, mass_table, summarize_by_class
from maskwatch.explain.visuals import (
    capture_feature_maps,
    default_feature_layers,
    first_conv_weights,
    trainable_weights,
)
from maskwatch.models import create_model
from maskwatch.preprocess import Preprocessing, denormalize, to_batch

CLASSES = ["with_mask", "without_mask"]


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return create_model("mobilenet_v2", 2, weights="none").eval()


def save_tiny_checkpoint(path: Path, size: int = 64, arch: str = "mobilenet_v2", seed: int = 0, **config) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, 2, weights="none")
    checkpoint = make_checkpoint(model.state_dict(), arch=arch, classes=CLASSES,
                                 preprocessing=Preprocessing(size=size).to_dict(),
                                 config={"arch": arch, "finetune": 0, **config})
    atomic_torch_save(checkpoint, path)
    return path


# -- target layers and methods ------------------------------------------------------------------------

@pytest.mark.parametrize("arch, expected", [("mobilenet_v2", "features.18"), ("resnet18", "layer4")])
def test_target_layer_comes_from_the_registry(arch, expected):
    model = create_model(arch, 2, weights="none")
    name, layer = find_target_layer(model, arch)
    assert name == expected and layer is model.get_submodule(expected)
    assert find_target_layer(model, layer="features.17" if arch == "mobilenet_v2" else "layer3")[0] != expected
    with pytest.raises(ValueError, match="no layer"):
        find_target_layer(model, layer="nope.1")


def test_target_layer_fallback_is_last_conv():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 2))
    assert find_target_layer(model)[0] == "2"


def test_unknown_method_is_refused(mobilenet):
    assert {"gradcam", "gradcam++", "eigencam", "scorecam"} <= set(available_methods())
    with pytest.raises(ValueError, match="unknown CAM method"):
        CamExplainer(mobilenet, arch="mobilenet_v2", method="magic")


# models x methods x layers x sizes, on tiny inputs (after pytorch-grad-cam's test_run_all_models)
CASES = [(arch, method, None, 64) for arch in ("mobilenet_v2", "resnet18")
         for method in ("gradcam", "gradcam++", "eigencam")]
CASES += [("mobilenet_v2", "gradcam", None, 96), ("resnet18", "xgradcam", None, 80),
          ("mobilenet_v2", "layercam", "features.14", 64), ("resnet18", "gradcam", "layer3", 64)]


@pytest.mark.parametrize("arch, method, layer, size", CASES)
def test_methods_archs_layers_sizes(arch, method, layer, size):
    torch.manual_seed(0)
    model = create_model(arch, 2, weights="none").eval()
    flags = [p.requires_grad for p in model.parameters()]
    batch = np.random.default_rng(0).normal(size=(3, 3, size, size)).astype(np.float32)
    with CamExplainer(model, arch=arch, layer=layer, method=method) as explainer:
        assert _hooks(model) > 0
        result = explainer(batch)
        fixed = explainer(batch, targets=1)
    assert result.cams.shape == (3, size, size) and result.cams.dtype == np.float32
    assert result.cams.min() >= 0 and result.cams.max() <= 1 + 1e-6
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)
    assert (result.targets == result.probabilities.argmax(axis=1)).all()
    assert (fixed.targets == 1).all()
    assert _hooks(model) == 0
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training


def test_scorecam_runs_on_a_small_layer():
    torch.manual_seed(0)
    model = create_model("resnet18", 2, weights="none").eval()
    batch = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    result = explain_batch(model, batch, arch="resnet18", method="scorecam")
    assert result.cams.shape == (1, 64, 64)
    assert _hooks(model) == 0


def test_head_only_gradient_matches_the_library(mobilenet):
    """Cutting the graph at the target layer changes nothing in the maps, only the cost."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    batch = np.random.default_rng(1).normal(size=(4, 3, 96, 96)).astype(np.float32)
    for name, cls in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)):
        with cls(model=mobilenet, target_layers=[mobilenet.features[18]]) as reference:
            expected = reference(input_tensor=torch.from_numpy(batch), targets=None)
        got = explain_batch(mobilenet, batch, arch="mobilenet_v2", method=name).cams
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert _hooks(mobilenet) == 0


@pytest.mark.parametrize("arch, layer", [("mobilenet_v2", None), ("resnet18", None), ("resnet18", "layer3")])
def test_onnx_prefix_engine_gives_the_same_maps(arch, layer):
    """The prefix in ONNX Runtime + the library on the tail == the library on the whole torch model."""
    torch.manual_seed(0)
    model = create_model(arch, 2, weights="none").eval()
    prefix, tail = split_at_layer(model, arch, find_target_layer(model, arch, layer)[1])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tail(prefix(x)), model(x))
    batch = np.random.default_rng(2).normal(size=(3, 3, 64, 64)).astype(np.float32)
    for method in ("gradcam", "gradcam++", "eigencam"):
        reference = explain_batch(model, batch, arch=arch, layer=layer, method=method)
        with CamExplainer(model, arch=arch, layer=layer, method=method, engine="onnx") as explainer:
            assert explainer.engine == "onnx"
            fast = explainer(batch)
            assert explainer(batch, targets=0).cams.shape == (3, 64, 64)
        np.testing.assert_allclose(fast.cams, reference.cams, atol=1e-3)
        np.testing.assert_allclose(fast.probabilities, reference.probabilities, atol=1e-4)
        assert _hooks(model) == 0
    assert CamExplainer(model, arch=arch, method="scorecam", engine="auto").engine == "torch"
    with pytest.raises(ValueError, match="engine 'onnx'"):
        CamExplainer(model, arch=arch, method="scorecam", engine="onnx")
    with pytest.raises(ValueError, match="not a backbone block"):
        CamExplainer(model, arch=arch, layer="fc" if arch == "resnet18" else "classifier.1", engine="onnx")


def test_exceptions_inside_the_block_propagate_and_release_hooks(mobilenet):
    with pytest.raises(IndexError), CamExplainer(mobilenet, arch="mobilenet_v2"):
        raise IndexError("must not be swallowed")  # the library's own __exit__ swallows IndexError
    assert _hooks(mobilenet) == 0
    with pytest.raises(RuntimeError, match="with"):
        CamExplainer(mobilenet, arch="mobilenet_v2")(np.zeros((1, 3, 64, 64), np.float32))


@pytest.mark.parametrize("engine, cycles", [("torch", 50), ("onnx", 2)])
def test_hooks_released_and_memory_flat_over_500_images(mobilenet, engine, cycles):
    """500 images in a row through one explainer, then explainers opened and closed again and again: no
    hook is left behind and resident memory stays flat."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 1, 3, 48, 48)).astype(np.float32)
    with CamExplainer(mobilenet, arch="mobilenet_v2", engine=engine) as explainer:
        for i in range(30):  # warm-up: allocator pools, lazy imports, the ONNX session
            explainer(images[i % 8])
        gc.collect()
        before = _rss_mb()
        for i in range(470):
            explainer(images[i % 8])
            if i % 50 == 0 and engine == "torch":
                assert _hooks(mobilenet) == 3  # ours + the library's two, never more
        gc.collect()
        after_run = _rss_mb()
    assert _hooks(mobilenet) == 0
    for i in range(cycles):
        with CamExplainer(mobilenet, arch="mobilenet_v2", engine=engine) as explainer:
            explainer(images[i % 8])
    gc.collect()
    after_cycles = _rss_mb()
    assert _hooks(mobilenet) == 0
    assert after_run - before < 25, f"RSS grew {after_run - before:.1f} MB over 470 images"
    assert after_cycles - before < 25, f"RSS grew {after_cycles - before:.1f} MB over {cycles} explainers"


# -- de-normalisation and overlays --------------------------------------------------------------------

def test_denormalisation_inverts_preprocessing():
    prep = Preprocessing(size=32)
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    shown = denormalize(to_batch([image], prep), prep)[0]
    np.testing.assert_allclose(shown, image / 255.0, atol=1e-5)
    naive = np.clip(to_batch([image], prep)[0].transpose(1, 2, 0) / 2 + 0.5, 0, 1)  # the notebook's mistake
    assert np.abs(naive - image / 255.0).max() > 0.2


def test_overlay_shapes_and_range():
    image = np.full((40, 30, 3), 0.5, np.float32)
    cam = np.zeros((10, 10), np.float32)
    cam[5:, :] = 1.0
    out = overlay(image, cam)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    # JET: hot (red) where the map is high, cold (blue) where it is low
    assert out[35, 15, 0] > out[35, 15, 2] and out[2, 15, 2] > out[2, 15, 0]
    assert overlay((image * 255).astype(np.uint8), cam).shape == (40, 30, 3)


# -- CAM mass -----------------------------------------------------------------------------------------

def test_mass_shares_on_hand_made_maps():
    cam = np.zeros((10, 10))
    cam[5:, :] = 1
    assert cam_mass_shares(cam) == pytest.approx({"lower_face": 1.0, "upper_face": 0.0, "outside": 0.0})
    cam = np.ones((10, 10))
    shares = cam_mass_shares(cam, (0.2, 0.2, 0.8, 0.8))  # face = central 6x6 pixels
    assert shares["lower_face"] == pytest.approx(18 / 100) and shares["upper_face"] == pytest.approx(18 / 100)
    assert shares["outside"] == pytest.approx(64 / 100)
    assert np.isnan(cam_mass_shares(np.zeros((4, 4)))["lower_face"])


def test_face_region_in_crop():
    # face 100x100 at (100, 100); margin 0.15 -> crop (85, 85, 215, 215) inside a big image
    face = face_region_in_crop((85, 85, 215, 215), 0.15, (1000, 1000))
    assert face == pytest.approx((15 / 130, 15 / 130, 115 / 130, 115 / 130))
    # the same face at the top-left corner: the crop is clipped at 0, the face starts at the crop's edge
    face = face_region_in_crop((-15, -15, 115, 115), 0.15, (1000, 1000))
    assert face == pytest.approx((0.0, 0.0, 100 / 115, 100 / 115))
    assert face_region_in_crop(None, 0.15, None) == (0.0, 0.0, 1.0, 1.0)


class _RedDetector(nn.Module):
    """A toy classifier whose only evidence is 'red' pixels: class 1 = red present, class 0 = absent."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].bias.zero_()
            self.features[0].weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])  # R - G - B
            self.features[0].weight[1, :, 0, 0] = torch.tensor([-1.0, 1.0, 1.0])   # its opposite
            self.fc.weight.copy_(torch.tensor([[-8.0, 0.0], [8.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.mark.parametrize("half", ["lower", "upper"])
def test_cam_mass_finds_evidence_in_the_known_half(half):
    prep = Preprocessing(size=64)
    image = np.full((64, 64, 3), 128, np.uint8)
    rows = slice(40, 56) if half == "lower" else slice(8, 24)
    image[rows, 16:48] = (230, 20, 20)
    model = _RedDetector().eval()
    with CamExplainer(model, layer="features") as explainer:
        result = explainer(to_batch([image], prep), targets=1)
    assert result.probabilities[0, 1] > 0.9
    shares = cam_mass_shares(result.cams[0])
    if half == "lower":
        assert shares["lower_face"] > 0.9
    else:
        assert shares["lower_face"] < 0.1
    table = mass_table(result.cams)
    summary = summarize_by_class(table, np.array([1]), CLASSES)
    assert summary["without_mask"]["n"] == 1 and summary["with_mask"]["n"] == 0
    assert summary["without_mask"]["lower_face_mean"] == pytest.approx(shares["lower_face"])


# -- visuals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_feature_layers_and_maps(arch):
    model = create_model(arch, 2, weights="none").eval()
    layers = default_feature_layers(model, arch)
    assert [label for label, _ in layers] == ["early", "middle", "late"]
    maps = capture_feature_maps(model, np.zeros((2, 3, 64, 64), np.float32), [name for _, name in layers])
    sizes = [maps[name].shape[-1] for _, name in layers]
    assert all(maps[name].shape[0] == 2 and maps[name].ndim == 4 for _, name in layers)
    assert sizes == sorted(sizes, reverse=True)  # deeper layers are coarser
    assert _hooks(model) == 0


def test_filters_and_trainable_weights(mobilenet):
    name, weights = first_conv_weights(mobilenet)
    assert name == "features.0.0" and weights.shape == (32, 3, 3, 3)
    head = trainable_weights(mobilenet, "mobilenet_v2", 0)
    assert [n for n, _ in head] == ["classifier.1.weight"]
    deeper = trainable_weights(mobilenet, "mobilenet_v2", 2, limit=100)
    assert len(deeper) > 1 and deeper[-1][0] == "classifier.1.weight"
    assert all(w.ndim >= 2 for _, w in deeper)
    assert len(trainable_weights(mobilenet, "mobilenet_v2", 19, limit=5)) == 5
    assert default_feature_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)))


# -- explain_files and the command --------------------------------------------------------------------

def _write_images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"face{i}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(50 + 10 * i, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_explain_files_writes_one_png_per_image(tmp_path):
    from maskwatch.explain.images import explain_files

    model = save_tiny_checkpoint(tmp_path / "m.pt")
    paths = _write_images(tmp_path / "in")
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(b"not an image")
    results = list(explain_files(model, [*paths, broken], tmp_path / "out", all_classes=True, batch_size=2))
    assert len(results) == 4
    assert [r.path for r in results if r.error] == [str(broken)]
    good = [r for r in results if r.error is None]
    assert len(good) == 3 and all(r.png.is_file() and r.png.stat().st_size > 5000 for r in good)
    assert all(abs(sum(r.probabilities.values()) - 1) < 1e-5 for r in good)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"face{i}.gradcam.png" for i in range(3)]


def test_explain_command(tmp_path):
    from typer.testing import CliRunner

    from maskwatch.cli import app

    model = save_tiny_checkpoint(tmp_path / "m.pt")
    _write_images(tmp_path / "in", 2)
    runner = CliRunner()
    result = runner.invoke(app, ["explain", "--model", str(model), str(tmp_path / "in"), "--method", "gradcam++",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face0.gradcampp.png", "face1.gradcampp.png"]
    narrow = runner.invoke(app, ["explain", "--model", str(model), str(tmp_path / "in"), "--method", "gradcam",
                                 "--out", str(tmp_path / "a-rather-long-output-folder-name" / "explained")],
                           env={"COLUMNS": "60"})
    flat = "".join(ch for ch in narrow.output if ch not in " \n│┃|")
    for png in sorted((tmp_path / "a-rather-long-output-folder-name" / "explained").glob("*.png")):
        assert str(png) in flat, f"{png} cut in the table:\n{narrow.output}"  # folded over lines, never cut
    bad = runner.invoke(app, ["explain", "--model", str(model), str(tmp_path / "in"), "--method", "nope"])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["explain", "--model", str(model), str(tmp_path / "missing.jpg")])
    assert missing.exit_code == 2


def test_explain_command_goes_image_by_image_for_slow_methods(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import maskwatch.explain.images as images_module
    from maskwatch.cli import app
    from maskwatch.explain.images import Explanation

    seen = {}

    def fake_explain_files(model_path, paths, out_dir, *, method, all_classes, layer, batch_size):
        seen[method] = batch_size
        for path in paths:
            yield Explanation(str(path), error="fake")

    monkeypatch.setattr(images_module, "explain_files", fake_explain_files)
    model = save_tiny_checkpoint(tmp_path / "m.pt")
    _write_images(tmp_path / "in", 2)
    runner = CliRunner()
    for method in ("scorecam", "gradcam"):
        result = runner.invoke(app, ["explain", "--model", str(model), str(tmp_path / "in"), "--method", method,
                                     "--out", str(tmp_path / "out")])  # fmt: skip
        assert result.exit_code == 1 and "2 of 2 images failed" in result.output  # every image reached the loop
    assert seen == {"scorecam": 1, "gradcam": 8}
