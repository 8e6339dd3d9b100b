"""The HTML insight report: plot helpers and analysis on tiny inputs, then whole reports built from a tiny
random model on a tiny generated dataset (plus one check on the real shared data)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_class_folders
from matplotlib.figure import Figure
from PIL import Image

from maskwatch import plotting
from maskwatch.report import analysis, plots

CLASSES = ["with_mask", "without_mask"]
SECTION_IDS = ["summary", "training", "metrics", "galleries", "internals", "explanation-quality"]


# -- helpers shared with test_report_browser ----------------------------------------------------------

def make_tiny_run(root: Path, *, size: int = 64, per_class: int = 10, seed: int = 0) -> Path:
    """A run folder like `maskwatch train` writes, with a random-init MobileNetV2 at ``size`` px: model.pt,
    config.yaml, history.csv, data.json, metrics.json + metrics.predictions.csv, MODEL_CARD.md."""
    from maskwatch.checkpoint import atomic_torch_save, make_checkpoint
    from maskwatch.evaluate import evaluate_dataset, write_outputs
    from maskwatch.models import create_model
    from maskwatch.preprocess import Preprocessing

    data = write_class_folders(root / "data", per_class=per_class, seed=seed, size=48)
    run = root / "run"
    run.mkdir(parents=True)
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2", 2, weights="none")
    config = {"data": str(data), "arch": "mobilenet_v2", "image_size": size, "finetune": 1, "crops": False,
              "min_face": 32, "crop_margin": 0.15}
    checkpoint = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=CLASSES,
                                 preprocessing=Preprocessing(size=size).to_dict(), config=config,
                                 metrics={"validation": {"val_acc": 0.5}})
    atomic_torch_save(checkpoint, run / "model.pt")
    (run / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in config.items()))
    with (run / "history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stage", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr",
                         "seconds"])
        for i in range(1, 6):
            stage = 1 if i <= 3 else 2
            writer.writerow([stage, i if stage == 1 else i - 3, 1 / i, 0.5 + i / 20, 1.2 / i, 0.5 + i / 25,
                             0.5 + i / 26, 1e-3, 0.1])
    (run / "data.json").write_text(json.dumps({
        "root": str(data), "layout": "folders", "classes": CLASSES,
        "counts": {s: dict.fromkeys(CLASSES, per_class) for s in ("train", "valid", "test")},
        "skipped": [{"path": "x/broken.jpg", "reason": "zero-byte file"}]}))
    (run / "MODEL_CARD.md").write_text("# Tiny card\n\nA *random* model.\n\n| k | v |\n|---|---|\n| a | 1 |\n\n"
                                       "![remote](https://example.com/x.png) <script>alert(1)</script>\n")
    evaluation = evaluate_dataset(run / "model.pt", data, split="test")
    write_outputs(evaluation, run / "metrics.json")
    return run


def assert_self_contained(html: str) -> None:
    for section in SECTION_IDS:
        assert f'id="{section}"' in html, section
    sources = re.findall(r'\ssrc="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert "<script" not in html.lower()
    assert not re.search(r'<link\b', html) and "@import" not in html and "url(" not in html
    assert not re.search(r'\ssrc="https?:', html)


def _figure_ok(fig: Figure) -> None:
    assert isinstance(fig, Figure) and fig.axes
    uri = plotting.figure_to_data_uri(fig, dpi=40)
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "PNG" and image.width > 20 and image.height > 20


# -- analysis -----------------------------------------------------------------------------------------

def test_reliability_matches_metrics_ece():
    from maskwatch.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=200)
    probs = np.stack([1 - p1, p1], axis=1)
    labels = (rng.uniform(size=200) < p1).astype(int)
    rel = analysis.reliability(probs, labels, bins=10)
    assert rel.ece == pytest.approx(expected_calibration_error(probs, labels, 10))
    assert rel.counts.sum() == 200 and len(rel.edges) == 11
    filled = rel.counts > 0
    assert np.isfinite(rel.accuracy[filled]).all() and np.isnan(rel.accuracy[~filled]).all()


def test_best_f1_threshold_on_hand_made_scores():
    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    positives = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    best = analysis.best_f1_threshold(scores, positives)
    # threshold 0.35 -> predictions {0.35, 0.4, 0.8, 0.9}: tp 3, fp 1 -> F1 6/7; 0.8 -> tp 2, fn 1 -> F1 0.8
    assert best["threshold"] == pytest.approx(0.35) and best["f1"] == pytest.approx(6 / 7)
    assert analysis.best_f1_threshold(scores, np.ones(6, bool)) is None
    table = analysis.threshold_table(np.stack([1 - scores, scores], 1), positives.astype(int), CLASSES)
    assert [row["class"] for row in table] == CLASSES and table[1]["threshold"] == pytest.approx(0.35)


def test_gallery_picks():
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.58, 0.42]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    picks = analysis.pick_galleries(probs, labels, 2, per_gallery=8, low_confidence=0.6)
    assert [p.index for p in picks["misclassified"][0]] == [2]
    assert [p.index for p in picks["misclassified"][1]] == [5]
    assert [p.index for p in picks["low_confidence"][0]] == [1]
    assert [p.index for p in picks["low_confidence"][1]] == [5]  # 0.58 < 0.6; 0.6 itself is not below
    assert [p.index for p in picks["confident_correct"][0]] == [0, 1]
    assert [p.index for p in picks["confident_correct"][1]] == [4, 3]
    assert picks["misclassified"][0][0].predicted == 1 and picks["misclassified"][0][0].probability == 0.8
    assert len(analysis.pick_galleries(probs, labels, 2, per_gallery=1)["confident_correct"][0]) == 1


# -- plot helpers on tiny inputs ----------------------------------------------------------------------

def test_plot_helpers_on_tiny_inputs():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=12)
    probs = np.stack([1 - p1, p1], axis=1)
    labels = np.array([0, 1] * 6)
    history = [{"stage": "1", "epoch": "1", "train_loss": "0.7", "val_loss": "0.6", "train_acc": "0.5",
                "val_acc": "0.6", "val_macro_f1": "0.55"},
               {"stage": "2", "epoch": "1", "train_loss": "0.5", "val_loss": "", "train_acc": "0.7",
                "val_acc": "0.7", "val_macro_f1": "0.7"}]
    _figure_ok(plots.plot_training_curves(history))
    _figure_ok(plots.plot_confusion([[3, 1], [0, 2]], CLASSES))
    _figure_ok(plots.plot_confusion([[0, 0], [0, 0]], CLASSES))
    _figure_ok(plots.plot_roc(labels, probs, CLASSES))
    _figure_ok(plots.plot_precision_recall(labels, probs, CLASSES, analysis.threshold_table(probs, labels, CLASSES)))
    _figure_ok(plots.plot_reliability(analysis.reliability(probs, labels)))
    before = analysis.reliability(probs**2, labels)
    _figure_ok(plots.plot_reliability(analysis.reliability(probs, labels), before, 1.7))
    table = {"lower_face": np.array([0.7, 0.2, np.nan]), "upper_face": np.array([0.2, 0.5, np.nan]),
             "outside": np.array([0.1, 0.3, np.nan])}
    _figure_ok(plots.plot_cam_mass(table, np.array([0, 1, 1]), CLASSES, {"with_mask": 0.3, "without_mask": 0.3}))
    _figure_ok(plots.plot_cam_mass({k: v[:0] for k, v in table.items()}, np.zeros(0, int), CLASSES))
    image = rng.uniform(size=(16, 16, 3))
    maps = [("early", "a", rng.uniform(size=(4, 8, 8))), ("late", "b", rng.uniform(size=(10, 2, 2)))]
    _figure_ok(plots.plot_feature_maps(image, maps, k=3))
    _figure_ok(plots.plot_filters(rng.normal(size=(5, 3, 3, 3))))
    _figure_ok(plots.plot_filters(rng.normal(size=(4, 1, 3, 3))))
    _figure_ok(plots.plot_weight_histograms([("w", rng.normal(size=(4, 5))), ("v", rng.normal(size=(3, 3, 1, 1)))]))
    overlays = [("map", (image * 255).astype(np.uint8))]
    _figure_ok(plotting.plot_explanation(image, overlays, np.array([0.3, 0.7]), CLASSES))
    uri = plotting.image_to_data_uri((image * 255).astype(np.uint8))
    assert uri.startswith("data:image/jpeg;base64,")


def test_gallery_tiles_are_denormalised(tmp_path):
    """The tile's input picture is the image itself, not the normalised tensor (nor the notebook's img/2+.5)."""
    from maskwatch.preprocess import Preprocessing, denormalize, to_batch
    from maskwatch.report.build import TILE_SIZE, _tile

    prep = Preprocessing(size=TILE_SIZE)
    yy, xx = np.mgrid[0:TILE_SIZE, 0:TILE_SIZE]
    image = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], axis=-1).clip(0, 255).astype(np.uint8)
    shown = denormalize(to_batch([image], prep), prep)[0]
    source, over = _tile(shown, np.zeros((TILE_SIZE, TILE_SIZE), np.float32))
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))), dtype=np.float64)
    assert np.abs(decoded - image).mean() < 3
    assert over.startswith("data:image/jpeg;base64,")


# -- whole reports ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("report"))


def test_report_command_on_a_run_folder(tiny_run):
    """`maskwatch report RUN_DIR` reuses the run's test predictions and finds everything beside the model."""
    from typer.testing import CliRunner

    from maskwatch.cli import app

    result = CliRunner().invoke(app, ["report", str(tiny_run), "--cam-samples", "6"])
    assert result.exit_code == 0, result.output
    assert "Grad-CAM mass" in result.output and "report.html" in result.output
    path = tiny_run / "report.html"
    html = path.read_text()
    assert_self_contained(html)
    # summary: data counts, skipped training files, config, card (rendered, images and raw HTML disabled), versions
    assert "x/broken.jpg" in html and "zero-byte file" in html
    assert "<h1>Tiny card</h1>" in html and "<em>random</em>" in html and "<table>" in html
    assert 'src="https://example.com' not in html and "&lt;script&gt;" in html
    assert "torchvision" in html and "finetune" in html
    assert "5 epochs from" in html  # training curves from history.csv
    # metrics, galleries, internals, explanation quality
    assert "Threshold that maximises F1" in html and "ECE" in html
    for key in analysis.GALLERIES:
        assert f'data-gallery="{key}"' in html
    assert html.count('class="tile') >= 4 and "p=" in html
    assert "features.18.0.weight" in html and "classifier.1.weight" in html  # finetune 1: last block + head
    assert "computed with onnx" in html
    assert path.stat().st_size < 5_000_000


def test_reliability_diagram_shows_before_and_after_with_a_legend():
    """With a temperature, the T = 1 curve is drawn over the calibrated bars, both named in the legend."""
    rng = np.random.default_rng(1)
    p1 = rng.uniform(0.5, 1.0, size=300)
    probs = np.stack([p1, 1 - p1], axis=1)
    labels = (rng.uniform(size=300) > 0.8).astype(int)
    sharp = np.stack([np.sqrt(p1), 1 - np.sqrt(p1)], axis=1)
    fig = plots.plot_reliability(analysis.reliability(probs, labels), analysis.reliability(sharp, labels), 1.7)
    ax, hist = fig.axes
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("T = 1.7" in t for t in texts) and any(t.startswith("before calibration (T = 1, ECE") for t in texts)
    assert "→" in ax.get_title() and {t.get_text() for t in hist.get_legend().get_texts()} == {"calibrated", "T = 1"}
    plain = plots.plot_reliability(analysis.reliability(probs, labels))
    assert plain.axes[1].get_legend() is None and "→" not in plain.axes[0].get_title()


def test_report_of_a_calibrated_model_shows_ece_before_and_after(tiny_run, tmp_path):
    """A run whose model got a temperature after its test predictions were written: the report recomputes the
    probabilities from the stored logits and shows the ECE with and without the temperature."""
    from maskwatch.report.build import report_for_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    checkpoint = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    checkpoint["temperature"] = 0.2
    torch.save(checkpoint, run / "model.pt")
    result = report_for_run(run, cam_samples=2, per_gallery=2)
    html = result.path.read_text()
    assert "ECE before calibration (T = 1)" in html and "before temperature scaling, T = 0.2" in html


def test_evaluate_report_option_and_errors(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from maskwatch.cli import app

    runner = CliRunner()
    data = tiny_run.parent / "data"
    out = tmp_path / "eval" / "report.html"
    card = tmp_path / "card.md"
    card.write_text("# Given card\n")
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_run / "model.pt"), "--data", str(data),
                                 "--split", "valid", "--report", str(out), "--low-confidence", "0.9",
                                 "--model-card", str(card), "--json", str(tmp_path / "eval" / "m.json")])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert_self_contained(html)
    assert "Given card" in html and "below 0.9" in html and "[valid]" in html
    assert (tmp_path / "eval" / "m.json").is_file()

    assert runner.invoke(app, ["report", str(tmp_path)]).exit_code == 2  # no model.pt
    assert runner.invoke(app, ["report", str(tiny_run), "--low-confidence", "1.5"]).exit_code == 2
    assert runner.invoke(app, ["report", str(tiny_run), "--method", "nope"]).exit_code == 2
    bad_card = runner.invoke(app, ["evaluate", "--model", str(tiny_run / "model.pt"), "--data", str(data),
                                   "--report", str(out), "--model-card", str(tmp_path / "none.md")])
    assert bad_card.exit_code == 2 and "none.md" in bad_card.output  # refused before evaluating
    assert runner.invoke(app, ["report", str(tiny_run), "--model-card", str(tmp_path / "none.md")]).exit_code == 2


def test_report_for_a_bare_model_on_other_data(tmp_path):
    """A folder with only model.pt (like the bundled model): no history, data.json or card, yet every
    section is there; with data given, the model is evaluated on it."""
    from test_explain import save_tiny_checkpoint

    from maskwatch.report.build import report_for_run

    data = write_class_folders(tmp_path / "d", per_class=4, splits=("test",))
    save_tiny_checkpoint(tmp_path / "bare" / "model.pt")
    result = report_for_run(tmp_path / "bare", data=data, out=tmp_path / "bare.html", cam_samples=2, per_gallery=2,
                            method="gradcam++")
    html = result.path.read_text()
    assert_self_contained(html)
    assert "No training history" in html and "No model card found" in html and "gradcam++" in html
    assert set(result.mass_summary) == set(CLASSES)
    assert all(s["n"] == 2 and 0 <= s["lower_face_mean"] <= 1 for s in result.mass_summary.values())


@pytest.mark.integration
@pytest.mark.slow
def test_real_model_on_real_faces(tmp_path):
    """The bundled model on a slice of the shared test faces: a trained mask model puts more of its
    Grad-CAM mass on the lower face of masked faces than a uniform map would."""
    from conftest import shared_or_skip

    from maskwatch.bundled import default_model_path
    from maskwatch.data.datasets import open_dataset
    from maskwatch.evaluate import evaluate_samples
    from maskwatch.report.build import build_report

    faces = shared_or_skip("faces")
    try:
        model = default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    dataset = open_dataset(faces, classes=CLASSES)
    test = dataset.split("test")
    samples = [s for s in test if s.label == 0][:24] + [s for s in test if s.label == 1][:24]
    evaluation = evaluate_samples(model, samples, CLASSES)
    evaluation.info = {"model": str(model), "data": str(faces), "split": "test (first 24 per class)"}
    result = build_report(evaluation, tmp_path / "real.html", cam_samples=24, per_gallery=4)
    assert_self_contained(result.path.read_text())
    assert evaluation.report["accuracy"] > 0.9
    masked = result.mass_summary["with_mask"]
    assert masked["lower_face_mean"] > masked["uniform_lower_face"]


def test_embedded_model_card_drops_relative_links_and_keeps_absolute_ones(tmp_path):
    from maskwatch.report.build import render_markdown

    html = render_markdown("[config](../configs/run.yaml), [docs](https://example.org), [top](#metrics)", tmp_path)
    assert 'href="../configs/run.yaml"' not in html and "config (" in html
    assert str((tmp_path / "../configs/run.yaml").resolve()) in html
    assert '<a href="https://example.org">docs</a>' in html and '<a href="#metrics">top</a>' in html
    card = render_markdown("# Card\n\n<!-- generated: metrics -->\n| a |\n|---|\n| 1 |\n<!-- /generated -->\n")
    assert "generated" not in card and "&lt;!--" not in card and "<table>" in card


def test_footer_timings_have_human_labels():
    from maskwatch.report.build import timing_lines

    lines = timing_lines({"metrics_s": 1.25, "cam_s": 3.0, "new_step_s": 0.5})
    assert lines == ["metrics and curves 1.2 s", "Grad-CAM maps 3.0 s", "new step 0.5 s"]
