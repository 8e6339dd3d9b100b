"""evaluate_dataset: the face-crop margin defaults to the model's own."""

from __future__ import annotations

import pytest

import maskwatch.evaluate as evaluate_module


class _StopError(Exception):
    pass


class _Model:
    classes = ("with_mask", "without_mask")
    crop_margin = 0.3
    backend = "fake"


@pytest.mark.parametrize(("given", "used"), [(None, 0.3), (0.0, 0.0), (0.2, 0.2)])
def test_crop_margin_none_is_the_models(monkeypatch, tmp_path, given, used):
    seen = {}

    def fake_open_dataset(data, **kwargs):
        seen.update(kwargs)
        raise _StopError

    monkeypatch.setattr(evaluate_module, "load_classifier", lambda path, backend="auto": _Model())
    monkeypatch.setattr(evaluate_module, "open_dataset", fake_open_dataset)
    with pytest.raises(_StopError):
        evaluate_module.evaluate_dataset(tmp_path / "m.onnx", tmp_path, crops=True, crop_margin=given)
    assert seen["crop_margin"] == used


def _bad_files(folder):
    (folder / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "zz_empty.jpg").write_bytes(b"")
    (folder / "zz_notes.txt").write_text("not an image")


def test_train_and_evaluate_report_the_same_skipped_files(tiny_dataset, tmp_path):
    import json

    from maskwatch.config import load_config
    from maskwatch.training import fit

    _bad_files(tiny_dataset / "test" / "with_mask")
    run = tmp_path / "run"
    fit(load_config(data=str(tiny_dataset), out=str(run), image_size=64, epochs=1, views=1, workers=0))
    trained = {(s["path"], s["reason"]) for s in json.loads((run / "data.json").read_text())["skipped"]}
    metrics = {(s["path"], s["reason"]) for s in json.loads((run / "metrics.json").read_text())["skipped"]}
    evaluation = evaluate_module.evaluate_dataset(run / "model.pt", tiny_dataset, split="test", backend="torch")
    evaluated = {(s.path, s.reason) for s in evaluation.skipped}
    assert len(trained) == 3 and {p.rsplit("/", 1)[-1] for p, _ in trained} == {
        "zz_corrupt.jpg", "zz_empty.jpg", "zz_notes.txt"}
    assert evaluated == trained
    assert metrics <= trained  # train's own test evaluation only meets files that passed verification


def test_a_model_is_not_scored_on_the_images_it_was_trained_on(tiny_dataset, tmp_path):
    """The model records its train/valid images by content; evaluate leaves them out (also when copied
    elsewhere, and in the ONNX export), refuses with exit 2 when nothing else is left, and scores them only
    when asked."""
    import json
    import shutil

    from typer.testing import CliRunner

    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.cli import app
    from maskwatch.config import load_config
    from maskwatch.runtime.export import export_onnx
    from maskwatch.training import fit

    run = tmp_path / "run"
    fit(load_config(data=str(tiny_dataset), out=str(run), image_size=64, epochs=1, views=1, workers=0, calibrate=False))
    runner = CliRunner()
    refused = runner.invoke(app, ["evaluate", "--model", str(run / "model.pt"), "--data", str(tiny_dataset),
                                  "--split", "train", "--backend", "torch"])
    assert refused.exit_code == 2, refused.output
    assert "used to train or validate this model" in refused.output and "--include-training-data" in refused.output
    record = load_checkpoint(run / "model.pt")["training_data"]
    assert record["datasets"][0]["name"] == "tiny" and len(record["images"]["train"]) == 24
    assert len(record["images"]["valid"]) == 24

    evaluation = evaluate_module.evaluate_dataset(run / "model.pt", tiny_dataset, split="all", backend="torch")
    assert len(evaluation.samples) == 24  # the 24 test images only
    assert evaluation.info["left_out_training_data"] == {"faces": 48, "images": 48, "by_split": {"train": 24,
                                                                                                  "valid": 24}}
    everything = evaluate_module.evaluate_dataset(run / "model.pt", tiny_dataset, split="all", backend="torch",
                                                  include_training_data=True)
    assert len(everything.samples) == 72 and everything.info["left_out_training_data"] is None

    copy = tmp_path / "copy"  # the same pictures under another folder and name are still recognised
    shutil.copytree(tiny_dataset / "train", copy / "test")
    shutil.copytree(tiny_dataset / "test", copy / "valid")
    onnx = export_onnx(run / "model.pt", tmp_path / "model.onnx")
    result = runner.invoke(app, ["evaluate", "--model", str(onnx), "--data", str(copy), "--split", "test"])
    assert result.exit_code == 2 and "used to train or validate this model" in result.output
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--model", str(onnx), "--data", str(copy), "--split", "test",
                                 "--include-training-data", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["n_images"] == 24
