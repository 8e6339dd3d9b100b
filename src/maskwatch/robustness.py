"""The robustness protocol's measuring parts: a model on face sets under camera conditions, bootstrap
intervals, and the selection rule that decides whether a candidate may replace the bundled model.

    >>> faces = load_faces(samples)                                                   # doctest: +SKIP
    >>> result = evaluate_conditions(classifier, faces, [CLEAN, *all_conditions()])   # doctest: +SKIP
    >>> verdicts = compare(candidate_results, baseline_results)                       # doctest: +SKIP

Every model is read with two classes, compliant (a mask worn correctly) or not, as the engine counts people:
a model with a third class (a mask worn incorrectly) has its probabilities merged by its own compliant
classes (:func:`two_class_predictions`). Each face is decoded once; a condition's noise and angles are seeded
by the face's index and the condition, so two models see the very same corrupted pixels and their results can
be compared face by face (a *paired* bootstrap).

**Noise, and the rule.** A difference between two models on a few hundred faces is mostly chance. For each
population x condition x metric (accuracy, with_mask recall, without_mask recall: :data:`GATE_METRICS`) the
candidate's difference to the baseline is resampled B = 10 000 times (the faces drawn with replacement, the
same draw for both models, stratified by class). The candidate is **worse beyond noise** where the 95 %
percentile interval of that difference lies below zero (:attr:`Verdict.worse`). It may become the bundled
model only if it is worse beyond noise nowhere, against every baseline (:func:`passes`). This is the rule
that flags the regression issue 21 describes (the faces + scenes model against the faces-only one on grey
faces). Training-seed noise is not in these intervals.

**The seed-aware rule** (:func:`compare_recipes`, round 4 of issue 21). A recipe retrained with another seed
fails that rule against its own first seed in 13 to 54 of 204 comparisons (BENCHMARKS "Seed noise,
measured"): the faces' bootstrap does not see the noise of training, which dominates on a source a model never
saw and under camera conditions. So recipes are compared, each trained with several seeds (the same seed
numbers for both), by the mean of their seeds' metric. Its noise is the *multi-bootstrap* of the MultiBERTs
study (Sellam et al., 2022): each of B rounds draws seed numbers with replacement (the same draw for both
recipes: a soup shares ingredients with its baselines, so seeds are paired) and faces with replacement
(stratified, the same faces for every model). Many comparisons are read at once, so the intervals are
*simultaneous* (the max-t band: the 95th percentile over rounds of the largest studentised deviation among all
comparisons of the pair), so a recipe equal to its baseline is called worse anywhere about 5 % of the time
(approximately: resampling n seeds underestimates their variance by (n - 1) / n).
A candidate recipe is worse beyond noise where the simultaneous interval of its difference lies below zero
(:attr:`RecipeVerdict.worse`); it passes when that happens nowhere, against every baseline recipe.

Two looser readings are reported beside it, not used: the one-sided p-values of a candidate against a
baseline corrected together (Benjamini-Hochberg, false discovery rate 5 %: :attr:`Verdict.fdr_worse`), and
gating on accuracy and balanced accuracy only (each class's recall can reward a predecessor's bias).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from maskwatch.data.corruptions import CLEAN, Condition
from maskwatch.data.datasets import Sample
from maskwatch.data.images import Skipped
from maskwatch.runtime.types import Classifier, softmax

__all__ = [
    "GATE_METRICS",
    "LOOSE_METRICS",
    "TWO_CLASSES",
    "ConditionResult",
    "FaceSet",
    "Interval",
    "RecipeVerdict",
    "Verdict",
    "average_hash",
    "benjamini_hochberg",
    "bootstrap_interval",
    "compare",
    "compare_recipes",
    "evaluate_conditions",
    "load_faces",
    "near_duplicates",
    "paired_difference",
    "passes",
    "two_class_predictions",
]

TWO_CLASSES = ("with_mask", "without_mask")  # compliant, not compliant: what the engine counts
METRICS = ("accuracy", "with_mask_recall", "without_mask_recall", "balanced_accuracy")
#: what the selection rule gates on: accuracy and each class's recall (a masked person called unmasked is a
#: false alert; the reverse a missed one)
GATE_METRICS = ("accuracy", "with_mask_recall", "without_mask_recall")
#: the looser variant reported beside the rule: balanced accuracy (the mean of the two recalls) instead of each
#: recall, since a model that calls every blurred face masked keeps a high with_mask recall there
LOOSE_METRICS = ("accuracy", "balanced_accuracy")
BOOTSTRAP = 10_000
LEVEL = 0.95
FALSE_DISCOVERY_RATE = 0.05


@dataclass
class FaceSet:
    """Decoded face crops of one population with their two-class labels (0 compliant, 1 not)."""

    name: str
    images: list[np.ndarray]
    labels: np.ndarray
    samples: list[Sample] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def load_faces(
    name: str, samples: Sequence[Sample], classes: Sequence[str], *, compliant: Sequence[str] = ("with_mask",)
) -> FaceSet:
    """Decode ``samples`` (labels index ``classes``) once; label them 0 when their class is compliant, else 1.
    Unreadable files are skipped and listed."""
    from maskwatch.evaluate import _load_all

    images, skipped = _load_all(samples, workers=2)
    kept = [(s, im) for s, im in zip(samples, images) if im is not None]
    labels = np.array([0 if classes[s.label] in compliant else 1 for s, _ in kept], dtype=np.int64)
    return FaceSet(name, [im for _, im in kept], labels, [s for s, _ in kept], skipped)


def _seed(condition: Condition, index: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(condition.label.encode()), index])


def corrupted(faces: FaceSet, condition: Condition, seed: int = 0) -> list[np.ndarray]:
    """Every face of ``faces`` under ``condition``: the same pixels for every model (seeded per face)."""
    return [condition.apply(image, _seed(condition, i, seed)) for i, image in enumerate(faces.images)]


def two_class_predictions(classifier: Classifier, images: Sequence[np.ndarray]) -> np.ndarray:
    """Per face, 0 when the model's compliant classes together are the more probable, else 1."""
    logits = classifier.logits(list(images))
    if not len(logits):
        return np.zeros(0, dtype=np.int64)
    probabilities = softmax(logits, classifier.temperature)
    compliant = np.array([c in classifier.compliant_classes for c in classifier.classes])
    return (probabilities[:, compliant].sum(1) < 0.5).astype(np.int64)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass
class ConditionResult:
    """A model on one population under one condition: predictions (0/1 per face, in the set's order)."""

    population: str
    condition: str
    labels: np.ndarray
    predictions: np.ndarray

    @property
    def n(self) -> int:
        return len(self.labels)

    def metric(self, name: str, index: np.ndarray | None = None) -> float:
        labels = self.labels if index is None else self.labels[index]
        predictions = self.predictions if index is None else self.predictions[index]
        return _metric(name, labels, predictions)

    def summary(self) -> dict[str, Any]:
        """n, accuracy and each class's recall, with bootstrap intervals (JSON-ready)."""
        out: dict[str, Any] = {"n": self.n, "n_with_mask": int((self.labels == 0).sum())}
        for name in (*METRICS, "macro_f1"):
            out[name] = asdict(bootstrap_interval(self.labels, self.predictions, name))
        return out


def _metric(name: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    if name == "accuracy":
        return float((labels == predictions).mean()) if len(labels) else float("nan")
    if name == "balanced_accuracy":
        recalls = [_metric(m, labels, predictions) for m in ("with_mask_recall", "without_mask_recall")]
        present = [r for r in recalls if not np.isnan(r)]
        return float(np.mean(present)) if present else float("nan")
    if name == "macro_f1":
        return float(_batched(name, labels, predictions, np.arange(len(labels))[None, :])[0])
    cls = 0 if name == "with_mask_recall" else 1
    mask = labels == cls
    return float((predictions[mask] == cls).mean()) if mask.any() else float("nan")


def _resamples(labels: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """``rounds`` x N indices drawn with replacement within each class (class sizes stay fixed, so each
    class's recall is always defined)."""
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, len(labels)), dtype=np.int64)
    start = 0
    order = np.argsort(labels, kind="stable")
    for cls in np.unique(labels):
        members = order[labels[order] == cls]
        out[:, start : start + len(members)] = rng.choice(members, size=(rounds, len(members)))
        start += len(members)
    return out


def _batched(name: str, labels: np.ndarray, predictions: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The metric of each resample (rows of ``draws``), vectorised."""
    y, p = labels[draws], predictions[draws]
    if name == "accuracy":
        return (y == p).mean(axis=1)
    if name == "balanced_accuracy":
        recalls = [_batched(m, labels, predictions, draws) for m in ("with_mask_recall", "without_mask_recall")]
        return np.nanmean(np.stack(recalls), axis=0)
    if name == "macro_f1":  # the two classes' F1 = 2 TP / (2 TP + FP + FN), averaged (scikit-learn's definition)
        scores = []
        for cls in (0, 1):
            tp = ((p == cls) & (y == cls)).sum(axis=1)
            wrong = ((p == cls) != (y == cls)).sum(axis=1)
            scores.append(np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
        return np.mean(np.stack(scores), axis=0)
    cls = 0 if name == "with_mask_recall" else 1
    member = y == cls
    with np.errstate(invalid="ignore"):
        return ((p == cls) & member).sum(axis=1) / member.sum(axis=1)


def bootstrap_interval(
    labels: np.ndarray, predictions: np.ndarray, metric: str = "accuracy", *, rounds: int = BOOTSTRAP, seed: int = 0
) -> Interval:
    """The metric and its 95 % percentile bootstrap interval (faces resampled within each class)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    value = _metric(metric, labels, predictions)
    if not len(labels) or np.isnan(value):
        return Interval(value, value, value)
    values = _batched(metric, labels, predictions, _resamples(labels, rounds, seed))
    low, high = np.nanpercentile(values, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Interval(value, float(low), float(high))


def paired_difference(
    labels: np.ndarray,
    candidate: np.ndarray,
    baseline: np.ndarray,
    metric: str = "accuracy",
    *,
    rounds: int = BOOTSTRAP,
    seed: int = 0,
    draws: np.ndarray | None = None,
) -> tuple[Interval, float]:
    """candidate - baseline on the same faces, with the 95 % interval of a paired bootstrap (both models
    scored on the same resampled faces), and the one-sided p-value of "the candidate is worse": the share of
    resamples in which it is not, ``(k + 1) / (B + 1)``. ``draws`` reuses resamples of the same faces."""
    labels, candidate, baseline = np.asarray(labels), np.asarray(candidate), np.asarray(baseline)
    if not (len(labels) == len(candidate) == len(baseline)):
        raise ValueError("paired comparison needs the same faces for both models")
    value = _metric(metric, labels, candidate) - _metric(metric, labels, baseline)
    if not len(labels) or np.isnan(value):
        return Interval(value, value, value), 1.0
    if draws is None:
        draws = _resamples(labels, rounds, seed)
    deltas = _batched(metric, labels, candidate, draws) - _batched(metric, labels, baseline, draws)
    low, high = np.nanpercentile(deltas, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    p_worse = (np.count_nonzero(~(deltas < 0)) + 1) / (len(deltas) + 1)
    return Interval(value, float(low), float(high)), float(p_worse)


def evaluate_conditions(
    classifier: Classifier, faces: FaceSet, conditions: Sequence[Condition] = (CLEAN,), *, seed: int = 0
) -> dict[str, ConditionResult]:
    """The model's two-class predictions on ``faces`` under each condition, by condition label."""
    results = {}
    for condition in conditions:
        images = faces.images if condition == CLEAN else corrupted(faces, condition, seed)
        predictions = two_class_predictions(classifier, images)
        results[condition.label] = ConditionResult(faces.name, condition.label, faces.labels, predictions)
    return results


class _Judged:
    """What both kinds of verdict read from their ``difference`` interval (candidate - baseline)."""

    difference: Interval

    @property
    def worse(self) -> bool:
        """Worse beyond noise, the rule: the whole interval of the difference lies below zero."""
        return self.difference.high < 0

    @property
    def better(self) -> bool:
        """Better beyond noise: the whole interval of the difference lies above zero."""
        return self.difference.low > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "worse": self.worse, "better": self.better}  # type: ignore[call-overload]  # subclasses are dataclasses


@dataclass(frozen=True)
class Verdict(_Judged):
    """Candidate vs one baseline on one population, condition and metric (the interval: 95 % paired
    bootstrap over faces)."""

    baseline: str
    population: str
    condition: str
    metric: str
    difference: Interval
    p_worse: float = 1.0  # one-sided bootstrap p-value of "the candidate is worse"
    fdr_worse: bool = False  # worse after correcting all comparisons together (reported, not the rule)


def benjamini_hochberg(p_values: Sequence[float], rate: float = FALSE_DISCOVERY_RATE) -> np.ndarray:
    """Which of ``p_values`` are discoveries at false discovery rate ``rate`` (the step-up procedure)."""
    p = np.asarray(p_values, dtype=np.float64)
    if not len(p):
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    passed = p[order] <= rate * np.arange(1, len(p) + 1) / len(p)
    out = np.zeros(len(p), dtype=bool)
    if passed.any():
        out[order[: int(np.flatnonzero(passed).max()) + 1]] = True
    return out


def compare(
    candidate: dict[str, dict[str, ConditionResult]],
    baseline: dict[str, dict[str, ConditionResult]],
    *,
    baseline_name: str = "baseline",
    metrics: Sequence[str] = GATE_METRICS,
    rounds: int = BOOTSTRAP,
    seed: int = 0,
) -> list[Verdict]:
    """A verdict for every population x condition x metric both hold (``{population: {condition: result}}``);
    ``fdr_worse`` is set by Benjamini-Hochberg over all of them."""
    verdicts = []
    for population, conditions in candidate.items():
        draws = None
        for label, mine in conditions.items():
            theirs = baseline.get(population, {}).get(label)
            if theirs is None:
                continue
            if not np.array_equal(mine.labels, theirs.labels):
                raise ValueError(f"{population} / {label}: the two models were not scored on the same faces")
            if draws is None:  # the same resampled faces for every condition and metric of a population
                draws = _resamples(mine.labels, rounds, seed)
            for metric in metrics:
                difference, p_worse = paired_difference(
                    mine.labels, mine.predictions, theirs.predictions, metric, draws=draws
                )
                verdicts.append(Verdict(baseline_name, population, label, metric, difference, p_worse))
    flagged = benjamini_hochberg([v.p_worse for v in verdicts])
    return [replace(v, fdr_worse=bool(f and v.difference.value < 0)) for v, f in zip(verdicts, flagged)]


Results = dict[str, dict[str, ConditionResult]]  # one model's predictions: {population: {condition: result}}


@dataclass(frozen=True)
class RecipeVerdict(_Judged):
    """Candidate recipe vs one baseline recipe (each several seeds) on one population, condition and metric
    (the interval: simultaneous, over seeds and faces)."""

    baseline: str
    population: str
    condition: str
    metric: str
    difference: Interval  # mean over the candidate's seeds - mean over the baseline's; simultaneous 95 % interval
    pointwise: Interval  # the same difference with this comparison's own 95 % interval (reported, not the rule)
    candidate_seeds: tuple[float, ...]
    baseline_seeds: tuple[float, ...]
    band: float = 0.0  # the simultaneous interval's half-width in standard errors (the same for every comparison)


def _seed_weights(rng: np.random.Generator, seeds: int, rounds: int) -> np.ndarray:
    """``rounds`` x ``seeds``: how often each seed is drawn (with replacement) in a round, over the draws."""
    picks = rng.integers(seeds, size=(rounds, seeds))
    return (picks[:, :, None] == np.arange(seeds)).sum(axis=1) / seeds


def compare_recipes(
    candidate: Sequence[Results],
    baseline: Sequence[Results],
    *,
    baseline_name: str = "baseline",
    metrics: Sequence[str] = GATE_METRICS,
    rounds: int = BOOTSTRAP,
    seed: int = 0,
) -> list[RecipeVerdict]:
    """The seed-aware rule's verdicts (module docstring): ``candidate`` and ``baseline`` hold one result per
    seed, in the order of their seed numbers (paired: the i-th of each share a seed number). Comparisons
    that some seed lacks, or whose metric is undefined, are left out."""
    if len(candidate) != len(baseline) or len(candidate) < 2:
        raise ValueError(
            f"the seed-aware rule needs the same seed numbers for both recipes, two or more "
            f"(got {len(candidate)} and {len(baseline)} models)"
        )
    weights = _seed_weights(np.random.default_rng([seed, 1]), len(candidate), rounds)
    members = [*candidate, *baseline]
    n = len(candidate)
    keys: list[tuple[str, str, str]] = []
    observed, deltas, seed_values = [], [], []
    for population, conditions in candidate[0].items():
        draws = None
        for label in conditions:
            results = [r for m in members if (r := m.get(population, {}).get(label)) is not None]
            if len(results) < len(members):
                continue
            labels = results[0].labels
            if not all(np.array_equal(r.labels, labels) for r in results):
                raise ValueError(f"{population} / {label}: the models were not scored on the same faces")
            if draws is None:
                draws = _resamples(labels, rounds, seed)
            for metric in metrics:
                values = np.array([r.metric(metric) for r in results])
                if np.isnan(values).any():
                    continue
                per_round = np.stack([_batched(metric, labels, r.predictions, draws) for r in results])
                keys.append((population, label, metric))
                observed.append(values[:n].mean() - values[n:].mean())
                deltas.append((weights * (per_round[:n] - per_round[n:]).T).sum(axis=1))
                seed_values.append(values)
    if not keys:
        return []
    d, spread = np.array(observed), np.stack(deltas)
    se = spread.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        studentised = np.where(se[:, None] > 0, np.abs(spread - d[:, None]) / se[:, None], 0.0)
    band = float(np.quantile(studentised.max(axis=0), LEVEL))
    low, high = np.percentile(spread, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2], axis=1)
    return [
        RecipeVerdict(
            baseline_name,
            population,
            label,
            metric,
            Interval(float(d[i]), float(d[i] - band * se[i]), float(d[i] + band * se[i])),
            Interval(float(d[i]), float(low[i]), float(high[i])),
            tuple(float(v) for v in seed_values[i][:n]),
            tuple(float(v) for v in seed_values[i][n:]),
            band,
        )
        for i, (population, label, metric) in enumerate(keys)
    ]


def passes(verdicts: Sequence[Verdict] | Sequence[RecipeVerdict], *, corrected: bool = False) -> bool:
    """The selection rule: no population, condition or metric worse beyond noise against any baseline
    (``corrected``: the looser false-discovery-rate reading of single models, reported beside it)."""
    if corrected:
        return not any(isinstance(v, Verdict) and v.fdr_worse for v in verdicts)
    return not any(v.worse for v in verdicts)


# --------------------------------------------------------------------------------------------------------
# near-duplicates across sources (pis/ holds faces/ photos, some with a pasted mask)


def average_hash(image: np.ndarray, size: int = 16) -> np.ndarray:
    """A perceptual hash: the ``size`` x ``size`` grey thumbnail above its mean, as booleans. Re-encoded,
    resized or lightly edited copies of a picture stay within a few bits of each other."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    thumb = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (thumb > thumb.mean()).reshape(-1)


def near_duplicates(queries: np.ndarray, references: np.ndarray, max_bits: int = 10) -> np.ndarray:
    """For each query hash (rows), whether some reference hash differs in at most ``max_bits`` bits."""
    queries, references = np.atleast_2d(queries), np.atleast_2d(references)
    if not len(references) or not len(queries):
        return np.zeros(len(queries), dtype=bool)
    out = np.zeros(len(queries), dtype=bool)
    for start in range(0, len(queries), 256):
        distance = (queries[start : start + 256, None, :] != references[None, :, :]).sum(axis=2)
        out[start : start + 256] = distance.min(axis=1) <= max_bits
    return out
