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


# --------------------------------------------------------------------------------------------------
# Several datasets in one run


def write_voc_scenes(root, n_images=12, seed=0, labels=("with_mask", "without_mask"), face=40):
    """VOC scenes of synthetic faces (3 a scene, labels cycling) and split lists (train/valid/test by image)."""
    import numpy as np
    from conftest import make_face
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    lists = {"train": [], "valid": [], "test": []}
    k = 0
    for i in range(n_images):
        scene = Image.new("RGB", (3 * face + 40, face + 20), (80, 80, 80))
        objects = ""
        for j in range(3):
            name = labels[k % len(labels)]
            k += 1
            x0, y0 = 10 + j * (face + 10), 10
            scene.paste(make_face(labels.index(name) % 2, rng, face), (x0, y0))
            objects += (f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                        f"<xmax>{x0 + face}</xmax><ymax>{y0 + face}</ymax></bndbox></object>")
        scene.save(root / "images" / f"s{i}.jpg", quality=95)
        xml = f"<annotation><filename>s{i}.jpg</filename>{objects}</annotation>"
        (root / "annotations" / f"s{i}.xml").write_text(xml)
        lists["train" if i % 4 < 2 else "valid" if i % 4 == 2 else "test"].append(f"s{i}")
    split_dir = root.parent / f"{root.name}-splits"
    split_dir.mkdir()
    for split, stems in lists.items():
        (split_dir / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root, split_dir


def test_two_datasets_train_together_with_per_dataset_figures(tiny_dataset, tmp_path):
    from maskwatch.config import DataSource

    scenes, split_dir = write_voc_scenes(tmp_path / "scenes")
    sources = [str(tiny_dataset), DataSource(str(scenes), crops=True, min_face=12, splits=str(split_dir), weight=2)]
    out = tmp_path / "run"
    result = fit(load_config(data=sources, out=str(out), **{**FAST, "epochs": 2}))
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert {"val_acc_tiny", "val_acc_scenes"} <= set(rows[0])
    log = (out / "train.log").read_text()
    assert "(acc tiny " in log and " scenes " in log and "weight 2, each training sample drawn" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"tiny", "scenes"}
    assert metrics["datasets"]["scenes"]["n_images"] == 9  # 3 test scenes x 3 faces
    assert (out / "metrics-scenes.json").is_file() and (out / "metrics-tiny.predictions.csv").is_file()
    assert set(result.test_by_dataset) == {"tiny", "scenes"} and result.test_metrics is None
    data = json.loads((out / "data.json").read_text())
    assert [d["name"] for d in data["datasets"]] == ["tiny", "scenes"]
    assert data["datasets"][1]["counts"]["train"] == {"with_mask": 9, "without_mask": 9}
    # the saved config repeats (and resumes) the run
    again = load_config(out / "config.yaml")
    assert [s.path for s in again.sources()] == [str(tiny_dataset), str(scenes)]
    assert again.sources()[1].weight == 2 and again.sources()[1].splits == str(split_dir)
    checkpoint = load_checkpoint(out / "model.pt")
    assert {"val_acc_tiny", "val_acc_scenes"} <= set(checkpoint["metrics"]["validation"])


def test_no_test_leaves_test_sets_alone(tiny_dataset, tmp_path, monkeypatch):
    from maskwatch import evaluate

    def no_test(*args, **kwargs):
        raise AssertionError("--no-test must not evaluate a test split")

    monkeypatch.setattr(evaluate, "evaluate_samples", no_test)
    (tiny_dataset / "test" / "with_mask" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    # calibrate=False: the temperature fit evaluates the valid split with the same function
    result = fit(_config(tiny_dataset, tmp_path / "run", epochs=1, evaluate_test=False, calibrate=False))
    assert result.test_metrics is None and not (tmp_path / "run" / "metrics.json").exists()
    assert not any("zz_broken" in s.path for s in result.skipped)  # the test split was not even decoded


def test_three_classes_from_the_union_record_compliant_classes(tiny_dataset, tmp_path):
    from maskwatch.config import DataSource

    scenes, split_dir = write_voc_scenes(tmp_path / "scenes", labels=("with_mask", "without_mask",
                                                                       "mask_weared_incorrect"))
    sources = [str(tiny_dataset), DataSource(str(scenes), crops=True, min_face=12, splits=str(split_dir))]
    out = tmp_path / "run"
    result = fit(load_config(data=sources, out=str(out), **{**FAST, "epochs": 1}))
    assert result.classes == ["mask_weared_incorrect", "with_mask", "without_mask"]
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint["classes"] == result.classes and checkpoint["compliant_classes"] == ["with_mask"]
    scenes_test = result.test_by_dataset["scenes"]
    assert set(scenes_test["per_class"]) == set(result.classes)
    assert scenes_test["per_class"]["mask_weared_incorrect"]["support"] == 3
    # restricted to two classes: the third label's faces are left out and counted
    two = fit(load_config(data=sources, out=str(tmp_path / "two"), classes=["with_mask", "without_mask"],
                          **{**FAST, "epochs": 1}))
    assert two.classes == ["with_mask", "without_mask"]
    data = json.loads((tmp_path / "two" / "data.json").read_text())
    assert data["datasets"][1]["left_out"] == {"label 'mask_weared_incorrect' is not one of the classes": 12}


def test_feature_cache_key_follows_the_dataset_mix(tiny_dataset, tmp_path, monkeypatch):
    from maskwatch import training
    from maskwatch.config import DataSource

    calls = []
    original = training.extract_views

    def counting(*args, **kwargs):
        calls.append(kwargs["desc"])
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "extract_views", counting)
    monkeypatch.setenv("MASKWATCH_CACHE_DIR", str(tmp_path / "cache"))
    scenes, split_dir = write_voc_scenes(tmp_path / "scenes")

    def run(name, *sources, **extra):
        fit(load_config(data=list(sources), out=str(tmp_path / name), **{**FAST, "epochs": 1, **extra}))
        return len(calls)

    def voc(**options):
        return DataSource(str(scenes), crops=True, splits=str(split_dir), **{"min_face": 12, **options})

    assert run("a", str(tiny_dataset), voc()) == 4  # one entry per dataset: train + valid of each
    assert run("b", str(tiny_dataset), voc(weight=3, name="crowds")) == 4  # weights, names: same features
    assert run("c", str(tiny_dataset), voc(crop_margin=0.3)) == 6  # other boxes: the scenes' entry only
    assert run("d", voc(), str(tiny_dataset)) == 6  # same datasets in another order: both entries reused
    assert run("e", str(tiny_dataset)) == 6  # one dataset left out (a leave-one-source-out fold): reused
    assert run("f", voc(crop_margin=0.25), str(tiny_dataset)) == 8  # other scene boxes: that entry only


def test_cli_trains_on_two_datasets_and_evaluates_one_listed_split(tiny_dataset, tmp_path):
    """The CLI form end to end, on the live (notebook-style) path with a weight and scene faces of 12 px."""
    from typer.testing import CliRunner

    from maskwatch.cli import app

    scenes, split_dir = write_voc_scenes(tmp_path / "scenes", face=12)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", str(tiny_dataset), "--data",
                                 f"{scenes},crops,min_face=10,splits={split_dir},weight=2", "--no-test",
                                 "--no-fast-path", "--out", str(out), "--epochs", "1", "--image-size", "64",
                                 "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"] == [str(tiny_dataset), {"path": str(scenes), "crops": True, "min_face": 10,
                                                 "splits": str(split_dir), "weight": 2.0}]
    assert saved["evaluate_test"] is False and not (out / "metrics.json").exists()
    assert json.loads((out / "data.json").read_text())["datasets"][1]["counts"]["train"] == {
        "with_mask": 9, "without_mask": 9}
    report = tmp_path / "scenes-test.json"
    result = runner.invoke(app, ["evaluate", "--model", str(out / "model.pt"), "--data", str(scenes), "--crops",
                                 "--min-face", "10", "--splits", str(split_dir), "--split", "test", "--json",
                                 str(report)])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["n_images"] == 9


def test_run_fits_a_temperature_on_valid_unless_told_not_to(tiny_dataset, tmp_path):
    """calibrate: true (default) stores the valid-split fit in model.pt before the test metrics are made."""
    result = fit(_config(tiny_dataset, tmp_path / "cal", epochs=2))
    assert result.calibration is not None and result.calibration.n > 0
    checkpoint = load_checkpoint(tmp_path / "cal" / "model.pt")
    record = checkpoint["calibration"]
    assert record["n"] > 0 and "valid split of" in record["data"]
    assert checkpoint["temperature"] == pytest.approx(result.calibration.temperature)
    assert "calibration:" in (tmp_path / "cal" / "train.log").read_text()
    metrics = json.loads((tmp_path / "cal" / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(result.calibration.temperature)

    plain = fit(_config(tiny_dataset, tmp_path / "plain", epochs=2, calibrate=False))
    assert plain.calibration is None
    checkpoint = load_checkpoint(tmp_path / "plain" / "model.pt")
    assert "calibration" not in checkpoint and checkpoint["temperature"] == 1.0


def test_weight_averaging_and_camera_conditions_in_a_run(tiny_dataset, tmp_path):
    """wise_alpha < 1 keeps the fine-tuned model beside the averaged one; camera conditions change the views."""
    import torch

    from maskwatch.checkpoint import interpolate_checkpoints

    out = tmp_path / "run"
    fit(_config(tiny_dataset, out, epochs=2, finetune=1, finetune_epochs=1, wise_alpha=0.5, grayscale_prob=0.5,
                infrared_prob=0.5, balance="classes", calibrate=False, evaluate_test=False))
    stage1, finetuned, averaged = (torch.load(out / name, weights_only=True)
                                   for name in ("model-stage1.pt", "model-finetuned.pt", "model.pt"))
    expected = interpolate_checkpoints(stage1, finetuned, 0.5)["state_dict"]
    for key, value in averaged["state_dict"].items():
        assert torch.allclose(value.float(), expected[key].float()), key
    assert averaged["averaging"]["alpha"] == 0.5
    changed = [k for k in finetuned["state_dict"] if not torch.equal(finetuned["state_dict"][k],
                                                                     stage1["state_dict"][k])]
    assert changed and all(k.startswith(("features.18", "classifier")) for k in changed)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["grayscale_prob"] == 0.5 and saved["balance"] == "classes" and saved["wise_alpha"] == 0.5
