"""Frozen recipe with the feature cache vs. a notebook-style loop, same data and epochs, in one run.

    .venv/bin/python benchmarks/bench_training.py --json benchmarks/results/training.json

Both runs train MobileNetV2's head on the same images for the same number of epochs with the same
augmentation; the plain loop runs the backbone on freshly augmented images every epoch (train and
validation), the fast path computes ``--views`` augmented views once with ONNX Runtime and trains on
the cache. A third run times the fine-tuning stage (last 2 blocks) per epoch on the cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from maskwatch.bench import machine_info
from maskwatch.config import load_config
from maskwatch.data.datasets import open_dataset
from maskwatch.paths import shared_data_dir
from maskwatch.training import fit


def subset(root: Path, out: Path, per_class: int, seed: int = 0) -> Path:
    """Copy a class-balanced subset of faces/train and faces/valid (symlinks) so both runs read the same files."""
    data = open_dataset(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("valid", max(1, per_class // 4))):
        for label, name in enumerate(data.classes):
            samples = [s for s in data.split(split) if s.label == label]
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in rng.permutation(len(samples))[:n]:
                Path(folder / Path(samples[i].path).name).symlink_to(samples[i].path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "faces")
    parser.add_argument("--per-class", type=int, default=150, help="training images per class")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mw-bench-train-"))
    try:
        data = subset(args.data, work / "data", args.per_class)
        common = {"data": str(data), "epochs": args.epochs, "views": args.views, "patience": args.epochs, "workers": 2}
        results = {}
        for name, extra in (("fast", {"fast_path": True}), ("plain", {"fast_path": False})):
            started = time.perf_counter()
            run = fit(load_config(out=str(work / name), **common, **extra))
            results[name] = {
                "wall_s": time.perf_counter() - started,
                "val_acc": run.history[-1]["val_acc"],
                "val_macro_f1": run.history[-1]["val_macro_f1"],
                "timings": run.timings,
            }
        finetune = fit(load_config(out=str(work / "finetune"), **common, fast_path=True, finetune=2, finetune_epochs=3))
        stage2 = [row["seconds"] for row in finetune.history if row["stage"] == 2]
        report = {
            "command": "benchmarks/bench_training.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "json")),
            "n_train_images": 2 * args.per_class,
            "epochs": args.epochs,
            "views": args.views,
            "fast": results["fast"],
            "plain": results["plain"],
            "speedup": results["plain"]["wall_s"] / results["fast"]["wall_s"],
            "finetune2_s_per_epoch_on_cache": float(np.mean(stage2)),
            "finetune2_cache_s": finetune.timings.get("feature_cache_s"),
            "machine": machine_info(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
