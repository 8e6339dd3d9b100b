"""Train the bundled model with the project's own command, measure it, and write models/ + its card.

    .venv/bin/python benchmarks/bundled_model.py            # train + measure + write models/
    .venv/bin/python benchmarks/bundled_model.py --run runs/bundled --no-train   # measure an existing run

Measures faces/test, pis/test and scene crops (>= 32 px, 2 classes) for the fp32 checkpoint and for its
fp16 copy; the fp16 copy is bundled only if it costs no accuracy on any of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from maskwatch.bundled import BUNDLED_NAME
from maskwatch.checkpoint import atomic_torch_save, load_checkpoint
from maskwatch.evaluate import evaluate_dataset, write_outputs
from maskwatch.paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/bundled.yaml"


def measure(model: Path, out: Path) -> dict:
    data = shared_data_dir()
    sets = {
        "faces_test": dict(data=data / "faces", split="test"),
        "pis_test": dict(data=data / "pis", split="test"),
        "scene_crops_32": dict(data=data / "scenes", crops=True, min_face=32),
    }
    results = {}
    for name, kwargs in sets.items():
        evaluation = evaluate_dataset(model, kwargs.pop("data"), **kwargs)
        report = write_outputs(evaluation, out / f"{name}.json")
        results[name] = {
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "without_mask_recall": report["per_class"]["without_mask"]["recall"],
            "roc_auc": report.get("roc_auc"),
            "ece": report["ece"],
            "n_images": report["n_images"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/bundled"))
    parser.add_argument("--no-train", action="store_true")
    args = parser.parse_args()

    command = f"maskwatch train --config {CONFIG} --data ../shared/data/faces --out {args.run}"
    if not args.no_train:
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "maskwatch"), *shlex.split(command)[1:]], check=True)
        train_s = time.perf_counter() - started
    else:
        train_s = None
    checkpoint = load_checkpoint(args.run / "model.pt")
    half = {**checkpoint, "state_dict": {k: (v.half() if v.is_floating_point() else v)
                                         for k, v in checkpoint["state_dict"].items()}}
    half_path = args.run / "model-fp16.pt"
    atomic_torch_save(half, half_path)
    fp32 = measure(args.run / "model.pt", args.run / "eval-fp32")
    fp16 = measure(half_path, args.run / "eval-fp16")
    costs_nothing = all(fp16[k]["accuracy"] >= fp32[k]["accuracy"] - 1e-9 for k in fp32)
    chosen = half_path if costs_nothing else args.run / "model.pt"
    target = ROOT / "models" / BUNDLED_NAME
    target.write_bytes(chosen.read_bytes())
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    summary = {
        "command": command,
        "train_seconds": train_s,
        "fp32": fp32,
        "fp16": fp16,
        "bundled": "fp16" if costs_nothing else "fp32",
        "size_bytes": target.stat().st_size,
        "fp32_size_bytes": (args.run / "model.pt").stat().st_size,
        "sha256": sha,
        "config": checkpoint["config"],
        "validation": checkpoint["metrics"].get("validation"),
        "versions": checkpoint["versions"],
    }
    (ROOT / "benchmarks" / "results" / "bundled.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
