"""The command line, end to end on a tiny generated dataset: train, then evaluate, with trustworthy exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from maskwatch.cli import app

runner = CliRunner()


def test_train_then_evaluate(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(tiny_dataset), "--out", str(out), "--epochs", "3",
                                 "--image-size", "64", "--views", "1", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").is_file()
    report = tmp_path / "eval" / "test.json"
    result = runner.invoke(app, ["evaluate", "--model", str(out / "model.pt"), "--data", str(tiny_dataset),
                                 "--json", str(report)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(report.read_text())
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "classes", "n_images", "skipped",
                "roc_auc", "ece"):
        assert key in metrics, key
    assert metrics["n_images"] == 24 and metrics["split"] == "test"
    assert sum(map(sum, metrics["confusion_matrix"])) == 24
    assert set(metrics["per_class"]["with_mask"]) == {"precision", "recall", "f1", "support"}
    assert (tmp_path / "eval" / "test.confusion.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "test.predictions.csv").read_text().count("\n") == 25
    assert "accuracy" in result.output


def test_bad_dataset_exits_2_with_a_reason(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_config_typo_exits_2_with_suggestion(tiny_dataset, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 0.1\n")
    result = runner.invoke(app, ["train", "--data", str(tiny_dataset), "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown setting 'learning_rate'; did you mean 'lr'?" in result.output


def test_help_explains_every_option():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--data", "--arch", "--finetune", "--weights", "--resume", "--fast-path"):
        assert option in result.output


def test_train_ctrl_c_exits_130_and_says_how_to_resume(tiny_dataset, tmp_path, monkeypatch):
    import maskwatch.training as training

    out = tmp_path / "run"

    def interrupted(cfg, resume=False):
        raise training.TrainingInterrupted(out, "in stage 1 (head)")

    monkeypatch.setattr(training, "fit", interrupted)
    result = runner.invoke(app, ["train", "--data", str(tiny_dataset), "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert f"Resume with: maskwatch train --resume --out {out}" in result.output
    assert "Traceback" not in result.output


def test_train_resume_of_a_finished_run_exits_0_saying_so(tiny_dataset, tmp_path, monkeypatch):
    import maskwatch.training as training

    out = tmp_path / "run"

    def finished(cfg, resume=False):
        raise training.RunFinishedError(out)

    monkeypatch.setattr(training, "fit", finished)
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--data", str(tiny_dataset)])
    assert result.exit_code == 0, result.output
    assert "finished run" in result.output and "nothing to resume" in result.output


def test_max_pixels_is_one_limit_for_the_cli_and_the_api(tmp_path, monkeypatch):
    import pytest
    from conftest import write_class_folders
    from PIL import Image

    from maskwatch.data.images import MAX_PIXELS_ENV, BadImageError, decode_rgb

    monkeypatch.setenv(MAX_PIXELS_ENV, "")  # restored after the test (the option sets it)
    root = write_class_folders(tmp_path / "d", per_class=3, splits=("test",))
    big = root / "test" / "with_mask" / "big.png"
    Image.new("RGB", (300, 200)).save(big)  # 60000 px
    with pytest.raises(BadImageError) as api:
        decode_rgb(big, max_pixels=50_000)
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["--max-pixels", "50000", "evaluate", "--data", str(root), "--backend", "torch",
                                 "--json", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    skipped = {item["path"]: item["reason"] for item in json.loads(out.read_text())["skipped"]}
    assert skipped == {str(big): api.value.reason}
    assert "too many pixels (300x200)" in api.value.reason

    result = runner.invoke(app, ["--max-pixels", "-1", "evaluate", "--data", str(root)])
    assert result.exit_code == 2 and "--max-pixels must be >= 0" in result.output
