"""Per-round metrics and AULC on known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from al_sim.maths.aulc import aulc
from al_sim.maths.metrics import classification_metrics


def test_binary_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    m = classification_metrics(y, probs)
    assert m["accuracy"] == 0.5
    assert m["balanced_accuracy"] == 0.5
    assert m["auroc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    expected_loss = -np.mean(np.log([0.9, 0.4, 0.8, 0.3]))
    assert m["loss"] == pytest.approx(expected_loss)


def test_multiclass_macro_f1_and_ovr_auroc() -> None:
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.35, 0.05]])
    m = classification_metrics(y, probs)
    assert m["accuracy"] == 0.75
    # per-class F1: 0 -> 2/3, 1 -> 1, 2 -> 2/3
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    # one-vs-rest AUROC: classes 0 and 1 rank their positive first (1.0); class 2's positives
    # score 0.8 and 0.05 against negatives 0.1, 0.1: 2 of 4 pairs ordered (0.5)
    assert m["auroc"] == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    assert m["auroc"] == roc_auc_score(y, probs, multi_class="ovr", average="macro")


def test_multiclass_auroc_ignores_classes_absent_from_the_test_labels() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3], [0.45, 0.45, 0.1]])
    sub = probs[:, :2] / probs[:, :2].sum(axis=1, keepdims=True)
    assert classification_metrics(y, probs)["auroc"] == pytest.approx(
        roc_auc_score(y, sub[:, 1]))


def test_single_class_test_set_gives_nan_auroc_not_a_crash() -> None:
    m = classification_metrics(np.array([1, 1]), np.array([[0.3, 0.7], [0.6, 0.4]]))
    assert math.isnan(m["auroc"]) and m["accuracy"] == 0.5


def test_aulc_is_normalised_area() -> None:
    assert aulc(np.array([100, 200, 300]), np.array([0.5, 0.7, 0.7])) == pytest.approx(
        (0.6 * 100 + 0.7 * 100) / 200)
    assert aulc(np.array([10, 20]), np.ones(2)) == 1.0
    assert aulc(np.array([50]), np.array([0.8])) == 0.8
    with pytest.raises(ValueError):
        aulc(np.array([1, 2]), np.array([0.5]))
