"""Which training samples an epoch draws when several datasets are mixed with sampling weights.

Semantics: an epoch draws as many samples as the training set holds (``N``, the sum over datasets). A
dataset ``d`` with ``n_d`` samples and weight ``w_d`` gets the share ``w_d * n_d / sum_e(w_e * n_e)`` of
those draws, so each of its samples is drawn on average ``w_d / mean weight`` times per epoch (the mean
taken per sample). Equal weights are plain concatenation: every sample exactly once, shuffled. Weight 2 on
the scenes next to weight 1 on the faces means a scene crop is seen twice as often as a face.

Draws are stratified, not independent: a dataset whose share is ``r`` passes per sample gets ``floor(r)``
full passes plus a seeded random subset (without replacement) for the rest, so the proportions hold in
every epoch, not only on average, and no sample is drawn more often than needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def epoch_order(groups: np.ndarray, weights: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Indices of one epoch's draws, shuffled. ``groups[i]`` is sample ``i``'s dataset (an index into
    ``weights``). With equal weights this is ``rng.permutation(len(groups))``."""
    groups = np.asarray(groups, dtype=np.int64)
    n = len(groups)
    present = np.unique(groups)
    if n == 0 or len({float(weights[g]) for g in present}) <= 1:
        return rng.permutation(n)
    members = [np.flatnonzero(groups == g) for g in range(len(weights))]
    mass = np.array([weights[g] * len(m) for g, m in enumerate(members)], dtype=np.float64)
    exact = n * mass / mass.sum()
    draws = np.floor(exact).astype(np.int64)
    for g in np.argsort(-(exact - draws), kind="stable")[: n - int(draws.sum())]:  # largest remainders
        draws[g] += 1
    picked = []
    for g, indices in enumerate(members):
        if not len(indices) or not draws[g]:
            continue
        passes, rest = divmod(int(draws[g]), len(indices))
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
