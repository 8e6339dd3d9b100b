"""Classification metrics, calibration and the confusion-matrix figure.

Every score follows scikit-learn's definitions exactly (``tests/test_metrics.py`` compares them with
scikit-learn on the edge cases), written in numpy so the lean, torch-free install needs neither
scikit-learn nor scipy to run ``maskwatch evaluate``:

* the confusion matrix is ``sklearn.metrics.confusion_matrix(y, p, labels=range(n))`` (rows true class,
  columns predicted class);
* precision, recall, F1 and support per class are ``precision_recall_fscore_support(y, p,
  labels=range(n), average=None, zero_division=0)``;
* macro F1 is their unweighted mean over **all** the model's classes (``average="macro"`` with the same
  ``labels``): a class that is predicted but absent from the labels counts with F1 0, it is not dropped;
  when some class has no labelled sample, ``macro_f1_present`` is the mean over the classes that have;
* ROC AUC (two classes) is ``roc_auc_score``: the probability that a random positive outranks a random
  negative, ties counting one half; ``None`` when the labels hold one class only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def confusion(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class (``confusion_matrix`` with ``labels``)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    for name, values in (("label", labels), ("prediction", predictions)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} outside 0..{n_classes - 1}")
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix; 0 where undefined
    (``zero_division=0``)."""
    matrix = np.asarray(matrix)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    # scikit-learn's F1 is 2 tp / (2 tp + fp + fn), which equals the harmonic mean where both are defined
    denom = predicted + support
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(np.int64)


def accuracy_and_macro_f1(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> tuple[float, float]:
    """Accuracy and macro F1 over all ``n_classes`` (0.0 and 0.0 for no samples)."""
    matrix = confusion(labels, predictions, n_classes)
    _, _, f1, _ = per_class_scores(matrix)
    total = int(matrix.sum())
    if total == 0:
        return 0.0, 0.0
    return float(np.trace(matrix) / total), float(f1.mean())


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Binary ROC AUC of ``scores`` for class 1 (``roc_auc_score``); ``None`` unless both classes occur."""
    labels = np.asarray(labels).reshape(-1) == 1
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    # Mann-Whitney U with average ranks for ties: the area under the step ROC curve, ties counted 1/2
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.size]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0  # 1-based average rank of the tie group
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence over equal-width bins (Guo et al., 2017)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_report(probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Every figure ``maskwatch evaluate`` reports, as a JSON-ready dict."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(classes)
    predictions = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
    matrix = confusion(labels, predictions, n)
    precision, recall, f1, support = per_class_scores(matrix)
    accuracy, macro_f1 = accuracy_and_macro_f1(labels, predictions, n)
    report: dict[str, Any] = {
        "classes": list(classes),
        "n_images": len(labels),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
        "ece": expected_calibration_error(probabilities, labels) if len(labels) else 0.0,
    }
    present = support > 0
    if len(labels) and not present.all():
        # e.g. a 3-class model on a 2-class test set: the absent class's F1 of 0 drags macro F1 down; this
        # is the mean over the classes the labels hold (scikit-learn's labels=None, minus predicted-only ones)
        report["macro_f1_present"] = float(f1[present].mean())
    if n == 2:
        report["roc_auc"] = roc_auc(labels, probabilities[:, 1])
    return report


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path) -> Path:
    """Save counts and row-normalised rates side by side as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * len(classes), 2 + 1.1 * len(classes)))
    for ax, data, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], rates, "row-normalised", "{:.2f}")):
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, fmt.format(value), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
