"""Which training samples an epoch draws when several datasets are mixed with sampling weights.

Semantics: an epoch draws as many samples as the training set holds (``N``, the sum over datasets). A
dataset ``d`` with ``n_d`` samples and weight ``w_d`` gets the share ``w_d * n_d / sum_e(w_e * n_e)`` of
those draws, so each of its samples is drawn on average ``w_d / mean weight`` times per epoch (the mean
taken per sample). Equal weights are plain concatenation: every sample exactly once, shuffled. Weight 2 on
the scenes next to weight 1 on the faces means a scene crop is seen twice as often as a face.

Draws are stratified, not independent: a dataset whose share is ``r`` passes per sample gets ``floor(r)``
full passes plus a seeded random subset (without replacement) for the rest, so the proportions hold in
every epoch, not only on average, and no sample is drawn more often than needed.

Balancing (``balance`` in the config, :func:`epoch_order`) changes the shares, not the epoch's length: by
class within each dataset, by dataset whatever its size, or both (each dataset x class cell then gets
``w_d / sum(w) / classes of d`` of the draws).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BALANCE_MODES = ("none", "classes", "datasets", "datasets_classes")


def epoch_order(
    groups: np.ndarray,
    weights: Sequence[float],
    rng: np.random.Generator,
    *,
    labels: np.ndarray | None = None,
    balance: str = "none",
) -> np.ndarray:
    """Indices of one epoch's draws, shuffled. ``groups[i]`` is sample ``i``'s dataset (an index into
    ``weights``). With equal weights and no balancing this is ``rng.permutation(len(groups))``.

    ``balance`` (with ``labels``, each sample's class) reshapes the shares: ``classes`` gives every class of
    a dataset the same share of that dataset's draws; ``datasets`` gives every dataset the share of its weight
    whatever its size; ``datasets_classes`` does both. Rare cells are then drawn more than once per epoch
    (from different cached views)."""
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    groups = np.asarray(groups, dtype=np.int64)
    n = len(groups)
    present = np.unique(groups)
    if n == 0 or (balance == "none" and len({float(weights[g]) for g in present}) <= 1):
        return rng.permutation(n)
    by_class = balance in ("classes", "datasets_classes")
    if by_class and labels is None:
        raise ValueError(f"balance {balance!r} needs the samples' labels")
    label_array = np.asarray(labels, dtype=np.int64) if labels is not None else np.zeros(n, dtype=np.int64)
    cells = groups * (int(label_array.max()) + 1) + label_array if by_class else groups
    members = {int(c): np.flatnonzero(cells == c) for c in np.unique(cells)}
    group_of = {c: int(groups[m[0]]) for c, m in members.items()}
    cells_in_group = {g: sum(1 for c in members if group_of[c] == g) for g in present.tolist()}
    size_of_group = {g: int((groups == g).sum()) for g in present.tolist()}
    mass = {}
    for c, m in members.items():
        g = group_of[c]
        share = float(weights[g]) * (1.0 if balance in ("datasets", "datasets_classes") else size_of_group[g])
        mass[c] = share / cells_in_group[g] if by_class else share * len(m) / size_of_group[g]
    keys = sorted(members)
    total = sum(mass.values())
    exact = np.array([n * mass[c] / total for c in keys])
    draws = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - draws), kind="stable")[: n - int(draws.sum())]:  # largest remainders
        draws[i] += 1
    picked = []
    for c, count in zip(keys, draws):
        indices = members[c]
        if not count:
            continue
        passes, rest = divmod(int(count), len(indices))
        picked.append(np.tile(indices, passes))
        picked.append(rng.choice(indices, size=rest, replace=False))
    order = np.concatenate(picked)
    return order[rng.permutation(len(order))]


def draw_rates(groups: np.ndarray, weights: Sequence[float]) -> list[float]:
    """Expected draws per sample and epoch for each dataset (1.0 each for equal weights), for the log."""
    groups = np.asarray(groups, dtype=np.int64)
    sizes = np.bincount(groups, minlength=len(weights)).astype(np.float64)
    mass = float(sum(w * s for w, s in zip(weights, sizes)))
    if not mass:
        return [0.0 for _ in weights]
    return [float(len(groups) * w / mass) if s else 0.0 for w, s in zip(weights, sizes)]


def sample_stratified(groups: Mapping[Any, list[Any]], n: int, seed: int) -> list[Any]:
    """About ``n`` items, each group contributing in proportion to its size (at least one), seeded."""
    rng = np.random.default_rng(seed)
    total = sum(len(v) for v in groups.values())
    chosen: list[Any] = []
    for key in sorted(groups, key=str):
        group = groups[key]
        take = min(len(group), max(1, round(n * len(group) / total)))
        chosen.extend(group[i] for i in sorted(rng.choice(len(group), size=take, replace=False)))
    return chosen
