"""Compare candidate classifiers on validation data only (faces/valid, scenes/valid), for choosing a recipe.

    .venv/bin/python benchmarks/select_recipe.py runs/exp/r1/model.pt runs/exp/r3/model.pt \
        --json benchmarks/results/recipes_valid.json [--detection]

Every model is scored on the same faces: faces/valid, and the scene crops of data/splits/scenes/valid.txt
(≥ 32 px and 12–32 px) with the two classes ``with_mask`` / ``without_mask``. A model with more classes is
read through its compliant classes (its predicted class counts as ``with_mask`` when compliant, else
``without_mask``), which is how the engine counts people; its own per-class figures on the scene crops
(``mask_weared_incorrect`` included) are listed too. ``--detection`` adds evaluate-detection on
scenes/valid with the accurate preset (mAP@0.5). Test sets are never read here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maskwatch.data.datasets import open_dataset
from maskwatch.evaluate import evaluate_samples
from maskwatch.metrics import classification_report
from maskwatch.paths import shared_data_dir
from maskwatch.runtime.base import load_classifier

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "data" / "splits" / "scenes"
TWO = ["with_mask", "without_mask"]


def two_class_view(model: Path, data: Path, **kwargs) -> dict:
    """The model's figures on ``data``'s valid faces of the two classes, its classes merged by compliance."""
    classifier = load_classifier(model, backend="onnx")
    dataset = open_dataset(data, classes=TWO, crop_margin=classifier.crop_margin, **kwargs)
    samples = dataset.split("valid")
    evaluation = (
        evaluate_samples(classifier, samples, classifier.classes, workers=2) if classifier.classes == TWO else None
    )
    if evaluation is None:  # relabel the 2-class samples into the model's class indices, then merge
        index = {name: i for i, name in enumerate(classifier.classes)}
        relabelled = [type(s)(s.path, index[TWO[s.label]], s.box) for s in samples]
        evaluation = evaluate_samples(classifier, relabelled, classifier.classes, workers=2)
        compliant = np.array([c in classifier.compliant_classes for c in classifier.classes])
        probabilities = np.stack(
            [evaluation.probabilities[:, compliant].sum(1), evaluation.probabilities[:, ~compliant].sum(1)], 1
        )
        labels = np.array([0 if compliant[label] else 1 for label in evaluation.labels])
    else:
        probabilities, labels = evaluation.probabilities, evaluation.labels
    report = classification_report(probabilities, labels, TWO)
    return {
        "n": report["n_images"],
        "accuracy": round(report["accuracy"], 4),
        "macro_f1": round(report["macro_f1"], 4),
        "without_mask_recall": round(report["per_class"]["without_mask"]["recall"], 4),
        "ece": round(report["ece"], 4),
    }


def own_classes(model: Path, data: Path, **kwargs) -> dict:
    """Per-class figures with the model's own classes (a third class included) on the valid faces."""
    classifier = load_classifier(model, backend="onnx")
    dataset = open_dataset(data, classes=classifier.classes, crop_margin=classifier.crop_margin, **kwargs)
    report = evaluate_samples(classifier, dataset.split("valid"), classifier.classes, workers=2).report
    return {
        "accuracy": round(report["accuracy"], 4),
        "macro_f1": round(report["macro_f1"], 4),
        "per_class": {
            c: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
            for c, m in report["per_class"].items()
        },
    }


def detection(model: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "det.json"
        command = [
            str(Path(sys.executable).parent / "maskwatch"), "evaluate-detection", "--model", str(model),
            "--data", str(shared_data_dir() / "scenes"), "--splits", str(SPLITS), "--split", "valid",
            "--json", str(out),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        result = json.loads(out.read_text())
    ap = result["ap50"]
    return {"map50": result["map50"], "ap50": ap, "recall": result["recall"], "precision": result["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--detection", action="store_true")
    args = parser.parse_args()
    data = shared_data_dir()
    results = {}
    for model in args.models:
        started = time.perf_counter()
        scenes = {"crops": True, "split_lists": SPLITS}
        entry = {
            "faces_valid": two_class_view(model, data / "faces"),
            "scene_crops_32_valid": two_class_view(model, data / "scenes", min_face=32, **scenes),
            "scene_crops_12_valid": two_class_view(model, data / "scenes", min_face=12, **scenes),
        }
        if len(load_classifier(model, backend="onnx").classes) > 2:
            entry["own_classes_scene_crops_12_valid"] = own_classes(model, data / "scenes", min_face=12, **scenes)
        if args.detection:
            entry["detection_valid"] = detection(model)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        results[str(model)] = entry
        print(json.dumps({str(model): entry}, indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
