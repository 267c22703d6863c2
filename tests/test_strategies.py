"""Uncertainty and random strategies on hand-made probability arrays."""

from __future__ import annotations

import numpy as np
import pytest

from al_sim.strategies.base import ArrayModelView, QueryContext, Selection, top_k
from al_sim.strategies.random import RandomSampling
from al_sim.strategies.uncertainty import (
    Entropy,
    LeastConfidence,
    Margin,
    entropy_score,
    least_confidence_score,
    margin_score,
)
from tests.conftest import query_context


def context(probs: np.ndarray, labeled: list[int], seed: int = 0) -> QueryContext:
    # probabilities only: asking an uncertainty strategy's view for features or MC samples raises
    return query_context(ArrayModelView(probs=probs), len(probs), labeled, seed, probs.shape[1])


PROBS = np.array([
    [0.90, 0.05, 0.05],  # 0 confident
    [0.40, 0.35, 0.25],  # 1 low max, smallish margin, high entropy
    [0.50, 0.48, 0.02],  # 2 tiny margin, lower entropy
    [0.34, 0.33, 0.33],  # 3 most uncertain on every measure
    [0.60, 0.20, 0.20],  # 4
    [0.34, 0.33, 0.33],  # 5 tie with 3
])


def test_scores_match_their_definitions() -> None:
    np.testing.assert_allclose(least_confidence_score(PROBS)[:3], [0.10, 0.60, 0.50])
    np.testing.assert_allclose(margin_score(PROBS)[:3], [1 - 0.85, 1 - 0.05, 1 - 0.02])
    expected = -(0.4 * np.log(0.4) + 0.35 * np.log(0.35) + 0.25 * np.log(0.25))
    assert entropy_score(PROBS)[1] == pytest.approx(expected)
    assert entropy_score(np.array([[1.0, 0.0]]))[0] == 0.0  # 0 log 0 = 0, no NaN


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (LeastConfidence(), [3, 5, 1, 2]),
        (Margin(), [3, 5, 2, 1]),
        (Entropy(), [3, 5, 1, 4]),
    ],
)
def test_uncertainty_picks_exact_indices_with_ties_to_lower_index(strategy, expected) -> None:
    sel = strategy.select(context(PROBS, labeled=[]), k=4)
    assert sel.indices.tolist() == expected


def test_labelled_images_are_never_picked() -> None:
    sel = Entropy().select(context(PROBS, labeled=[3, 1]), k=3)
    assert sel.indices.tolist() == [5, 4, 2]
    np.testing.assert_allclose(sel.scores, entropy_score(PROBS[[5, 4, 2]]))


def test_ties_are_broken_by_the_seeded_generator() -> None:
    flat = np.full((6, 2), 0.5)
    first = Margin().select(context(flat, labeled=[0]), k=3).indices.tolist()
    assert first == Margin().select(context(flat, labeled=[0]), k=3).indices.tolist()
    assert len(set(first)) == 3 and 0 not in first
    assert top_k(np.array([1.0, 2.0, 2.0, 0.5]), 2).tolist() == [1, 2]  # no tie at the cut


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([0.1, np.nan]), 1)


def test_random_is_seeded_and_draws_only_unlabelled() -> None:
    probs = np.full((50, 2), 0.5)
    a = RandomSampling().select(context(probs, labeled=list(range(10)), seed=7), k=15)
    b = RandomSampling().select(context(probs, labeled=list(range(10)), seed=7), k=15)
    c = RandomSampling().select(context(probs, labeled=list(range(10)), seed=8), k=15)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.tolist() != c.indices.tolist()
    assert len(set(a.indices.tolist())) == 15 and a.indices.min() >= 10
    assert np.isnan(a.scores).all()


def test_selection_requires_one_score_per_index() -> None:
    with pytest.raises(ValueError):
        Selection(np.array([1, 2]), np.array([0.5]))
