"""Shared fixtures: tiny generated datasets, the shared real data (skipped when absent), offline mode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskwatch.paths import shared_data_dir

SHARED = shared_data_dir()

try:  # Tiny test models run faster on one thread, and stay fast when the machine is busy.
    import torch

    torch.set_num_threads(1)
except ImportError:  # the lean (torch-free) install
    pass


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never touch the network: weight downloads are disabled unless a test enables them."""
    monkeypatch.setenv("MASKWATCH_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _export_cache(tmp_path_factory):
    """ONNX exports made on the fly go to a temporary cache, not the user's ~/.cache."""
    previous = os.environ.get("MASKWATCH_CACHE_DIR")
    os.environ["MASKWATCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("export-cache"))
    yield
    if previous is None:
        os.environ.pop("MASKWATCH_CACHE_DIR", None)
    else:
        os.environ["MASKWATCH_CACHE_DIR"] = previous


def shared_or_skip(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set MASKWATCH_SHARED_DATA to its folder)")
    return path


def make_face(label: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A synthetic 'face' whose class shows in its lower half: pale (label 0) or dark and bluish (label 1)."""
    image = rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8)
    lower = image[size // 2 :]
    if label == 0:
        lower[:] = np.clip(lower.astype(int) + 80, 0, 255)
    else:
        lower[..., :2] //= 3
    return Image.fromarray(image)


def write_class_folders(root: Path, per_class: int = 12, splits=("train", "valid", "test"), seed: int = 0,
                        classes=("with_mask", "without_mask"), size: int = 48) -> Path:
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                make_face(label % 2, rng, size).save(folder / f"{name}_{i}.jpg", quality=95)
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_class_folders(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_dataset_session(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("tiny"), per_class=16)
