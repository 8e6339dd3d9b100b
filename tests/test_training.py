"""The fit loop on a tiny generated dataset: fast (cached) and plain paths agree, runs resume, files appear."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from maskwatch.checkpoint import load_checkpoint
from maskwatch.config import load_config
from maskwatch.data.datasets import DatasetError
from maskwatch.training import fit

FAST = {"image_size": 64, "epochs": 6, "batch_size": 16, "workers": 0, "lr": 3e-3, "patience": 10, "views": 2}


def _config(data, out, **overrides):
    settings = {**FAST, **overrides}
    return load_config(data=str(data), out=str(out), **settings)


def test_fast_and_plain_loops_reach_the_same_accuracy(tiny_dataset_session, tmp_path):
    fast = fit(_config(tiny_dataset_session, tmp_path / "fast", fast_path=True, augment=False))
    plain = fit(_config(tiny_dataset_session, tmp_path / "plain", fast_path=False, augment=False))
    acc_fast = fast.test_metrics["accuracy"]
    acc_plain = plain.test_metrics["accuracy"]
    assert acc_fast >= 0.9 and acc_plain >= 0.9
    assert abs(acc_fast - acc_plain) <= 0.07
    assert abs(fast.history[-1]["val_loss"] - plain.history[-1]["val_loss"]) < 0.15


def test_run_folder_holds_everything(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    result = fit(_config(tiny_dataset, out, epochs=3, finetune=1, finetune_epochs=2))
    for name in ("config.yaml", "history.csv", "model.pt", "last.pt", "train.log", "metrics.json", "data.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("1", "3"), ("2", "1"), ("2", "2")]
    assert set(rows[0]) == {"stage", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
                            "lr", "seconds"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["finetune"] == 1 and saved["image_size"] == 64
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint["classes"] == ["with_mask", "without_mask"]
    assert checkpoint["preprocessing"]["size"] == 64
    assert checkpoint["config"]["finetune"] == 1
    assert checkpoint["metrics"]["validation"]["stage"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 24 and result.test_metrics["accuracy"] == metrics["accuracy"]


def test_resume_continues_an_interrupted_run(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    fit(_config(tiny_dataset, out, epochs=2))
    # Pretend the run had been asked for 4 epochs and was killed after 2.
    import torch

    state = torch.load(out / "last.pt", weights_only=True)
    state["stage_done"] = False
    torch.save(state, out / "last.pt")
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["epochs"] = 4
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = fit(load_config(out / "config.yaml"), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == 4


def test_existing_run_is_not_overwritten(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    fit(_config(tiny_dataset, out, epochs=1))
    with pytest.raises(FileExistsError):
        fit(_config(tiny_dataset, out, epochs=1))


def test_resume_without_a_run_is_an_error(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume"):
        fit(_config(tiny_dataset, tmp_path / "never"), resume=True)


def test_corrupt_file_is_skipped_not_fatal(tiny_dataset, tmp_path):
    (tiny_dataset / "train" / "with_mask" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = fit(_config(tiny_dataset, tmp_path / "run", epochs=1))
    assert any(s.path.endswith("zz_broken.jpg") for s in result.skipped)
    assert "zz_broken.jpg" in (tmp_path / "run" / "train.log").read_text()


def test_unusable_dataset_fails_before_training(tmp_path):
    from conftest import write_class_folders

    root = write_class_folders(tmp_path / "d", per_class=3, classes=("with_mask",))
    with pytest.raises(DatasetError):
        fit(_config(root, tmp_path / "run"))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_balanced_class_weights_and_resnet(tiny_dataset, tmp_path):
    result = fit(_config(tiny_dataset, tmp_path / "run", arch="resnet18", weights="none", epochs=2,
                         class_weights="balanced"))
    assert load_checkpoint(result.model_path)["arch"] == "resnet18"


def test_one_class_test_split_is_refused_before_training(tmp_path):
    from conftest import write_class_folders

    root = write_class_folders(tmp_path / "d", per_class=4)
    for image in (root / "test" / "without_mask").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match="split 'test' holds only one class"):
        fit(_config(root, tmp_path / "run"))
    assert not (tmp_path / "run" / "model.pt").exists()


def _interrupt_at(monkeypatch, epoch: int, where: str = "save_resume_state"):
    """Ctrl-C at ``epoch``: after its history row, before its resume state (the worst moment)."""
    from maskwatch import training

    original = getattr(training._Run, where)

    def hook(self, stage, at, *args, **kwargs):
        if at == epoch:
            raise KeyboardInterrupt
        return original(self, stage, at, *args, **kwargs)

    monkeypatch.setattr(training._Run, where, hook)


def test_interrupted_run_is_resumable_and_its_history_has_each_epoch_once(tiny_dataset, tmp_path, monkeypatch):
    from maskwatch.training import TrainingInterrupted

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 3)
        with pytest.raises(TrainingInterrupted) as caught:
            fit(_config(tiny_dataset, out, epochs=4))
    assert caught.value.resume_command == f"maskwatch train --resume --out {out}"
    log = (out / "train.log").read_text()
    assert "stage 1 epoch 1: train loss" in log and "stage 1 epoch 3: train loss" in log  # per-epoch metrics
    assert "interrupted in stage 1 (head)" in log and "maskwatch train --resume --out" in log
    assert [r["epoch"] for r in csv.DictReader((out / "history.csv").open())] == ["1", "2", "3"]

    resumed = fit(load_config(out / "config.yaml"), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["epoch"] for r in csv.DictReader((out / "history.csv").open())] == ["1", "2", "3", "4"]


def test_failed_run_leaves_its_error_in_train_log(tiny_dataset, tmp_path, monkeypatch):
    from maskwatch import training

    def broken(self, row):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(training._Run, "save_best", broken)
    with pytest.raises(RuntimeError):
        fit(_config(tiny_dataset, tmp_path / "run", epochs=2))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "stage 1 epoch 1: train loss" in log
    assert "training failed in stage 1 (head): disk on fire" in log


def test_resume_before_the_first_epoch_starts_again_in_place(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            fit(_config(tiny_dataset, out, epochs=2))
    assert not (out / "last.pt").exists()
    resumed = fit(load_config(out / "config.yaml"), resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_resume_of_a_finished_run_says_so_without_work(tiny_dataset, tmp_path, monkeypatch):
    from maskwatch import training

    out = tmp_path / "run"
    fit(_config(tiny_dataset, out, epochs=1))

    def no_work(*args, **kwargs):
        raise AssertionError("a finished run must not load data or compute features")

    monkeypatch.setattr(training, "load_data", no_work)
    with pytest.raises(training.RunFinishedError, match="finished run"):
        fit(load_config(out / "config.yaml"), resume=True)


def test_feature_cache_is_reused_across_head_recipes_only(tiny_dataset, tmp_path, monkeypatch):
    from maskwatch import training

    calls = []
    original = training.extract_views

    def counting(*args, **kwargs):
        calls.append(kwargs["desc"])
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "extract_views", counting)
    monkeypatch.setenv("MASKWATCH_CACHE_DIR", str(tmp_path / "cache"))
    first = fit(_config(tiny_dataset, tmp_path / "a", epochs=2))
    assert len(calls) == 2 and any((tmp_path / "cache" / "features").glob("*.pt"))

    second = fit(_config(tiny_dataset, tmp_path / "b", epochs=3, lr=1e-3, dropout=0.3))  # another head recipe
    assert len(calls) == 2  # reused, not recomputed
    assert "feature cache reused" in (tmp_path / "b" / "train.log").read_text()
    assert second.test_metrics["n_images"] == first.test_metrics["n_images"]

    fit(_config(tiny_dataset, tmp_path / "c", epochs=1, views=3))  # other views: recomputed
    assert len(calls) == 4
    import numpy as np
    from conftest import make_face

    make_face(0, np.random.default_rng(9)).save(tiny_dataset / "train" / "with_mask" / "new.jpg")  # other data
    fit(_config(tiny_dataset, tmp_path / "d", epochs=1, views=3))
    assert len(calls) == 6
    fit(_config(tiny_dataset, tmp_path / "e", epochs=1, views=3, cache_features=False))
    assert len(calls) == 8
