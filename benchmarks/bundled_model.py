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
from maskwatch.config import DEFAULT_CROP_MARGIN
from maskwatch.evaluate import evaluate_dataset, write_outputs
from maskwatch.paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/bundled.yaml"


def measure(model: Path, out: Path) -> dict:
    data = shared_data_dir()
    sets = {
        "faces_test": {"data": data / "faces", "split": "test"},
        "pis_test": {"data": data / "pis", "split": "test"},
        "scene_crops_32": {"data": data / "scenes", "crops": True, "min_face": 32},
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
    (ROOT / "models" / "MODEL_CARD.md").write_text(model_card(summary))
    print(json.dumps(summary, indent=2))


def model_card(s: dict) -> str:
    """The model card: what the bundled model is, how it was made, and how well it does where."""
    chosen = s[s["bundled"]]
    rows = "\n".join(
        f"| {name} | {m['n_images']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['without_mask_recall']:.4f} "
        f"| {m['roc_auc']:.4f} | {m['ece']:.4f} |" for name, m in chosen.items()
    )
    compare = "\n".join(
        f"| {name} | {s['fp32'][name]['accuracy']:.4f} | {s['fp16'][name]['accuracy']:.4f} |" for name in s["fp32"]
    )
    cfg = s["config"]
    margin = cfg.get("crop_margin", DEFAULT_CROP_MARGIN)
    return f"""# Model card: `{BUNDLED_NAME}`

Face-mask classifier bundled with maskwatch: MobileNetV2 (ImageNet, torchvision `IMAGENET1K_V1` weights) with
a new 2-class head (`with_mask`, `without_mask`), trained by maskwatch's own `train` command.

- **File**: `models/{BUNDLED_NAME}`, {s['size_bytes'] / 1e6:.1f} MB ({s['bundled']} weights; the fp32 checkpoint
  is {s['fp32_size_bytes'] / 1e6:.1f} MB), sha256 `{s['sha256']}`
- **Input**: an RGB face crop, squashed to {cfg['image_size']}x{cfg['image_size']}, ImageNet mean/std
  (stored in the checkpoint's `preprocessing`).
- **Data**: `../shared/data/faces` train split (1432 with_mask, 1211 without_mask), validation on its
  valid split; never trained on `pis/` or `scenes/`.
- **Command** (from the repository root, after `make setup`):
  `{s['command']}`
  ([`{CONFIG}`]({'../' + CONFIG}): frozen backbone, head trained {cfg['epochs']} epochs on {cfg['views']} cached
  augmented views, then the last {cfg['finetune']} blocks fine-tuned {cfg['finetune_epochs']} epochs at lr
  {cfg['finetune_lr']}; Adam lr {cfg['lr']}, batch {cfg['batch_size']}; augmentation: rotation
  +/-{cfg['rotation']:.0f} deg, flip, brightness/contrast {cfg['jitter']}, random crop >= {cfg['crop_scale']}
  of the area, blur (p={cfg['blur_prob']}), downscale to {cfg['lowres_min']}-{cfg['lowres_max']} px then upscale
  (p={cfg['lowres_prob']}).)
- **Best epoch** (validation loss): {s['validation']}
- **Versions**: {s['versions']}

## Metrics ({s['bundled']} file, `maskwatch evaluate`, backend torch)

| test set | images | accuracy | macro F1 | without_mask recall | ROC AUC | ECE |
|---|---|---|---|---|---|---|
{rows}

`faces_test`: `maskwatch evaluate --data ../shared/data/faces --split test`;
`pis_test`: `maskwatch evaluate --data ../shared/data/pis --split test` (synthetic masks; its unmasked
photos also occur in faces/);
`scene_crops_32`: `maskwatch evaluate --data ../shared/data/scenes --crops --min-face 32` (crop margin
{margin}, the model's; `mask_weared_incorrect` faces are left out: the model has two classes). Regenerate
everything with `.venv/bin/python benchmarks/bundled_model.py`.

## fp16 vs fp32 (accuracy)

| test set | fp32 | fp16 |
|---|---|---|
{compare}

## Limits
- Trained on web photos of faces; `faces/` has a known source bias (many unmasked faces are East-Asian
  celebrity crops). The cross-dataset scene figure is the one to trust for real cameras.
- Small faces (< 32 px) are harder; see BENCHMARKS.md for the detection pipeline's figures by size.
- Two classes only: a mask worn below the nose is not a class of this model.
"""


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
