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
