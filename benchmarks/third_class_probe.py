"""The third class (mask worn incorrectly): does a synthetic one help? A frozen-feature probe (issue 21).

    .venv/bin/python benchmarks/third_class_probe.py --json benchmarks/results/third_class.json

The shared scenes hold 55 ``mask_weared_incorrect`` faces (33 in scenes/train, the rest in valid and test),
too few to learn the class. Synthetic ones are made from the faces/ training photos: an unmasked face keeps
its eyes and nose, and the lower part of a masked face (from a random height between 55 and 70 % of the
crop, where the mouth begins, with a soft edge) is pasted over its mouth and chin: a mask worn below the nose.
Two heads are trained on the same frozen ImageNet MobileNetV2 features (224 px, one clean view each;
logistic regression, classes balanced): without and with the synthetic faces. Both are scored on the scene
crops >= 12 px of scenes/valid (choice) and scenes/test (report), three classes, with 95 % bootstrap
intervals, and merged to compliant / not compliant on faces/valid and the scene crops (does the third class
cost the two-class verdict?). A frozen probe says whether the data helps, not how well a fine-tuned model
would do.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from maskwatch.data.datasets import Sample, open_dataset
from maskwatch.paths import shared_data_dir
from maskwatch.robustness import bootstrap_interval

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "data" / "splits" / "scenes"
CLASSES = ["mask_weared_incorrect", "with_mask", "without_mask"]


def below_the_nose(bare: np.ndarray, masked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``bare`` with the lower part of ``masked`` (resized to it) pasted over mouth and chin, soft-edged."""
    import cv2

    height, width = bare.shape[:2]
    mask_face = cv2.resize(masked, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    top = rng.uniform(0.55, 0.70) * height
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    alpha = np.clip((rows - top) / max(2.0, 0.04 * height), 0.0, 1.0)
    return np.clip(bare * (1 - alpha) + mask_face * alpha, 0, 255).astype(np.uint8)


def features(images: list[np.ndarray]) -> np.ndarray:
    import torch

    from maskwatch.models import create_model, split_model
    from maskwatch.preprocess import Preprocessing, to_batch
    from maskwatch.training import PrefixRunner

    model = create_model("mobilenet_v2", 2, weights="imagenet").eval()
    prefix, _ = split_model(model, "mobilenet_v2", 0)
    runner = PrefixRunner(prefix, "auto", torch.device("cpu"), 224)
    prep = Preprocessing(size=224)
    out = [runner(torch.from_numpy(to_batch(images[i : i + 64], prep))).numpy() for i in range(0, len(images), 64)]
    return np.concatenate(out)


def load(samples: list[Sample]) -> list[np.ndarray]:
    return [np.asarray(s.load()) for s in samples]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path)
    p.add_argument("--synthetic", type=int, default=600, help="synthetic incorrectly worn masks")
    args = p.parse_args()
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    shared = shared_data_dir()
    rng = np.random.default_rng(0)
    faces = open_dataset(shared / "faces", classes=CLASSES)
    scenes = open_dataset(shared / "scenes", classes=CLASSES, crops=True, min_face=12, split_lists=SPLITS)
    train = faces.split("train") + scenes.split("train")
    bare = [s for s in faces.split("train") if CLASSES[s.label] == "without_mask"]
    masked = [s for s in faces.split("train") if CLASSES[s.label] == "with_mask"]
    pairs = zip(rng.choice(len(bare), args.synthetic), rng.choice(len(masked), args.synthetic))
    synthetic = [below_the_nose(np.asarray(bare[i].load()), np.asarray(masked[j].load()), rng) for i, j in pairs]

    sets = {
        "faces_valid": faces.split("valid"),
        "scenes_valid": scenes.split("valid"),
        "scenes_test": scenes.split("test"),
    }
    x_train = features(load(train))
    y_train = np.array([s.label for s in train])
    x_synth = features(synthetic)
    evaluated = {name: (features(load(items)), np.array([s.label for s in items])) for name, items in sets.items()}
    results: dict[str, dict] = {}
    variants = {
        "scenes' 33 only": (x_train, y_train),
        f"+ {args.synthetic} synthetic": (np.concatenate([x_train, x_synth]), np.r_[y_train, np.zeros(len(x_synth))]),
    }
    for variant, (x, y) in variants.items():
        head = LogisticRegression(max_iter=3000, class_weight="balanced", C=1.0).fit(x, y.astype(int))
        entry: dict[str, dict] = {}
        for name, (xs, ys) in evaluated.items():
            predicted = head.predict(xs)
            merged_true, merged_pred = (ys != 1).astype(int), (predicted != 1).astype(int)
            row: dict = {"n": len(ys), "incorrect_support": int((ys == 0).sum())}
            if (ys == 0).any():
                hit = (predicted == 0) & (ys == 0)
                on_incorrect = predicted[ys == 0] == 0  # each incorrectly masked face: called so or not
                row["incorrect_recall"] = bootstrap_interval(
                    np.zeros(len(on_incorrect), dtype=int), (~on_incorrect).astype(int)
                ).__dict__
                called = predicted == 0
                row["incorrect_precision"] = float(hit.sum() / called.sum()) if called.any() else None
                row["incorrect_called"] = int(called.sum())
            row["two_class_accuracy"] = bootstrap_interval(merged_true, merged_pred).__dict__
            row["without_or_incorrect_recall"] = bootstrap_interval(merged_true, merged_pred,
                                                                    "without_mask_recall").__dict__  # fmt: skip
            entry[name] = row
        results[variant] = entry
        print(variant, json.dumps(entry, indent=1), flush=True)
    report = {"classes": CLASSES, "variants": results, "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
