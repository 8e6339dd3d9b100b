"""Checkpoints are written atomically: a crash or a kill mid-write leaves the previous file intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from maskwatch.checkpoint import atomic_torch_save, atomic_write, build_model, load_checkpoint, make_checkpoint
from maskwatch.models import create_model


def test_exception_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"good old model")

    def half_write(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"good old model"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_killed_writer_leaves_old_file_intact(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"good old model")
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from maskwatch.checkpoint import atomic_write
        def slow(tmp):
            with open(tmp, "wb") as handle:
                handle.write(b"partial bytes")
                handle.flush()
                time.sleep(60)
        atomic_write(Path({str(target)!r}), slow)
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert time.time() < deadline, "writer never started"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    assert target.read_bytes() == b"good old model"


def test_checkpoint_round_trip_and_half_precision(tmp_path):
    model = create_model("mobilenet_v2", 2, weights="none").eval()
    full = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=["a", "b"],
                           preprocessing={"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3})
    half = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=["a", "b"],
                           preprocessing={"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}, half=True)
    atomic_torch_save(full, tmp_path / "full.pt")
    atomic_torch_save(half, tmp_path / "half.pt")
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = build_model(load_checkpoint(tmp_path / "full.pt"))(x)
        b = build_model(load_checkpoint(tmp_path / "half.pt"))(x)
    assert torch.allclose(a, model(x), atol=1e-6)
    assert torch.allclose(a, b, atol=5e-2)
    checkpoint = load_checkpoint(tmp_path / "full.pt")
    assert checkpoint["classes"] == ["a", "b"] and checkpoint["versions"]["torch"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable maskwatch checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_carries_crop_margin_compliant_classes_and_temperature(tmp_path):
    model = create_model("mobilenet_v2", 3, weights="none").eval()
    classes = ["mask", "no_mask", "with_mask"]
    prep = {"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}
    default = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=classes, preprocessing=prep)
    assert default["crop_margin"] == 0.15 and default["compliant_classes"] == ["mask", "with_mask"]
    assert default["temperature"] == 1.0
    custom = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=classes, preprocessing=prep,
                             crop_margin=0.3, compliant_classes=["with_mask"], temperature=1.8)
    atomic_torch_save(custom, tmp_path / "custom.pt")
    loaded = load_checkpoint(tmp_path / "custom.pt")
    assert (loaded["crop_margin"], loaded["compliant_classes"], loaded["temperature"]) == (0.3, ["with_mask"], 1.8)
    with pytest.raises(ValueError, match="temperature"):
        make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=classes, preprocessing=prep, temperature=0)


def test_weight_averaging_interpolates_weights_and_records_it():
    import torch

    from maskwatch.checkpoint import interpolate_checkpoints, make_checkpoint

    def checkpoint(value: float) -> dict:
        state = {"w": torch.full((2, 2), value), "bn.num_batches_tracked": torch.tensor(7)}
        return make_checkpoint(state, arch="mobilenet_v2", classes=["a", "b"], preprocessing={}, temperature=1.5)

    frozen, finetuned = checkpoint(0.0), checkpoint(4.0)
    averaged = interpolate_checkpoints(frozen, finetuned, 0.25)
    assert torch.allclose(averaged["state_dict"]["w"], torch.full((2, 2), 1.0))
    assert int(averaged["state_dict"]["bn.num_batches_tracked"]) == 7
    assert averaged["averaging"]["alpha"] == 0.25 and averaged["temperature"] == 1.5
    assert torch.equal(interpolate_checkpoints(frozen, finetuned, 1.0)["state_dict"]["w"], finetuned["state_dict"]["w"])
    with pytest.raises(ValueError, match="alpha"):
        interpolate_checkpoints(frozen, finetuned, 1.5)
    other = checkpoint(1.0)
    other["state_dict"] = {"v": torch.zeros(1)}
    with pytest.raises(ValueError, match="same architecture"):
        interpolate_checkpoints(frozen, other, 0.5)


def _soup_ingredient(value: float, *, classes=("a", "b"), digests=("d1",), data="faces", temperature=0.7) -> dict:
    import torch

    from maskwatch.checkpoint import make_checkpoint

    state = {"w": torch.full((2, 2), value), "bn.num_batches_tracked": torch.tensor(int(value))}
    record = {"datasets": [{"name": data}], "images": {"train": list(digests), "valid": []}}
    return make_checkpoint(state, arch="mobilenet_v2", classes=list(classes), preprocessing={}, temperature=temperature,
                           config={"data": [data], "lr": value}, training_data=record)  # fmt: skip


def test_a_soup_averages_weights_unions_training_data_and_resets_the_temperature():
    import torch

    from maskwatch.checkpoint import average_checkpoints
    from maskwatch.provenance import training_data_of

    a = _soup_ingredient(0.0, digests=("d1", "d2"), data="faces")
    b = _soup_ingredient(3.0, digests=("d2", "d3"), data="scenes")
    soup = average_checkpoints([a, b], [2, 1], names=["a.pt", "b.pt"])
    assert torch.allclose(soup["state_dict"]["w"], torch.full((2, 2), 1.0))  # 2/3 * 0 + 1/3 * 3
    assert int(soup["state_dict"]["bn.num_batches_tracked"]) == 3
    assert soup["temperature"] == 1.0 and a["temperature"] == 0.7  # a new model, not yet calibrated
    a["calibration"] = {"temperature": 0.7, "data": "faces valid"}
    assert "calibration" not in average_checkpoints([a, b], [1, 1])  # the first ingredient's fit is not the soup's
    assert soup["config"]["data"] == ["faces", "scenes"]  # folds and evaluate see every source
    record = training_data_of(soup)
    assert record is not None and record.digests["train"] == {"d1", "d2", "d3"}
    assert record.sources == ["faces", "scenes"]
    ingredients = soup["averaging"]["ingredients"]
    assert [i["name"] for i in ingredients] == ["a.pt", "b.pt"]
    assert [round(i["weight"], 3) for i in ingredients] == [0.667, 0.333] and ingredients[1]["config"]["lr"] == 3.0
    half = _soup_ingredient(3.0)
    half["state_dict"]["w"] = half["state_dict"]["w"].half()  # the bundled file is fp16: the soup stays fp32
    assert average_checkpoints([a, half], [1, 1])["state_dict"]["w"].dtype == torch.float32
    # equal weights of one model give that model back
    same = average_checkpoints([a, a], [1, 1])
    assert torch.equal(same["state_dict"]["w"], a["state_dict"]["w"])


def test_a_soup_refuses_models_that_do_not_share_their_network_or_classes():
    from maskwatch.checkpoint import average_checkpoints

    a = _soup_ingredient(0.0)
    with pytest.raises(ValueError, match="classes"):
        average_checkpoints([a, _soup_ingredient(1.0, classes=("a", "c"))], [1, 1])
    with pytest.raises(ValueError, match="two checkpoints"):
        average_checkpoints([a], [1])
    with pytest.raises(ValueError, match=">= 0"):
        average_checkpoints([a, a], [1, -1])
    other = _soup_ingredient(1.0)
    other["state_dict"] = {"v": other["state_dict"]["w"]}
    with pytest.raises(ValueError, match="same architecture"):
        average_checkpoints([a, other], [1, 1])


def test_average_command_writes_a_soup_and_refuses_bad_input(tmp_path):
    import torch
    from typer.testing import CliRunner

    from maskwatch.checkpoint import atomic_torch_save, load_checkpoint
    from maskwatch.cli import app

    for name, value in (("a.pt", 0.0), ("b.pt", 4.0)):
        atomic_torch_save(_soup_ingredient(value), tmp_path / name)
    atomic_torch_save(_soup_ingredient(1.0, classes=("x", "y")), tmp_path / "other.pt")
    runner = CliRunner()
    a, b, out = str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), tmp_path / "soup.pt"
    result = runner.invoke(app, ["average", a, b, "--weight", "3", "--weight", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    soup = load_checkpoint(out)
    assert torch.allclose(soup["state_dict"]["w"], torch.full((2, 2), 1.0))
    assert soup["averaging"]["ingredients"][0]["name"].startswith(f"{a} (sha256 ")
    for args, reason in (
        ([a, "--out", str(tmp_path / "x.pt")], "two models"),
        ([a, b, "--weight", "1", "--out", str(tmp_path / "x.pt")], "one per model"),
        ([a, str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")], "does not exist"),
        ([a, b, "--out", a], "one of the models"),
        ([a, str(tmp_path / "other.pt"), "--out", str(tmp_path / "x.pt")], "same classes"),
    ):
        result = runner.invoke(app, ["average", *args])
        assert result.exit_code == 2 and reason in result.output, (args, result.output)
    assert not (tmp_path / "x.pt").exists()
