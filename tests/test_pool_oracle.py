"""Labelled-set bookkeeping and the simulated annotator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from al_sim.core.oracle import Oracle
from al_sim.core.pool import LabelPool


def test_add_moves_images_from_unlabelled_to_labelled() -> None:
    pool = LabelPool(10)
    pool.add(np.array([3, 1]), np.array([2, 0]), round_=0)
    assert pool.labeled_indices().tolist() == [1, 3]
    assert pool.unlabeled_indices().tolist() == [0, 2, 4, 5, 6, 7, 8, 9]
    assert pool.labels_of(np.array([3, 1])).tolist() == [2, 0]
    assert pool.round_of(np.array([1, 0])).tolist() == [0, -1]
    assert pool.n_labeled == 2 and pool.n_unlabeled == 8


@pytest.mark.parametrize(
    ("indices", "error"),
    [([1, 1], ValueError), ([10], IndexError), ([-1], IndexError), ([2], ValueError)],
)
def test_duplicates_repeats_and_out_of_range_are_refused(indices, error) -> None:
    pool = LabelPool(10)
    pool.add(np.array([2]), np.array([0]), round_=0)
    with pytest.raises(error):
        pool.add(np.array(indices), np.zeros(len(indices), int), round_=1)
    assert pool.n_labeled == 1  # a refused add changes nothing


def test_state_round_trip() -> None:
    pool = LabelPool(5)
    pool.add(np.array([4, 0]), np.array([1, 1]), round_=2)
    again = LabelPool.from_state(pool.state())
    assert again.labeled_indices().tolist() == [0, 4]
    assert again.round_of(np.array([4])).tolist() == [2]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 200), data=st.data())
def test_no_index_is_lost_or_labelled_twice(size: int, data: st.DataObject) -> None:
    pool = LabelPool(size)
    rng = np.random.default_rng(data.draw(st.integers(0, 10_000)))
    seen: set[int] = set()
    round_ = 0
    while pool.n_unlabeled:
        k = data.draw(st.integers(1, pool.n_unlabeled))
        pick = rng.choice(pool.unlabeled_indices(), size=k, replace=False)
        pool.add(pick, np.zeros(k, int), round_)
        assert not seen & set(pick.tolist())
        seen |= set(pick.tolist())
        assert pool.n_labeled + pool.n_unlabeled == size
        round_ += 1
    assert seen == set(range(size))


def test_exact_oracle_returns_truth_and_counts_cost() -> None:
    truth = np.array([0, 1, 2, 1])
    oracle = Oracle(truth, n_classes=3)
    assert oracle.query(np.array([2, 0])).tolist() == [2, 0]
    assert oracle.query(np.array([1])).tolist() == [1]
    assert oracle.n_annotated == 3


def test_noisy_oracle_flips_about_its_rate_to_other_classes() -> None:
    truth = np.zeros(20_000, dtype=int)
    oracle = Oracle(truth, n_classes=3, noise_rate=0.2, seed=1)
    answers = oracle.query(np.arange(len(truth)))
    assert 0.18 < (answers != 0).mean() < 0.22
    assert set(np.unique(answers)) == {0, 1, 2}
    again = Oracle(truth, n_classes=3, noise_rate=0.2, seed=1).query(np.arange(len(truth)))
    assert (answers == again).all()
