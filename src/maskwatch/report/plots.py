"""Figures of the report, each a small function of plain arrays that returns a matplotlib ``Figure``.

Figures are built with the object API (``matplotlib.figure.Figure`` on the Agg canvas), never pyplot, so
no global state builds up and nothing needs closing. :mod:`maskwatch.plotting` holds the helpers shared
with ``maskwatch explain`` (new figures, data URIs, the explanation figure).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from maskwatch.plotting import new_figure
from maskwatch.report.analysis import Reliability

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


# -- training -----------------------------------------------------------------------------------------


def _num(row: dict, key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except (TypeError, ValueError):
        return float("nan")


def plot_training_curves(history: Sequence[dict]) -> Figure:
    """Loss, and accuracy with validation macro F1, per epoch (train vs validation); stages are marked."""
    fig = new_figure(10, 3.4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    x = np.arange(1, len(history) + 1)
    for ax, keys, title in (
        (ax_loss, (("train_loss", "train"), ("val_loss", "validation")), "loss"),
        (
            ax_acc,
            (
                ("train_acc", "train accuracy"),
                ("val_acc", "validation accuracy"),
                ("val_macro_f1", "validation macro F1"),
            ),
            "accuracy / F1",
        ),
    ):
        for (key, label), color in zip(keys, PALETTE):
            y = np.array([_num(r, key) for r in history])
            if np.isfinite(y).any():
                ax.plot(x, y, marker="o", ms=3, label=label, color=color, ls="--" if "f1" in key else "-")
        stages = [str(r.get("stage", "")) for r in history]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="grey", lw=0.8, ls=":")
                ax.text(
                    i + 0.6,
                    0.98,
                    f"stage {stages[i]}",
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    fontsize=8,
                    color="grey",
                )
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (all stages)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- metrics ------------------------------------------------------------------------------------------


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """Counts and row-normalised rates (rows true, columns predicted)."""
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(classes)
    fig = new_figure(4 + 2.2 * n, 2 + 1.1 * n)
    for ax, data, title, fmt in zip(
        fig.subplots(1, 2), (counts, rates), ("counts", "row-normalised"), ("{:.0f}", "{:.2f}")
    ):
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xticks(range(n), classes, rotation=30, ha="right")
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, fmt.format(value), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def _one_vs_rest(labels: np.ndarray, classes: Sequence[str]):
    """(class index, name, colour, positives mask) for each class with both positives and negatives."""
    labels = np.asarray(labels)
    for index, (name, color) in enumerate(zip(classes, PALETTE * 4)):
        positives = labels == index
        if positives.any() and not positives.all():
            yield index, name, color, positives


def plot_roc(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> Figure:
    """One-vs-rest ROC curve per class, with its AUC."""
    from sklearn.metrics import auc, roc_curve

    fig = new_figure(4.4, 4)
    ax = fig.subplots()
    for index, name, color, positives in _one_vs_rest(labels, classes):
        fpr, tpr, _ = roc_curve(positives, probabilities[:, index])
        ax.plot(fpr, tpr, color=color, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC (one class vs rest)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_precision_recall(
    labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], thresholds: Sequence[dict] | None = None
) -> Figure:
    """One-vs-rest precision-recall curve per class with average precision; the F1-maximising threshold
    (from ``analysis.threshold_table``) is marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = new_figure(4.4, 4)
    ax = fig.subplots()
    for index, name, color, positives in _one_vs_rest(labels, classes):
        precision, recall, _ = precision_recall_curve(positives, probabilities[:, index])
        ap = average_precision_score(positives, probabilities[:, index])
        ax.plot(recall, precision, color=color, label=f"{name} (AP {ap:.3f})")
        best = (thresholds or [{}] * len(classes))[index]
        if best.get("threshold") is not None:
            ax.plot(
                best["recall"],
                best["precision"],
                "o",
                color=color,
                mec="black",
                label=f"max F1 {best['f1']:.3f} at p≥{best['threshold']:.2f}",
            )
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall (one class vs rest)",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_reliability(rel: Reliability, before: Reliability | None = None, temperature: float = 1.0) -> Figure:
    """Reliability diagram (accuracy vs confidence per bin, gap shaded) over a histogram of confidences.

    ``before``: the same data without the model's temperature (T = 1), drawn over the calibrated bars as a
    dashed line (accuracy at each bin's mean confidence) and a step outline in the histogram, so the
    change that temperature scaling made is visible in one figure."""
    fig = new_figure(4.4, 5)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centres = (rel.edges[:-1] + rel.edges[1:]) / 2
    width = rel.edges[1] - rel.edges[0]
    filled = rel.counts > 0
    ax.bar(
        centres[filled],
        rel.accuracy[filled],
        width=width,
        edgecolor="black",
        color="#1f77b4",
        alpha=0.8,
        label="accuracy" if before is None else f"accuracy, calibrated (T = {temperature:.3g})",
    )
    gap = (rel.confidence - rel.accuracy)[filled]
    over, under = gap > 0, gap < 0  # bars drawn from the accuracy up (over-) or down (under-confident)
    for mask, color, label in (
        (over, "#ff7f0e", "gap: over-confident (confidence > accuracy)"),
        (under, "#2ca02c", "gap: under-confident (confidence < accuracy)"),
    ):
        if mask.any():
            ax.bar(
                centres[filled][mask],
                gap[mask],
                bottom=rel.accuracy[filled][mask],
                width=width,
                color=color,
                alpha=0.45,
                edgecolor=color,
                hatch="//",
                label=label,
            )
    if before is not None:
        shown = before.counts > 0
        ax.plot(
            before.confidence[shown],
            before.accuracy[shown],
            color="#d62728",
            ls="--",
            marker="o",
            ms=4,
            label=f"before calibration (T = 1, ECE {before.ece:.4f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    title = (
        f"Reliability (ECE {rel.ece:.4f})" if before is None else f"Reliability: ECE {before.ece:.4f} → {rel.ece:.4f}"
    )
    ax.set(ylabel="accuracy", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.bar(centres, rel.counts, width=width, color="grey", edgecolor="black", label="calibrated")
    if before is not None:
        hist.stairs(before.counts, before.edges, color="#d62728", ls="--", label="T = 1")
        hist.legend(fontsize=7, loc="upper left")
    hist.set_yscale("symlog")
    hist.set(xlabel="top-class confidence", ylabel="images", xlim=(0, 1))
    fig.tight_layout()
    return fig


# -- explanations -------------------------------------------------------------------------------------


def plot_cam_mass(
    table: dict[str, np.ndarray], labels: np.ndarray, classes: Sequence[str], baseline: dict[str, float] | None = None
) -> Figure:
    """Left: each image's share of CAM mass on the lower face, per true class (box plot and points; the
    dashed mark is what a uniform map would give). Right: mean share on lower face / upper face / outside."""
    labels = np.asarray(labels)
    fig = new_figure(9, 3.6)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    data, names = [], []
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        values = table["lower_face"][labels == index]
        data.append(values[np.isfinite(values)])
        names.append(f"{name}\n(n={data[-1].size})")
    positions = np.arange(1, len(classes) + 1)
    non_empty = [i for i, d in enumerate(data) if d.size]
    if non_empty:
        left.boxplot([data[i] for i in non_empty], positions=positions[non_empty], widths=0.5, showfliers=False)
    for i, values in enumerate(data):
        left.scatter(
            positions[i] + rng.uniform(-0.18, 0.18, values.size),
            values,
            s=6,
            alpha=0.4,
            color=PALETTE[i % len(PALETTE)],
        )
        if baseline and classes[i] in baseline and np.isfinite(baseline[classes[i]]):
            left.hlines(
                baseline[classes[i]], positions[i] - 0.3, positions[i] + 0.3, colors="black", linestyles="--", lw=1
            )
    left.set_xticks(positions, names)
    left.set(ylim=(0, 1), ylabel="share of CAM mass on lower face", title="Lower-face share per true class")
    left.grid(alpha=0.3, axis="y")
    parts = (
        ("lower_face", "lower face", "#2ca02c"),
        ("upper_face", "upper face", "#1f77b4"),
        ("outside", "outside the face", "#7f7f7f"),
    )
    bottom = np.zeros(len(classes))
    for key, label, color in parts:
        means = np.array(
            [
                np.nanmean(table[key][labels == i]) if np.isfinite(table[key][labels == i]).any() else 0.0
                for i in range(len(classes))
            ]
        )
        right.bar(positions, means, bottom=bottom, color=color, label=label, width=0.6)
        for x, b, m in zip(positions, bottom, means):
            if m > 0.06:
                right.text(x, b + m / 2, f"{m:.2f}", ha="center", va="center", fontsize=8, color="white")
        bottom += means
    right.set_xticks(positions, list(classes))
    right.set(ylim=(0, 1), ylabel="mean share", title="Where the CAM mass falls")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def _mosaic(tiles: Sequence[np.ndarray], cols: int, gap: int = 2, row_gap: int | None = None) -> np.ndarray:
    """Equal-sized HxWx3 tiles in [0, 1] on a white grid, row by row (``row_gap`` above every row)."""
    h, w = tiles[0].shape[:2]
    rows = int(np.ceil(len(tiles) / cols))
    vgap = gap if row_gap is None else row_gap
    top = 0 if row_gap is None else row_gap
    canvas = np.ones((top + rows * (h + vgap) - vgap, cols * (w + gap) - gap, 3), dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y = top + r * (h + vgap)
        canvas[y : y + h, c * (w + gap) : c * (w + gap) + w] = tile
    return canvas


def _scaled(array: np.ndarray) -> np.ndarray:
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array, dtype=np.float64)


def _resize_nearest(array: np.ndarray, size: int) -> np.ndarray:
    rows = (np.arange(size) * array.shape[0] // size).clip(0, array.shape[0] - 1)
    cols = (np.arange(size) * array.shape[1] // size).clip(0, array.shape[1] - 1)
    return array[rows][:, cols]


def plot_feature_maps(
    image: np.ndarray, maps: Sequence[tuple[str, str, np.ndarray]], k: int = 8, tile: int = 64
) -> Figure:
    """One row per layer: the input, then the ``k`` most active channels of that layer's output (C x h x w),
    each scaled to its own range (viridis). Drawn as one mosaic image, which keeps it fast."""
    from matplotlib import colormaps

    from maskwatch.explain.visuals import top_channels

    viridis = colormaps["viridis"]
    picture = _resize_nearest(np.clip(np.asarray(image, dtype=np.float64), 0, 1), tile)
    tiles, labels = [], []
    for label, name, fmap in maps:
        channels = top_channels(fmap, k)
        tiles.append(picture)
        tiles.extend(viridis(_resize_nearest(_scaled(fmap[c]), tile))[..., :3] for c in channels)
        tiles.extend(np.ones((tile, tile, 3)) for _ in range(k - len(channels)))
        labels.append((f"{label}\n{name}\n{fmap.shape[1]}x{fmap.shape[2]}", [f"ch {c}" for c in channels]))
    cols, row_gap = k + 1, 14
    fig = new_figure(0.95 * cols + 1.0, 1.2 * max(1, len(maps)))
    ax = fig.add_axes((0.1, 0.0, 0.9, 1.0))
    if tiles:
        ax.imshow(_mosaic(tiles, cols, row_gap=row_gap), interpolation="nearest")
    for r, (row_label, channel_labels) in enumerate(labels):
        y = row_gap + r * (tile + row_gap)
        ax.text(-6, y + tile / 2, row_label, ha="right", va="center", fontsize=7)
        for c, text in enumerate(channel_labels):
            ax.text((c + 1) * (tile + 2) + tile / 2, y - 2, text, ha="center", va="bottom", fontsize=6)
    ax.axis("off")
    return fig


def plot_filters(weights: np.ndarray, name: str = "first conv", scale: int = 8) -> Figure:
    """First-layer filters (out x in x k x k) as tiles, each scaled to its own range (RGB when in == 3)."""
    n = weights.shape[0]
    cols = min(16, n)
    tiles = []
    for w in weights:
        tile = w.transpose(1, 2, 0) if w.shape[0] == 3 else np.repeat(w.mean(axis=0)[..., None], 3, axis=2)
        tiles.append(np.kron(_scaled(tile), np.ones((scale, scale, 1))))
    mosaic = _mosaic(tiles, cols)
    fig = new_figure(0.45 * cols + 0.3, 0.45 * int(np.ceil(n / cols)) + 0.5)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.8))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{name}: {n} filters {weights.shape[1]}x{weights.shape[2]}x{weights.shape[3]}", fontsize=9)
    return fig


def plot_weight_histograms(weights: Sequence[tuple[str, np.ndarray]]) -> Figure:
    """One histogram per weight tensor, with its shape, mean and standard deviation."""
    n = max(1, len(weights))
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(3.2 * cols, 2.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax, (name, w) in zip(axes, weights):
        values = np.asarray(w, dtype=np.float64).ravel()
        ax.hist(values, bins=60, color="#1f77b4")
        ax.set_title(f"{name} {tuple(w.shape)}", fontsize=8)
        ax.text(
            0.02,
            0.95,
            f"mean {values.mean():+.3g}\nstd {values.std():.3g}",
            transform=ax.transAxes,
            va="top",
            fontsize=7,
        )
        ax.tick_params(labelsize=7)
    for ax in axes[len(weights) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig
