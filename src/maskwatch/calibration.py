"""Temperature scaling: make a model's probabilities mean what they say.

A network trained with cross-entropy is usually over-confident on new data: among faces it labels with
probability 0.99, fewer than 99 % are right. Temperature scaling (Guo et al., 2017, "On Calibration of
Modern Neural Networks") divides the logits by one number T > 0 before the softmax. T is fitted on
validation data by minimising the negative log-likelihood; it never changes which class wins, only how sure
the model says it is. The per-track votes and the alert rules average these probabilities, so they should
be honest.

    >>> result = fit_temperature(logits, labels)                                       # doctest: +SKIP
    >>> result.temperature, result.ece_before, result.ece_after                        # doctest: +SKIP
    >>> calibrate_checkpoint("runs/a/model.pt", dataset.split("valid"), dataset.classes)  # doctest: +SKIP

T travels with the model (checkpoint, ONNX and TorchScript metadata; see :mod:`maskwatch.runtime.types`) and
every backend applies it in ``predict_proba``. The CLI is ``maskwatch calibrate``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.core.contract import check_temperature
from maskwatch.core.timeutil import now_iso
from maskwatch.metrics import expected_calibration_error
from maskwatch.runtime.types import softmax

log = logging.getLogger("maskwatch")

__all__ = [
    "TEMPERATURE_BOUNDS",
    "CalibrationResult",
    "calibrate_checkpoint",
    "fit_temperature",
    "held_out_check",
    "negative_log_likelihood",
]

#: The search range of T. A fit that ends on a bound is not trusted (see :func:`fit_temperature`).
TEMPERATURE_BOUNDS = (0.05, 20.0)
ECE_BINS = 15  # as in maskwatch.metrics / the report


@dataclass(frozen=True)
class CalibrationResult:
    """What a temperature fit found, before (the model's previous T) and after (the new T)."""

    temperature: float  # the model's temperature from now on
    previous_temperature: float
    nll_before: float  # mean negative log-likelihood per sample
    nll_after: float
    ece_before: float  # expected calibration error, 15 equal-width bins of top-class confidence
    ece_after: float
    n: int  # samples fitted on
    errors: int  # of those, how many the model gets wrong (argmax; T does not change it)
    fitted: bool = True  # False: T was kept, ``note`` says why
    note: str = ""
    model: str | None = None  # the calibrated checkpoint written, if any
    # the held-out check (repeated 2-fold cross-validation on the fitting data): NLL and ECE of the halves, each
    # with the T fitted on the other half ("after") or the previous T ("before"); None when not run
    cv_nll_before: float | None = None
    cv_nll_after: float | None = None
    cv_ece_before: float | None = None
    cv_ece_after: float | None = None

    def summary(self) -> str:
        """One line for logs and the console."""
        line = (
            f"temperature {self.previous_temperature:.4g} → {self.temperature:.4g}; "
            f"ECE {self.ece_before:.4f} → {self.ece_after:.4f}; NLL {self.nll_before:.4f} → {self.nll_after:.4f} "
            f"({self.n} samples, {self.errors} misclassified)"
        )
        return line if self.fitted else f"{line}; kept: {self.note}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(logits / T)[label]`` computed in log space (exact where probabilities underflow)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(scaled)), labels]))


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be N x classes (at least 2 classes), got shape {logits.shape}")
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} rows of logits but {len(labels)} labels")
    if not len(labels):
        raise ValueError("temperature scaling needs at least one labelled sample")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must be class indices 0..{logits.shape[1] - 1}")
    if not np.isfinite(logits).all():
        raise ValueError("logits hold NaN or infinite values")
    return logits, labels


CV_REPEATS = 5  # repeated 2-fold cross-validation of the held-out check
CV_ECE_TOLERANCE = 0.005  # held-out ECE may rise this much (bin noise) and the temperature still count as helping


def _search(logits: np.ndarray, labels: np.ndarray, previous: float, bounds: tuple[float, float]) -> tuple[float, str]:
    """The NLL-optimal T on (logits, labels), or ``previous`` with the reason it cannot be fitted."""
    from scipy.optimize import minimize_scalar

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    errors = int((logits.argmax(axis=1) != labels).sum())
    if errors == 0:  # each sample's probability of its (correct) top class only grows as T falls
        return previous, (
            "no sample is misclassified, so the NLL keeps falling as T -> 0 and has no minimum; "
            "calibrate on more (or harder) validation data"
        )
    search = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(math.exp(search.x))
    if min(search.x - lo, hi - search.x) < 0.01 * (hi - lo):
        return previous, (
            f"the best temperature lies on the search bound ({temperature:.3g}), so the data cannot pin it down; "
            "calibrate on more (or harder) validation data"
        )
    if negative_log_likelihood(logits, labels, temperature) > negative_log_likelihood(logits, labels, previous) + 1e-9:
        return previous, f"the fitted temperature {temperature:.4g} does not lower the NLL"  # never worse
    return temperature, ""


def held_out_check(
    logits: np.ndarray,
    labels: np.ndarray,
    previous: float,
    *,
    repeats: int = CV_REPEATS,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """Does fitting a temperature help on data it was not fitted on? Repeated stratified 2-fold
    cross-validation: T is fitted on one half (kept at ``previous`` where the half cannot pin it down) and
    scored on the other. Returns the mean NLL and the ECE of the held-out halves with ``previous`` and with
    the fitted T: (nll_before, nll_after, ece_before, ece_after)."""
    rng = np.random.default_rng(seed)
    nll_b, nll_a, ece_b, ece_a = [], [], [], []
    for _ in range(repeats):
        halves = np.zeros(len(labels), dtype=bool)
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            halves[rng.permutation(members)[: len(members) // 2]] = True
        for fit_on in (halves, ~halves):
            score_on = ~fit_on
            if not fit_on.any() or not score_on.any():
                continue
            temperature, _ = _search(logits[fit_on], labels[fit_on], previous, bounds)
            held, truth = logits[score_on], labels[score_on]
            nll_b.append(negative_log_likelihood(held, truth, previous))
            nll_a.append(negative_log_likelihood(held, truth, temperature))
            ece_b.append(expected_calibration_error(softmax(held, previous), truth, ECE_BINS))
            ece_a.append(expected_calibration_error(softmax(held, temperature), truth, ECE_BINS))
    return float(np.mean(nll_b)), float(np.mean(nll_a)), float(np.mean(ece_b)), float(np.mean(ece_a))


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    previous: float = 1.0,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    check: bool = True,
) -> CalibrationResult:
    """The T that minimises the NLL of ``softmax(logits / T)`` on (``logits``, ``labels``), kept only where it
    helps on held-out data.

    A bounded 1-D search on log T (the NLL is convex in 1/T, so it has one minimum). ``previous`` is the
    model's current temperature, the "before" of the result. T is *kept* (``fitted=False``, ``note`` says
    why) when no sample is misclassified (the NLL then keeps falling as T → 0: the fit would only make the
    model over-confident) or the minimum lies on a bound; fit on more, or harder, data instead. With
    ``check`` (the default) it is also kept when a temperature fitted on half of the data does not help on
    the other half (:func:`held_out_check`: the held-out NLL does not fall, or the held-out ECE rises by more
    than :data:`CV_ECE_TOLERANCE`): a fit that only describes the fitting data's few mistakes would make
    the model's probabilities worse on new data (seen on pis: test ECE 0.093 -> 0.130).
    """
    logits, labels = _check(logits, labels)
    previous = check_temperature(previous)
    errors = int((logits.argmax(axis=1) != labels).sum())
    temperature, note = _search(logits, labels, previous, bounds)
    nll_before = negative_log_likelihood(logits, labels, previous)
    nll_after = negative_log_likelihood(logits, labels, temperature)
    cv: tuple[float, float, float, float] | tuple[None, None, None, None] = (None, None, None, None)
    if check and not note and len(labels) >= 4:
        cv = held_out_check(logits, labels, previous, bounds=bounds)
        cv_nll_b, cv_nll_a, cv_ece_b, cv_ece_a = cv
        if not (cv_nll_a < cv_nll_b and cv_ece_a <= cv_ece_b + CV_ECE_TOLERANCE):
            note = (
                f"a temperature fitted on half of the data does not help on the other half (held-out NLL "
                f"{cv_nll_b:.4f} -> {cv_nll_a:.4f}, ECE {cv_ece_b:.4f} -> {cv_ece_a:.4f}), so the fitted "
                f"{temperature:.4g} would likely make probabilities worse on new data"
            )
    if note:
        temperature, nll_after = previous, nll_before
    ece_before = expected_calibration_error(softmax(logits, previous), labels, ECE_BINS)
    ece_after = expected_calibration_error(softmax(logits, temperature), labels, ECE_BINS)
    return CalibrationResult(
        temperature=temperature,
        previous_temperature=previous,
        nll_before=nll_before,
        nll_after=nll_after,
        ece_before=ece_before,
        ece_after=ece_after,
        n=len(labels),
        errors=errors,
        fitted=not note,
        note=note,
        cv_nll_before=cv[0],
        cv_nll_after=cv[1],
        cv_ece_before=cv[2],
        cv_ece_after=cv[3],
    )


def calibrate_checkpoint(
    model_path: str | Path,
    samples: Sequence[Any],
    classes: Sequence[str],
    *,
    out: str | Path | None = None,
    workers: int = 2,
    backend: str = "auto",
    source: str = "",
    write_unfitted: bool = True,
) -> CalibrationResult:
    """Fit the temperature of the checkpoint at ``model_path`` on ``samples`` (a validation split's
    :class:`maskwatch.data.datasets.Sample` list, labels in ``classes`` order) and write the checkpoint with
    that temperature to ``out`` (default: ``model_path`` itself), atomically; everything else in the file
    (weights in their precision, config, metrics) stays as it was. The fit is recorded in the checkpoint's
    ``calibration`` entry (with ``source``, a description of the data). Unreadable images are skipped.
    When no temperature could be fitted (``result.fitted`` is False, T kept), the file is still written
    with that record unless ``write_unfitted`` is False (then nothing is written and ``result.model`` is None).

    Called at the end of a training run on its validation split, and by ``maskwatch calibrate``.
    Raises ``ValueError`` when the model's classes differ from ``classes`` or no sample could be read.
    """
    from maskwatch.checkpoint import atomic_torch_save, load_checkpoint
    from maskwatch.evaluate import evaluate_samples
    from maskwatch.runtime.base import load_classifier

    model_path = Path(model_path)
    checkpoint = load_checkpoint(model_path)  # fails early on a file that is not a checkpoint
    classifier = load_classifier(model_path, backend=backend)
    evaluation = evaluate_samples(classifier, samples, classes, workers=workers)
    for bad in evaluation.skipped:
        log.warning("calibration: skipped %s (%s)", bad.path, bad.reason)
    if evaluation.logits is None or not len(evaluation.labels):
        raise ValueError(f"none of the {len(samples)} calibration samples could be read")
    result = fit_temperature(evaluation.logits, evaluation.labels, previous=checkpoint["temperature"])
    if not result.fitted:
        log.warning("calibration of %s: %s", model_path, result.note)
        if not write_unfitted:
            return result
    target = Path(out) if out is not None else model_path
    checkpoint["temperature"] = result.temperature
    checkpoint["calibration"] = {
        **{k: v for k, v in result.to_dict().items() if k != "model"},
        "method": "temperature scaling (NLL)",
        "data": source,
        "created": now_iso(),
    }
    atomic_torch_save(checkpoint, target)
    log.debug("calibrated %s: %s", target, result.summary())  # the caller reports result.summary()
    return CalibrationResult(**{**result.to_dict(), "model": str(target)})
