"""The robustness protocol's measuring parts: bootstrap intervals, the paired comparison, the selection rule,
corrupted sets that are the same pixels for every model, near-duplicates across sources."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.data.corruptions import CLEAN, Condition
from maskwatch.robustness import (
    ConditionResult,
    FaceSet,
    average_hash,
    bootstrap_interval,
    compare,
    corrupted,
    evaluate_conditions,
    near_duplicates,
    paired_difference,
    passes,
)


def _results(predictions, labels, population="faces", condition="clean"):
    result = ConditionResult(population, condition, np.asarray(labels), np.asarray(predictions))
    return {population: {condition: result}}


def test_bootstrap_interval_covers_the_value_and_narrows_with_more_faces():
    rng = np.random.default_rng(0)
    small_labels = rng.integers(0, 2, 100)
    large_labels = rng.integers(0, 2, 2000)
    small = bootstrap_interval(small_labels, np.where(rng.uniform(size=100) < 0.9, small_labels, 1 - small_labels))
    large = bootstrap_interval(large_labels, np.where(rng.uniform(size=2000) < 0.9, large_labels, 1 - large_labels))
    for interval in (small, large):
        assert interval.low <= interval.value <= interval.high
    assert (large.high - large.low) < (small.high - small.low) / 2
    recall = bootstrap_interval(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), "with_mask_recall")
    assert recall.value == 0.5 and 0.0 <= recall.low <= recall.high <= 1.0
    from sklearn.metrics import f1_score

    labels, predictions = np.array([0, 0, 0, 1, 1, 0, 1]), np.array([0, 1, 0, 1, 0, 0, 1])
    f1 = bootstrap_interval(labels, predictions, "macro_f1")
    assert f1.value == pytest.approx(f1_score(labels, predictions, average="macro"))


def test_selection_rule_fails_only_beyond_noise():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    baseline = np.where(rng.uniform(size=600) < 0.95, labels, 1 - labels)
    same_but_noisy = baseline.copy()
    flip = rng.choice(600, 3, replace=False)  # three faces differ: chance
    same_but_noisy[flip] = 1 - same_but_noisy[flip]
    much_worse = np.where(rng.uniform(size=600) < 0.85, labels, 1 - labels)
    verdicts = compare(_results(same_but_noisy, labels), _results(baseline, labels), baseline_name="b")
    assert passes(verdicts) and {v.metric for v in verdicts} == {"accuracy", "with_mask_recall", "without_mask_recall"}
    worse = compare(_results(much_worse, labels), _results(baseline, labels), baseline_name="b")
    assert not passes(worse)
    failing = [v for v in worse if v.worse]
    assert failing and all(v.difference.high < 0 and v.p_worse < 0.05 for v in failing) and failing[0].baseline == "b"
    # a class recall that falls is caught even when accuracy holds (masked people called unmasked)
    swapped = baseline.copy()
    wearers = np.flatnonzero(labels == 0)[:40]
    swapped[wearers] = 1
    bare = np.flatnonzero((labels == 1) & (baseline == 0))
    swapped[bare] = 1
    recalls = ("with_mask_recall", "without_mask_recall", "balanced_accuracy")
    verdicts = {v.metric: v for v in compare(_results(swapped, labels), _results(baseline, labels), metrics=recalls)}
    assert verdicts["with_mask_recall"].worse and not verdicts["without_mask_recall"].worse
    assert verdicts["balanced_accuracy"].worse  # a real loss of recall shows in the gated metric too
    # a model that calls everything masked keeps with_mask recall; balanced accuracy sees through it
    biased = np.zeros_like(labels)
    verdicts = {v.metric: v for v in compare(_results(baseline, labels), _results(biased, labels), metrics=recalls)}
    assert verdicts["with_mask_recall"].difference.value < 0 and verdicts["balanced_accuracy"].better


def test_paired_difference_is_zero_for_the_same_predictions_and_refuses_other_faces():
    labels = np.array([0, 1] * 50)
    predictions = labels.copy()
    predictions[:7] = 1 - predictions[:7]
    difference, p_worse = paired_difference(labels, predictions, predictions)
    assert difference.value == difference.low == difference.high == 0 and p_worse == 1.0
    with pytest.raises(ValueError, match="same faces"):
        paired_difference(labels, predictions, predictions[:-1])
    with pytest.raises(ValueError, match="same faces"):
        compare(_results(predictions, labels), _results(predictions, labels[::-1]))


class _Gray:
    """A classifier that calls a face unmasked when its colour is gone (as a colour-reliant model would)."""

    classes = ("with_mask", "without_mask")
    compliant_classes = ("with_mask",)
    temperature = 1.0

    def logits(self, images):
        chroma = np.array([np.abs(im.astype(int) - im.mean(axis=2, keepdims=True)).mean() for im in images])
        return np.stack([chroma, np.full(len(images), 2.0)], axis=1)


def test_conditions_are_the_same_pixels_for_every_model_and_change_the_verdicts():
    rng = np.random.default_rng(0)
    images = [np.clip(rng.normal(128, 40, (40, 30, 3)), 0, 255).astype(np.uint8) for _ in range(20)]
    faces = FaceSet("toy", images, np.zeros(20, dtype=np.int64))
    noise = Condition("noise", 2)
    first, second = corrupted(faces, noise), corrupted(faces, noise)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], corrupted(faces, Condition("noise", 3))[0])
    results = evaluate_conditions(_Gray(), faces, [CLEAN, Condition("grayscale", 1)])
    assert results["clean"].metric("accuracy") == 1.0 and results["grayscale"].metric("accuracy") == 0.0
    assert results["grayscale"].summary()["n"] == 20


def test_near_duplicates_find_re_encoded_copies_only():
    import cv2

    rng = np.random.default_rng(0)

    def picture():  # smooth shapes, like a photo at 16 x 16
        return cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (96, 96), interpolation=cv2.INTER_CUBIC)

    pictures = [picture() for _ in range(5)]
    references = np.stack([average_hash(p) for p in pictures])
    _, encoded = cv2.imencode(".jpg", cv2.resize(pictures[2], (50, 50)), [cv2.IMWRITE_JPEG_QUALITY, 40])
    copy = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    other = picture()
    found = near_duplicates(np.stack([average_hash(copy), average_hash(other)]), references)
    assert found.tolist() == [True, False]


def test_the_looser_corrected_reading_is_reported_beside_the_rule():
    """Chance alone makes one comparison in forty look worse: over 210 comparisons of two models that differ by
    chance the rule (each comparison's interval) flags some, the corrected reading (Benjamini-Hochberg) none;
    a real drop is flagged by both."""
    from maskwatch.robustness import benjamini_hochberg

    assert benjamini_hochberg([0.001, 0.04, 0.5]).tolist() == [True, False, False]
    assert benjamini_hochberg([0.01, 0.02, 0.03]).tolist() == [True, True, True]  # step-up: all pass together
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    candidate, baseline = {}, {}
    for i in range(70):  # 70 conditions x 3 metrics, both models right 95 % of the time, independently
        a = np.where(rng.uniform(size=300) < 0.95, labels, 1 - labels)
        b = np.where(rng.uniform(size=300) < 0.95, labels, 1 - labels)
        candidate[f"c{i}"] = ConditionResult("faces", f"c{i}", labels, a)
        baseline[f"c{i}"] = ConditionResult("faces", f"c{i}", labels, b)
    verdicts = compare({"faces": candidate}, {"faces": baseline}, rounds=2000)
    assert not passes(verdicts) and passes(verdicts, corrected=True)
    candidate["c0"] = ConditionResult("faces", "c0", labels, np.where(rng.uniform(size=300) < 0.80, labels, 1 - labels))
    verdicts = compare({"faces": candidate}, {"faces": baseline}, rounds=2000)
    assert not passes(verdicts, corrected=True) and {v.condition for v in verdicts if v.fdr_worse} == {"c0"}


def _seeded_recipe(rng, labels, conditions, accuracy, seed_spread):
    """One recipe trained with three seeds: per seed and condition the model's accuracy moves by the seed's luck
    (``seed_spread``), and its faces are right or wrong independently at that accuracy."""
    models = []
    for _ in range(3):
        per_condition = {}
        for c in conditions:
            p = np.clip(accuracy.get(c, accuracy["*"]) + rng.normal(0, seed_spread), 0.5, 0.99)
            predictions = np.where(rng.uniform(size=len(labels)) < p, labels, 1 - labels)
            per_condition[c] = ConditionResult("faces", c, labels, predictions)
        models.append({"faces": per_condition})
    return models


def test_the_seed_aware_rule_sees_training_noise_that_the_faces_bootstrap_does_not():
    """Two recipes alike but for their seeds' luck: the single-model rule calls one seed of one worse than one seed
    of the other; the seed-aware rule (three seeds each, simultaneous intervals) does not, and still flags a
    condition where every seed of the candidate is far worse (with three seeds only a large drop is seen)."""
    from maskwatch.robustness import compare_recipes

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 400)
    conditions = [f"c{i}" for i in range(20)]
    candidate = _seeded_recipe(rng, labels, conditions, {"*": 0.88}, seed_spread=0.04)
    baseline = _seeded_recipe(rng, labels, conditions, {"*": 0.88}, seed_spread=0.04)
    assert not passes(compare(candidate[0], baseline[0], rounds=2000))  # seed luck looks like a regression
    verdicts = compare_recipes(candidate, baseline, baseline_name="b", rounds=2000)
    assert len(verdicts) == 20 * 3 and passes(verdicts)
    v = verdicts[0]
    assert v.baseline == "b" and len(v.candidate_seeds) == len(v.baseline_seeds) == 3
    assert v.difference.value == pytest.approx(np.mean(v.candidate_seeds) - np.mean(v.baseline_seeds))
    # the simultaneous interval is wider than the comparison's own one
    assert v.difference.low <= v.pointwise.low and v.pointwise.high <= v.difference.high
    worse = _seeded_recipe(rng, labels, conditions, {"*": 0.88, "c3": 0.62}, seed_spread=0.04)
    verdicts = compare_recipes(worse, baseline, rounds=2000)
    assert not passes(verdicts)
    assert {v.condition for v in verdicts if v.worse} == {"c3"}


def test_the_seed_aware_rule_needs_paired_seeds():
    from maskwatch.robustness import compare_recipes

    labels = np.array([0, 1] * 20)
    one = _results(labels, labels)
    with pytest.raises(ValueError, match="same seed numbers"):
        compare_recipes([one, one], [one, one, one])
    with pytest.raises(ValueError, match="two or more"):
        compare_recipes([one], [one])
    other_faces = _results(labels, labels[::-1])
    with pytest.raises(ValueError, match="same faces"):
        compare_recipes([one, one], [one, other_faces])
