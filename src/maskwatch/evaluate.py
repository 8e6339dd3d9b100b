"""``maskwatch evaluate``: run a model over a dataset split and write metrics, predictions and figures.

Outputs (stable; the HTML report reads them): ``OUT.json`` with accuracy, macro F1, per-class scores,
confusion matrix (rows true, columns predicted, in ``classes`` order), ROC AUC (two classes), ECE, the
model's temperature (and, when it is not 1, ``ece_uncalibrated``: the ECE of ``softmax(logits)``), counts
and skipped files; ``OUT.confusion.png``; ``OUT.predictions.csv`` (path, box, true, predicted, calibrated
probabilities ``p_<class>``, raw logits ``logit_<class>``).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.data.datasets import DatasetError, LabeledSet, Sample, open_dataset
from maskwatch.data.images import BadImageError, Skipped
from maskwatch.metrics import classification_report, expected_calibration_error, plot_confusion_matrix
from maskwatch.provenance import training_data_of
from maskwatch.runtime.base import Classifier, load_classifier
from maskwatch.runtime.types import softmax

log = logging.getLogger("maskwatch")


@dataclass
class Evaluation:
    """Predictions on labelled samples. ``probabilities`` are the calibrated ones (``softmax(logits / T)``,
    what every prediction uses); ``logits`` (when known) let the report show calibration before and after."""

    classes: list[str]
    samples: list[Sample]
    labels: np.ndarray
    probabilities: np.ndarray
    skipped: list[Skipped] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    logits: np.ndarray | None = None
    temperature: float = 1.0

    @property
    def uncalibrated_probabilities(self) -> np.ndarray | None:
        """``softmax(logits)`` (temperature 1), or None when the logits are unknown."""
        return None if self.logits is None else softmax(self.logits)

    @property
    def report(self) -> dict[str, Any]:
        report = classification_report(self.probabilities, self.labels, self.classes)
        report["temperature"] = self.temperature
        uncalibrated = self.uncalibrated_probabilities
        if self.temperature != 1.0 and uncalibrated is not None and len(self.labels):
            report["ece_uncalibrated"] = expected_calibration_error(uncalibrated, self.labels)
        report["skipped"] = [{"path": s.path, "reason": s.reason} for s in self.skipped]
        report.update(self.info)
        return report


def _load_all(samples: Sequence[Sample], workers: int) -> tuple[list[Any], list[Skipped]]:
    """Decode each distinct file once (scene crops share their image), then cut every sample."""
    from maskwatch.data.images import load_rgb

    def decode(path: str) -> tuple[Any, Skipped | None]:
        try:
            return load_rgb(path), None
        except BadImageError as exc:
            return None, Skipped(exc.path, exc.reason)

    paths = list(dict.fromkeys(s.path for s in samples))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = dict(zip(paths, pool.map(decode, paths)))
    images: list[Any] = []
    for sample in samples:
        image, _ = decoded[sample.path]
        if image is None:
            images.append(None)
            continue
        try:
            images.append(np.asarray(sample.crop(image)))
        except BadImageError:
            images.append(None)
    skipped = [bad for _, bad in decoded.values() if bad is not None]
    return images, skipped


def evaluate_samples(
    model: str | Path | Classifier,
    samples: Sequence[Sample],
    classes: Sequence[str],
    *,
    workers: int = 2,
    chunk: int = 256,
) -> Evaluation:
    """Predict every sample (bad files are skipped and listed) and keep what the metrics need."""
    classifier = model if isinstance(model, Classifier) else load_classifier(model)
    if list(classifier.classes) != list(classes):
        raise ValueError(f"model classes {classifier.classes} differ from the data's {list(classes)}")
    kept: list[Sample] = []
    scores: list[np.ndarray] = []
    skipped: list[Skipped] = []
    for start in range(0, len(samples), chunk):
        part = list(samples[start : start + chunk])
        images, bad = _load_all(part, workers)
        skipped.extend(bad)
        good = [(s, im) for s, im in zip(part, images) if im is not None]
        if good:
            kept.extend(s for s, _ in good)
            scores.append(classifier.logits([im for _, im in good]))
    logits = np.concatenate(scores) if scores else np.zeros((0, len(classes)))
    probs = softmax(logits, classifier.temperature) if len(logits) else logits
    labels = np.array([s.label for s in kept], dtype=np.int64)
    return Evaluation(list(classes), kept, labels, probs, skipped, logits=logits, temperature=classifier.temperature)


def evaluate_dataset(
    model_path: str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    crops: bool = False,
    min_face: int = 32,
    crop_margin: float | None = None,
    seed: int = 0,
    workers: int = 2,
    backend: str = "auto",
    split_lists: str | Path | None = None,
    include_training_data: bool = False,
) -> Evaluation:
    """Evaluate a model on a dataset split; ``split=None`` means ``test``, or every image of a dataset
    that has no split folders (such as VOC scenes used as a cross-dataset test). ``crop_margin=None`` cuts
    VOC face crops with the model's own margin (the framing it was trained on). ``split_lists`` (a folder of
    ``train.txt`` / ``valid.txt`` / ``test.txt``) assigns a dataset without split folders to splits, as
    ``train`` does with the same folder.

    A model that records its training data (:mod:`maskwatch.provenance`) is not scored on the images it was
    trained or validated on: they are left out, logged and counted in ``info["left_out_training_data"]``
    (``DatasetError`` when nothing is left), unless ``include_training_data``."""
    classifier = load_classifier(model_path, backend=backend)
    crop_margin = classifier.crop_margin if crop_margin is None else crop_margin
    dataset: LabeledSet = open_dataset(
        data,
        classes=classifier.classes,
        crops=crops,
        min_face=min_face,
        crop_margin=crop_margin,
        seed=seed,
        split_lists=split_lists,
    )
    if split is None:
        split = "test" if "test" in dataset.predefined_splits else "all"
    samples = dataset.split(split)
    left_out = None
    trained_on = training_data_of(model_path) if Path(model_path).is_file() else None
    if trained_on is not None and not include_training_data:
        samples, left_out = trained_on.leave_out(samples)
        if left_out.faces and not samples:
            raise DatasetError(
                f"{data} [{split}]: every image was used to train or validate this model ({left_out.summary()}); "
                "its figures would not be held-out figures. Pass --include-training-data to score them anyway"
            )
        if left_out.faces:
            log.warning("left out %s; --include-training-data scores them too", left_out.summary())
    present = sorted({s.label for s in samples})
    if len(present) < 2:
        # per-class scores and macro F1 mean little with one class: refuse before any work (exit code 2)
        found = ", ".join(classifier.classes[i] for i in present) or "none"
        raise DatasetError(
            f"{data} [{split}] holds images of one class only ({found}; the model knows "
            f"{', '.join(classifier.classes)}): evaluation needs at least two classes"
        )
    evaluation = evaluate_samples(classifier, samples, classifier.classes, workers=workers)
    evaluation.skipped = dataset.skipped + evaluation.skipped
    evaluation.info = {
        "model": str(model_path),
        "data": str(data),
        "split": split,
        "crops": crops,
        "min_face": min_face if crops else None,
        "crop_margin": crop_margin if crops else None,
        "split_lists": str(split_lists) if split_lists is not None else None,
        "backend": classifier.backend,
        "training_data_known": trained_on is not None,
        "left_out_training_data": left_out.to_dict() if left_out is not None else None,
    }
    return evaluation


def write_outputs(evaluation: Evaluation, json_path: str | Path) -> dict[str, Any]:
    """Write the JSON metrics, the confusion-matrix PNG and the per-image predictions CSV.

    ``json_path`` ``"-"`` writes the JSON to stdout and nothing else. The PNG needs matplotlib (the
    ``train`` extra); without it ``confusion_png`` is null and a warning says what to install.
    """
    report = evaluation.report
    if str(json_path) == "-":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        sys.stdout.flush()
        return report
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    stem = json_path.with_suffix("")
    try:
        png: str | None = str(
            plot_confusion_matrix(report["confusion_matrix"], evaluation.classes, stem.with_suffix(".confusion.png"))
        )
    except ImportError:
        png = None
        log.warning("no confusion-matrix figure: it needs matplotlib (pip install 'maskwatch[train]')")
    report["confusion_png"] = png
    predictions = stem.with_suffix(".predictions.csv")
    logits = evaluation.logits
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        logit_columns = [f"logit_{c}" for c in evaluation.classes] if logits is not None else []
        writer.writerow(["path", "box", "true", "predicted", *[f"p_{c}" for c in evaluation.classes], *logit_columns])
        for row, (sample, label, p) in enumerate(zip(evaluation.samples, evaluation.labels, evaluation.probabilities)):
            box = "" if sample.box is None else " ".join(map(str, sample.box))
            writer.writerow(
                [
                    sample.path,
                    box,
                    evaluation.classes[label],
                    evaluation.classes[int(p.argmax())],
                    *[f"{v:.6f}" for v in p],
                    *([f"{v:.6g}" for v in logits[row]] if logits is not None else []),
                ]
            )
    report["predictions_csv"] = str(predictions)
    json_path.write_text(json.dumps(report, indent=2))
    return report
