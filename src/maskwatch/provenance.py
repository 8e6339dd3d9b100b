"""What a model was trained on, carried by the model, so that nobody scores it on its own training images.

A checkpoint's ``training_data`` entry (and the ``training_data`` metadata of its ONNX exports) names every
dataset of the run (name, folder, layout, options, per-split counts, the sha256 of each split list) and the
*content digests* of every image file of the train and valid splits (the first 16 hex digits of the file's
sha256: 64 bits, so a clash among a few thousand images is out of the question). Digests, not paths: the
same data read from another folder, or copied into another dataset, is still recognised.

``maskwatch evaluate`` leaves out the faces of those images (and says how many), or refuses with a one-line
reason when nothing is left; ``--include-training-data`` scores them anyway. Valid images count too: they
chose the best epoch and fitted the temperature, so a figure on them is not a held-out figure either.

    >>> data = training_data_of("models/maskwatch-mobilenet_v2.pt")          # doctest: +SKIP
    >>> kept, left_out = data.leave_out(samples)                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.config import TrainConfig
from maskwatch.core.contract import CROP_MARGIN, TRAINING_DATA, model_fields
from maskwatch.core.digests import file_sha256
from maskwatch.data.sampling import sample_stratified

__all__ = [
    "TRAINING_DATA",
    "LeftOut",
    "TrainingData",
    "describe_training_data",
    "image_digest",
    "saved_train_config",
    "training_calibration_images",
    "training_data_of",
    "training_samples",
]

log = logging.getLogger("maskwatch")
DIGEST_CHARS = 16
SPLITS = ("train", "valid")  # the splits a model learnt from or was chosen on


def image_digest(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of the sha256 of a file's bytes."""
    return file_sha256(path)[:DIGEST_CHARS]


def _digests(paths: Sequence[str], workers: int = 4) -> dict[str, str | None]:
    """path -> digest for each distinct path (None for a file that cannot be read)."""

    def one(path: str) -> str | None:
        try:
            return image_digest(path)
        except OSError:
            return None

    unique = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(unique, pool.map(one, unique)))


def _file_sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


@dataclass(frozen=True)
class LeftOut:
    """What :meth:`TrainingData.leave_out` removed: faces and distinct images, by the split they were in."""

    faces: int = 0
    images: int = 0
    by_split: dict[str, int] = field(default_factory=dict)  # faces per training split

    def summary(self) -> str:
        splits = ", ".join(f"{n} {split}" for split, n in self.by_split.items() if n)
        return f"{self.faces} face(s) of {self.images} image(s) the model was trained or validated on ({splits})"

    def to_dict(self) -> dict[str, Any]:
        return {"faces": self.faces, "images": self.images, "by_split": dict(self.by_split)}


@dataclass(frozen=True)
class TrainingData:
    """The ``training_data`` record of a model: its datasets and the digests of its train/valid images."""

    datasets: list[dict[str, Any]]
    digests: dict[str, frozenset[str]]  # split -> image digests

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainingData:
        images = record.get("images") or {}
        return cls(list(record.get("datasets") or []), {split: frozenset(images.get(split) or ()) for split in SPLITS})

    def to_record(self) -> dict[str, Any]:
        return {
            "datasets": self.datasets,
            "images": {split: sorted(self.digests.get(split, ())) for split in SPLITS},
            "digest": f"sha256 of the file's bytes, first {DIGEST_CHARS} hex digits",
        }

    @property
    def sources(self) -> list[str]:
        return [str(d.get("name") or d.get("root")) for d in self.datasets]

    def split_of(self, digest: str | None) -> str | None:
        """The training split an image (by digest) was in, or None."""
        if digest is None:
            return None
        return next((split for split in SPLITS if digest in self.digests.get(split, ())), None)

    def leave_out(self, samples: Sequence[Any], workers: int = 4) -> tuple[list[Any], LeftOut]:
        """``samples`` (objects with ``path``) without those whose image file the model was trained or
        validated on, and what was left out."""
        digests = _digests([s.path for s in samples], workers)
        kept, faces, images = [], Counter[str](), set()
        for sample in samples:
            split = self.split_of(digests.get(sample.path))
            if split is None:
                kept.append(sample)
            else:
                faces[split] += 1
                images.add(sample.path)
        left = LeftOut(sum(faces.values()), len(images), {split: faces.get(split, 0) for split in SPLITS})
        return kept, left


def describe_training_data(mix: Any, sources: Sequence[Any] = (), *, workers: int = 4) -> dict[str, Any]:
    """The ``training_data`` record of a :class:`maskwatch.data.datasets.DatasetMix` as training opened it, with
    each dataset's options from ``sources`` (:class:`maskwatch.config.DataSource`, resolved, in part order)."""
    datasets = []
    digests: dict[str, set[str]] = {split: set() for split in SPLITS}
    for index, part in enumerate(mix.parts):
        data = part.data
        entry: dict[str, Any] = {
            "name": part.name,
            "root": str(data.root),
            "layout": data.layout,
            "weight": part.weight,
            "counts": {split: counts for split, counts in data.counts().items() if split in SPLITS},
        }
        if index < len(sources):
            source = sources[index]
            entry["options"] = {
                k: getattr(source, k)
                for k in ("crops", "min_face", "crop_margin", "splits")
                if getattr(source, k, None) is not None
            }
            if getattr(source, "splits", None):
                entry["split_lists_sha256"] = split_list_digests(source.splits)
        datasets.append(entry)
        for split in SPLITS:
            if split in data.splits:
                found = _digests([s.path for s in data.splits[split]], workers)
                digests[split].update(d for d in found.values() if d is not None)
    return TrainingData(datasets, {k: frozenset(v) for k, v in digests.items()}).to_record()


def split_list_digests(folder: str | os.PathLike[str] | None) -> dict[str, str]:
    """sha256 of each split list (``train.txt``, ...) of a split-list folder, for the record."""
    from maskwatch.data.voc import SPLIT_LIST_NAMES

    if folder is None:
        return {}
    out = {}
    for split, name in SPLIT_LIST_NAMES.items():
        digest = _file_sha256(Path(folder) / name)
        if digest is not None:
            out[split] = digest
    return out


def training_data_of(model: str | os.PathLike[str] | Mapping[str, Any]) -> TrainingData | None:
    """The training-data record of a model file (checkpoint or ONNX export) or checkpoint dict; None when it
    has none (models made before the record existed, or by other tools)."""
    if isinstance(model, Mapping):
        record = model.get(TRAINING_DATA)
    else:
        path = Path(model)
        if path.suffix.lower() == ".onnx":
            from maskwatch.runtime.onnx_backend import read_metadata

            raw = read_metadata(path).get(TRAINING_DATA)
            record = json.loads(raw) if isinstance(raw, str) else raw
        elif path.suffix.lower() in (".ts", ".torchscript"):
            return None
        else:
            from maskwatch.checkpoint import load_checkpoint

            record = load_checkpoint(path).get(TRAINING_DATA)
    return TrainingData.from_record(record) if record else None


def training_data_from_config(config: Mapping[str, Any], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``training_data`` record rebuilt from a run's saved config (``checkpoint["config"]``): the same
    datasets opened the same way (paths relative to the working directory, as the run had them). For models
    made before the record existed (``benchmarks/bundled_model.py`` attaches it)."""
    from maskwatch.data.datasets import open_mix

    cfg = saved_train_config(config)
    sources = cfg.sources()
    mix = open_mix(
        sources,
        classes=list(classes) if classes is not None else cfg.classes,
        val_ratio=cfg.val_ratio,
        test_ratio=cfg.test_ratio,
        seed=cfg.seed,
    )
    return describe_training_data(mix, sources)


# -- the model's own training images (INT8 calibration of an export samples them) ----------------------


def saved_train_config(config: Mapping[str, Any]) -> TrainConfig:
    """A run's saved ``config`` (``checkpoint["config"]``) as a :class:`TrainConfig`: the known keys, validated
    as they were saved (no environment override applies to a finished run)."""
    known = {k: v for k, v in config.items() if k in TrainConfig.model_fields and v is not None and k != "out"}
    return TrainConfig.model_validate(known)


def training_samples(checkpoint: Mapping[str, Any], split: str = "train") -> dict[int, list[Any]]:
    """The checkpoint's samples of ``split`` by label: every dataset of its saved ``config["data"]`` (one path,
    as older runs saved it, or the datasets of a multi-dataset run, each with its own options)."""
    from maskwatch.data.datasets import open_mix

    cfg = saved_train_config({**(checkpoint.get("config") or {}), "out": None})
    missing = [s.path for s in cfg.data if not Path(s.path).is_dir()]
    if not cfg.data or missing:
        raise ValueError(
            f"INT8 calibration needs face images: the checkpoint's training data {missing or cfg.to_dict()['data']!r} "
            "is not available here; pass calibration=DIR (CLI: --calibration DIR) with a few hundred face images"
        )
    cfg = cfg.replace(crop_margin=model_fields(checkpoint, checkpoint["classes"])[CROP_MARGIN])
    mix = open_mix(
        cfg.sources(),
        classes=checkpoint["classes"],
        val_ratio=cfg.val_ratio,
        test_ratio=cfg.test_ratio,
        seed=cfg.seed,
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
