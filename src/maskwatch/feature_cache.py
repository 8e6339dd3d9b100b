"""Frozen-backbone features kept between training runs, keyed by their content.

``train`` computes the frozen prefix's outputs once per run (several augmented views per training image).
They depend only on the images, the prefix's weights and the settings that shape the views, so a second run
on the same data with another head recipe (learning rate, epochs, dropout, class weights, ...) can load
them instead of recomputing them. There is one entry per dataset of a run, so a run on another mix of the
same datasets (another order, one dataset left out: the folds of the robustness protocol) reuses them too.

The key of one dataset's entry is a sha256 of: a format revision; every training setting except those that
only affect the head (:data:`HEAD_ONLY`); each of the dataset's samples of the train and valid splits in
order (path, label, face box, file size and mtime: the box carries the crop margin, ``min_face`` and split
lists decide which samples there are); and every tensor of the frozen prefix
(so the architecture, the ImageNet weights file and the ``--finetune`` cut are all covered). Changing the
data, a view or augmentation setting, the image size or the weights gives a new key, so a stale
entry is never used. The datasets' sampling weights are not part of it: they only choose which cached
views an epoch draws, so recipes that differ only in weights share one entry.

Folder: ``$MASKWATCH_CACHE_DIR/features``, else ``$XDG_CACHE_HOME/maskwatch/features``, else
``~/.cache/maskwatch/features``. Writes are atomic; the :data:`KEEP` most recently used entries are kept.
``cache_features: false`` in the config turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("maskwatch.training")

FORMAT = "maskwatch-features/3"  # 3: one entry per dataset of a mix
KEEP = 12  # entries kept (one per dataset; a MobileNetV2 cache of a few thousand images at 224 px is a few hundred MB)

#: Training settings that do not change the cached features (they shape the head's training, or decide which
#: samples there are, which the key covers sample by sample).
HEAD_ONLY = frozenset(
    {
        "out",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "label_smoothing",
        "class_weights",
        "patience",
        "dropout",
        "finetune_epochs",
        "finetune_lr",
        "workers",
        "half",
        "cache_features",
        "data",  # the samples themselves are hashed
        "evaluate_test",
        "calibrate",
        "balance",
        "wise_alpha",
        # which samples there are and their boxes and labels: hashed with the samples themselves, so a
        # dataset alone (its options folded to the top level) shares its entry with the same dataset in a mix
        "crops",
        "min_face",
        "crop_margin",
        "splits",
        "classes",
        "val_ratio",
        "test_ratio",
    }
)


def cache_root() -> Path:
    if os.environ.get("MASKWATCH_CACHE_DIR"):
        return Path(os.environ["MASKWATCH_CACHE_DIR"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maskwatch" / "features"


def feature_key(
    settings: dict[str, Any],
    splits: dict[str, Sequence[Any]],
    prefix: Any,
    *,
    parts: Mapping[str, Sequence[tuple[str, int]]] | None = None,
) -> str:
    """The content key of a feature cache: ``settings`` (a TrainConfig dict), the samples of each split
    (objects with ``path``, ``label`` and ``box``), the dataset mix (``parts``: per split, each dataset's
    root and number of samples, in the order the samples are listed) and the frozen ``prefix``'s tensors."""
    digest = hashlib.sha256(FORMAT.encode())
    kept = {k: v for k, v in sorted(settings.items()) if k not in HEAD_ONLY}
    digest.update(json.dumps(kept, sort_keys=True, default=str).encode())
    digest.update(json.dumps({k: [list(p) for p in v] for k, v in sorted((parts or {}).items())}).encode())
    for name, samples in splits.items():
        digest.update(f"\0split {name} {len(samples)}\n".encode())
        for sample in samples:
            try:
                stat = os.stat(sample.path)
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
            digest.update(f"{sample.path}\0{sample.label}\0{sample.box}\0{size}\0{mtime}\n".encode())
    for name, tensor in prefix.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load(key: str) -> dict[str, Any] | None:
    """The cached tensors for ``key``, or None (missing or unreadable: it is then recomputed)."""
    import torch

    path = cache_root() / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged entry is only a cache miss
        log.warning("feature cache %s unreadable (%s); recomputing", path, exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: kept by the pruning
    return entry


def store(key: str, entry: dict[str, Any]) -> Path | None:
    """Save ``entry`` (tensors) under ``key``; a full or read-only disk only costs the reuse."""
    from maskwatch.checkpoint import atomic_torch_save

    folder = cache_root()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = atomic_torch_save(entry, folder / f"{key}.pt")
    except OSError as exc:
        log.warning("could not keep the feature cache in %s (%s); the next run recomputes it", folder, exc)
        return None
    entries = sorted(folder.glob("*.pt"), key=lambda f: f.stat().st_mtime, reverse=True)
    for stale in entries[KEEP:]:
        stale.unlink(missing_ok=True)
    return path
