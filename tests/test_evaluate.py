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
