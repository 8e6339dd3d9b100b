"""Classification metrics, calibration and the confusion-matrix figure.

The per-epoch numbers (accuracy, macro F1) are plain numpy so the training loop stays light; the full
evaluation uses scikit-learn for the rest (ROC AUC, precision/recall per class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def confusion(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def per_class_scores(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(np.int64)


def accuracy_and_macro_f1(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> tuple[float, float]:
    matrix = confusion(labels, predictions, n_classes)
    _, _, f1, support = per_class_scores(matrix)
    present = support > 0
    accuracy = float(np.trace(matrix) / max(1, matrix.sum()))
    return accuracy, float(f1[present].mean()) if present.any() else 0.0


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence over equal-width bins (Guo et al., 2017)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
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
        "n_images": int(len(labels)),
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
    if n == 2:
        from sklearn.metrics import roc_auc_score

        both = len(set(labels.tolist())) == 2
        report["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1])) if both else None
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
            ax.text(j, i, fmt.format(value), ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
