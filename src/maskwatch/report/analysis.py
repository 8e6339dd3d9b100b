"""Numbers behind the report's figures: reliability bins, the F1-maximising threshold, gallery picks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reliability:
    edges: np.ndarray  # bins + 1
    confidence: np.ndarray  # mean top-class confidence per bin (NaN when empty)
    accuracy: np.ndarray  # accuracy per bin (NaN when empty)
    counts: np.ndarray
    ece: float


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> Reliability:
    """Top-class confidence vs accuracy over equal-width bins; ECE as in ``metrics.expected_calibration_error``."""
    from maskwatch.metrics import expected_calibration_error

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1) if len(labels) else np.zeros(0)
    correct = (probabilities.argmax(axis=1) == labels) if len(labels) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf, acc, counts = np.full(bins, np.nan), np.full(bins, np.nan), np.zeros(bins, dtype=np.int64)
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        inside = (confidence > lo) & (confidence <= hi)
        counts[i] = int(inside.sum())
        if counts[i]:
            conf[i], acc[i] = confidence[inside].mean(), correct[inside].mean()
    ece = expected_calibration_error(probabilities, labels, bins) if len(labels) else 0.0
    return Reliability(edges, conf, acc, counts, float(ece))


def best_f1_threshold(scores: np.ndarray, positives: np.ndarray) -> dict[str, float] | None:
    """The score threshold (predict positive when ``score >= t``) with the highest F1, and its precision,
    recall and F1; None when the positives or negatives are missing."""
    from sklearn.metrics import precision_recall_curve

    positives = np.asarray(positives, dtype=bool)
    if positives.all() or not positives.any():
        return None
    precision, recall, thresholds = precision_recall_curve(positives, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return {
        "threshold": float(thresholds[best]),
        "f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
    }


def threshold_table(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """Per class (one-vs-rest): the F1-maximising threshold on its probability, next to the F1 of the
    default rule (the most probable class wins)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    rows = []
    for index, name in enumerate(classes):
        positives = labels == index
        best = best_f1_threshold(probabilities[:, index], positives) if len(labels) else None
        tp = float(np.sum(positives & (predicted == index)))
        fp, fn = float(np.sum(~positives & (predicted == index))), float(np.sum(positives & (predicted != index)))
        default_f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        row: dict[str, Any] = {"class": name, "default_f1": default_f1}
        row.update(best if best else {"threshold": None})
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Pick:
    index: int  # row in the evaluation
    label: int
    predicted: int
    probability: float  # of the predicted class


GALLERIES = {
    "misclassified": "Misclassified (most confident mistakes first)",
    "low_confidence": "Lowest confidence (top-class probability below the threshold, lowest first)",
    "confident_correct": "Most confident correct",
}


def pick_galleries(
    probabilities: np.ndarray, labels: np.ndarray, n_classes: int, *, per_gallery: int = 8, low_confidence: float = 0.6
) -> dict[str, dict[int, list[Pick]]]:
    """For each gallery and each true class, up to ``per_gallery`` rows, in a deterministic order."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    top = probabilities.max(axis=1) if len(labels) else np.zeros(0)
    picks: dict[str, dict[int, list[Pick]]] = {name: {} for name in GALLERIES}
    for c in range(n_classes):
        mine = np.flatnonzero(labels == c)
        wrong = mine[predicted[mine] != c]
        right = mine[predicted[mine] == c]
        unsure = mine[top[mine] < low_confidence]
        orders = {
            "misclassified": wrong[np.argsort(-top[wrong], kind="stable")],
            "low_confidence": unsure[np.argsort(top[unsure], kind="stable")],
            "confident_correct": right[np.argsort(-top[right], kind="stable")],
        }
        for name, order in orders.items():
            picks[name][c] = [Pick(int(i), c, int(predicted[i]), float(top[i])) for i in order[:per_gallery]]
    return picks
