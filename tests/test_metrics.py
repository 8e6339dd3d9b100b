"""maskwatch.metrics follows scikit-learn's definitions, on ordinary data and on the edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from maskwatch.metrics import accuracy_and_macro_f1, classification_report, confusion, per_class_scores, roc_auc

CASES = {
    # name: (labels, predictions, n_classes)
    "ordinary": ([0, 1, 2, 2, 1, 0, 0, 2], [0, 2, 2, 2, 1, 0, 1, 2], 3),
    "predicted class absent from labels": ([0, 0, 1, 1], [0, 2, 1, 1], 3),
    "true class never predicted": ([0, 1, 2, 2], [0, 1, 1, 1], 3),
    "class neither true nor predicted": ([0, 1, 1, 0], [0, 1, 0, 0], 3),
    "single class, all right": ([1, 1, 1], [1, 1, 1], 2),
    "single class, some wrong": ([0, 0, 0, 0], [0, 1, 0, 1], 2),
    "one sample": ([1], [0], 2),
}


def _sklearn(labels, predictions, n):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(
            labels, predictions, labels=list(range(n)), average=None, zero_division=0
        )
        _, _, macro, _ = precision_recall_fscore_support(
            labels, predictions, labels=list(range(n)), average="macro", zero_division=0
        )
    return p, r, f, s, macro


@pytest.mark.parametrize("name", list(CASES))
def test_scores_match_scikit_learn(name):
    labels, predictions, n = CASES[name]
    matrix = confusion(np.array(labels), np.array(predictions), n)
    np.testing.assert_array_equal(matrix, confusion_matrix(labels, predictions, labels=list(range(n))))
    ours = per_class_scores(matrix)
    p, r, f, s, macro = _sklearn(labels, predictions, n)
    for mine, theirs in zip(ours, (p, r, f, s)):
        np.testing.assert_allclose(mine, theirs, atol=1e-12)
    accuracy, macro_f1 = accuracy_and_macro_f1(np.array(labels), np.array(predictions), n)
    assert macro_f1 == pytest.approx(macro, abs=1e-12)
    assert accuracy == pytest.approx(np.mean(np.array(labels) == np.array(predictions)))


def test_absent_predicted_class_counts_in_macro_f1():
    # the review's case: a hand-written mean over present classes gave 0.833, scikit-learn 0.556
    labels, predictions = [0, 0, 1, 1], [0, 2, 1, 1]
    _, macro_f1 = accuracy_and_macro_f1(np.array(labels), np.array(predictions), 3)
    assert macro_f1 == pytest.approx(_sklearn(labels, predictions, 3)[4])
    assert macro_f1 == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_empty_input():
    matrix = confusion(np.zeros(0), np.zeros(0), 2)
    np.testing.assert_array_equal(matrix, np.zeros((2, 2)))
    assert accuracy_and_macro_f1(np.zeros(0), np.zeros(0), 2) == (0.0, 0.0)
    report = classification_report(np.zeros((0, 2)), np.zeros(0), ["a", "b"])
    assert report["n_images"] == 0 and report["macro_f1"] == 0.0 and report["roc_auc"] is None


def test_out_of_range_labels_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion(np.array([0, 3]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="labels but"):
        confusion(np.array([0, 1]), np.array([0]), 2)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_undefined_for_one_class():
    assert roc_auc(np.ones(4), np.linspace(0, 1, 4)) is None
    assert roc_auc(np.zeros(0), np.zeros(0)) is None


def test_report_figures_match_scikit_learn():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(3), size=40)
    labels = rng.integers(0, 3, 40)
    report = classification_report(probabilities, labels, ["a", "b", "c"])
    _, _, f, _, macro = _sklearn(labels, probabilities.argmax(1), 3)
    assert report["macro_f1"] == pytest.approx(macro)
    assert [report["per_class"][c]["f1"] for c in "abc"] == pytest.approx(list(f))
    assert "roc_auc" not in report


def test_macro_f1_over_present_classes_when_a_class_has_no_sample():
    """A 3-class model on a 2-class test set: macro F1 counts the absent class as 0; macro_f1_present not."""
    from maskwatch.metrics import classification_report

    labels = np.array([1, 1, 2, 2])
    probabilities = np.array([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.1, 0.3]])
    report = classification_report(probabilities, labels, ["incorrect", "with", "without"])
    f1 = [report["per_class"][c]["f1"] for c in ("incorrect", "with", "without")]
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert report["macro_f1_present"] == pytest.approx((f1[1] + f1[2]) / 2)
    full = classification_report(probabilities, np.array([0, 1, 2, 2]), ["incorrect", "with", "without"])
    assert "macro_f1_present" not in full
