"""Aggregation (majority vote, Dawid-Skene) and agreement (kappas, alpha) on answer arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from al_sim.maths.aggregation import (
    MISSING,
    aggregate,
    dawid_skene,
    majority_vote,
    vote_counts,
)
from al_sim.maths.agreement import (
    ALPHA,
    COHEN,
    FLEISS,
    agreement,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
)


def adversarial_panel(n: int = 400, n_classes: int = 2, seed: int = 0):
    """Three annotators: good (95 %), mediocre (70 %), adversarial (always the next class)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n)

    def noisy(accuracy: float) -> np.ndarray:
        wrong = (truth + rng.integers(1, n_classes, n)) % n_classes
        return np.where(rng.random(n) < accuracy, truth, wrong)

    adversary = (truth + 1) % n_classes
    return truth, np.stack([noisy(0.95), noisy(0.70), adversary], axis=1)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_dawid_skene_recovers_the_truth_where_majority_vote_does_not(n_classes):
    truth, answers = adversarial_panel(n_classes=n_classes)
    mv = majority_vote(answers, n_classes)
    ds = dawid_skene(answers, n_classes)
    assert (ds.labels == truth).mean() >= 0.99
    assert (mv.labels == truth).mean() < 0.85  # the adversary outvotes the truth often


def test_majority_vote_flags_ties_and_breaks_them_by_annotator_order():
    answers = np.array([[0, 1],          # tie: first annotator wins -> 0
                        [1, 0],          # tie -> 1 (not the lowest class)
                        [2, 2],          # agreement
                        [MISSING, 1]])   # one answer
    out = majority_vote(answers, 3)
    assert out.labels.tolist() == [0, 1, 2, 1]
    assert out.flagged.tolist() == [True, True, False, False]
    four = majority_vote(np.array([[2, 0, 0, 2], [1, 1, 1, 0]]), 3)
    assert four.labels.tolist() == [2, 1] and four.flagged.tolist() == [True, False]


def test_low_agreement_images_are_flagged_below_a_share():
    answers = np.array([[0, 0, 1], [1, 1, 1], [2, 0, 1]])
    assert majority_vote(answers, 3).flagged.tolist() == [False, False, True]
    low = majority_vote(answers, 3, flag_below=0.75)
    assert low.flagged.tolist() == [True, False, True] and low.labels.tolist() == [0, 1, 2]
    truth, panel = adversarial_panel()
    ds = dawid_skene(panel, 2, flag_below=0.999999)
    assert ds.flagged.any() and not dawid_skene(panel, 2).flagged.any()
    assert aggregate("majority", answers, 3, 0.75).flagged.tolist() == low.flagged.tolist()


def test_vote_counts_skip_missing_answers():
    counts = vote_counts(np.array([[0, MISSING, 1], [2, 2, MISSING]]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 0, 2]]


@pytest.mark.parametrize("answers, message", [
    (np.array([0, 1]), "n_images x n_annotators"),
    (np.array([[0, 3]]), "class indices"),
    (np.array([[MISSING, MISSING]]), "at least one answer"),
    (np.array([[0.0, 1.0]]), "integer"),
])
def test_bad_answer_arrays_are_refused(answers, message):
    with pytest.raises(ValueError, match=message):
        majority_vote(answers, 3)


def test_aggregate_dispatches_and_refuses_unknown_methods():
    answers = np.array([[0, 0, 1], [1, 1, 0]])
    assert aggregate("majority", answers, 2).labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="majority, dawid_skene"):
        aggregate("mode", answers, 2)


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: 20 both yes, 5 A-yes/B-no, 10 A-no/B-yes, 15 both no -> kappa 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert cohen_kappa(a, b, 2) == pytest.approx(0.4)


def test_fleiss_kappa_matches_fleiss_1971_example():
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
                      [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
                      [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    answers = np.array([np.repeat(np.arange(5), row) for row in table])
    assert fleiss_kappa(answers, 5) == pytest.approx(0.210, abs=1e-3)


def test_krippendorff_alpha_matches_krippendorff_2011_nominal_example():
    m = MISSING
    coders = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, m, m, m],
                       [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, m, 3],
                       [m, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, m],
                       [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, m]])
    answers = np.where(coders == m, m, coders - 1).T  # units x coders, classes 0..4
    assert krippendorff_alpha(answers, 5) == pytest.approx(0.743, abs=1e-3)


def test_agreement_picks_the_statistics_by_panel_size_and_is_nan_when_undefined():
    assert agreement(np.array([[0], [1]]), 2) == {}
    two = agreement(np.array([[0, 0], [1, 1], [0, 1]]), 2)
    assert set(two) == {COHEN, ALPHA}
    three = agreement(np.array([[0, 0, 0], [1, 1, 1], [0, 1, 1]]), 2)
    assert set(three) == {FLEISS, ALPHA} and three[FLEISS] > 0
    same = agreement(np.zeros((5, 3), dtype=int), 2)
    assert all(math.isnan(v) for v in same.values())
    perfect = agreement(np.array([[0, 0, 0], [1, 1, 1], [1, 1, 1]]), 2)
    assert perfect[FLEISS] == pytest.approx(1.0) and perfect[ALPHA] == pytest.approx(1.0)


# --------------------------------------------------------------------------- annotation logs
def test_individual_answers_become_a_matrix_and_bad_ones_one_error_each():
    from al_sim.maths.annotation_log import answer_matrix
    from al_sim.runtime.errors import LabelError

    order, roster = ["a.png", "b.png"], ["ann", "bob"]
    matrix = answer_matrix(["a.png", "b.png", "a.png"], ["ann", "ann", "bob"], [1, 0, 0],
                           order, roster)
    assert matrix.tolist() == [[1, 0], [0, MISSING]]
    with pytest.raises(LabelError, match="unknown annotator 'eve'"):
        answer_matrix(["a.png"], ["eve"], [1], order, roster)
    with pytest.raises(LabelError, match="ann answered 'a.png' twice"):
        answer_matrix(["a.png", "a.png"], ["ann", "ann"], [1, 0], order, roster)
    with pytest.raises(LabelError, match="'c.png', which is not in the batch"):
        answer_matrix(["c.png"], ["ann"], [1], order, roster)


def test_adjudication_applies_to_flagged_images_only():
    from al_sim.maths.annotation_log import adjudicate
    from al_sim.runtime.errors import LabelError

    order = ["a.png", "b.png", "c.png"]
    votes = majority_vote(np.array([[0, 1], [1, 1], [2, 0]]), 3)
    assert votes.flagged.tolist() == [True, False, True]
    assert adjudicate(votes.labels, votes.flagged, order, {"a.png": 1}).tolist() == [1, 1, 2]
    with pytest.raises(LabelError, match=r"'b.png', which was not flagged .*a.png, c.png"):
        adjudicate(votes.labels, votes.flagged, order, {"b.png": 0})


def test_seconds_per_answer_count_time_on_the_image_with_idle_gaps_capped():
    from datetime import datetime, timedelta

    from al_sim.maths.annotation_log import seconds_per_answer

    t0 = datetime(2026, 12, 1, 9, 0, 0)
    at = [t0, t0 + timedelta(seconds=20), t0 + timedelta(seconds=50),
          t0 + timedelta(hours=15),  # the next morning: capped
          t0 + timedelta(seconds=5)]  # another annotator, interleaved, a single answer
    who = ["ann", "ann", "ann", "ann", "bob"]
    seconds = seconds_per_answer(who, at, idle_cap_s=120.0)
    assert seconds.tolist() == [30.0, 20.0, 30.0, 120.0, 120.0]  # ann's first: her median
    with pytest.raises(ValueError, match="idle_cap_s"):
        seconds_per_answer(who, at, idle_cap_s=0)
