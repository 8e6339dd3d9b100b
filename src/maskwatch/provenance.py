"""What a model was trained on, read back from its checkpoint: the training side's answer for anything that
needs the model's own training images (INT8 calibration of an export, which samples them).

The runtime asks this module instead of rebuilding a training split itself: how a run's datasets, splits and
options map to images is the training configuration's business (:class:`maskwatch.config.TrainConfig`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.config import TrainConfig
from maskwatch.core.contract import CROP_MARGIN, model_fields
from maskwatch.data.sampling import sample_stratified
from maskwatch.data.source import DataSource

__all__ = ["training_calibration_images", "training_samples"]

log = logging.getLogger("maskwatch")


def training_samples(checkpoint: Mapping[str, Any], split: str = "train") -> dict[int, list[Any]]:
    """The checkpoint's samples of ``split`` by label: every dataset of its saved ``config["data"]`` (one path,
    as older runs saved it, or the datasets of a multi-dataset run, each with its own options)."""
    from maskwatch.data.datasets import open_mix

    config = checkpoint.get("config") or {}
    data = config.get("data")
    items = data if isinstance(data, list) else [data] if data else []
    sources = [DataSource.from_value(item) for item in items]
    missing = [s.path for s in sources if not Path(s.path).is_dir()]
    if not sources or missing:
        raise ValueError(
            f"INT8 calibration needs face images: the checkpoint's training data {missing or data!r} is not available "
            "here; pass calibration=DIR (CLI: --calibration DIR) with a few hundred face images"
        )
    resolved = TrainConfig(
        data=sources,
        crops=bool(config.get("crops", False)),
        min_face=int(config.get("min_face", 32)),
        crop_margin=model_fields(checkpoint, checkpoint["classes"])[CROP_MARGIN],
        splits=config.get("splits"),
    ).sources()
    mix = open_mix(
        resolved,
        classes=checkpoint["classes"],
        val_ratio=float(config.get("val_ratio", 0.15)),
        test_ratio=float(config.get("test_ratio", 0.15)),
        seed=int(config.get("seed", 0)),
    )
    by_label: dict[int, list[Any]] = {}
    for sample in mix.split(split):
        by_label.setdefault(sample.label, []).append(sample)
    return by_label


def training_calibration_images(
    checkpoint: Mapping[str, Any], size: int, seed: int = 0
) -> tuple[list[np.ndarray], str]:
    """A stratified sample of the checkpoint's training split as RGB images, and where it came from."""
    from maskwatch.data.images import BadImageError

    samples = sample_stratified(training_samples(checkpoint), size, seed)
    data = (checkpoint.get("config") or {}).get("data")
    items = data if isinstance(data, list) else [data] if data else []
    paths = [item if isinstance(item, str) else dict(item).get("path") for item in items]
    source = f"{' + '.join(map(str, paths))} train split"
    images = []
    for sample in samples:
        try:
            images.append(np.asarray(sample.load()))
        except BadImageError as exc:
            log.warning("calibration: skipped %s (%s)", exc.path, exc.reason)
    return images, f"{len(images)} images, stratified sample of {source} (seed {seed})"
