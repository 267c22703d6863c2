"""Strategies on multi-label (sigmoid) outputs: per-finding scores, reductions, CVIRS, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from al_sim.app.components import check_strategy_task
from al_sim.data.synthetic_chest import load_synthetic_chest
from al_sim.maths.task import Task
from al_sim.runtime.errors import ConfigError
from al_sim.strategies.base import ArrayModelView, QueryContext, Strategy
from al_sim.strategies.bayesian import BALD, bald_score
from al_sim.strategies.cvirs import CVIRS
from al_sim.strategies.diversity import BADGE, sigmoid_gradient_factors
from al_sim.strategies.multilabel import (
    entropy_distance,
    finding_mc_scores,
    finding_scores,
    margin_ranking,
)
from al_sim.strategies.random import RandomSampling
from al_sim.strategies.stochastic import PowerEntropy
from al_sim.strategies.uncertainty import (
    Entropy,
    LeastConfidence,
    Margin,
    entropy_score,
    least_confidence_score,
    margin_score,
)

ML = Task.of("multilabel", ["a", "b", "c"])
RNG = np.random.default_rng(0)
PROBS = RNG.random((40, 3))
MC = RNG.random((40, 5, 3))
LABELED_Y = (RNG.random((15, 3)) < 0.4).astype(np.int64)


def _ctx(probs=PROBS, mc=MC, features=None, seed=0) -> QueryContext:
    n = len(probs)
    view = ArrayModelView(probs=probs, mc=mc, features=features, multilabel=True)
    return QueryContext(model=view, unlabeled=np.arange(n), labeled=np.arange(n, n + 15),
                        labeled_y=LABELED_Y, n_classes=3, rng=np.random.default_rng(seed),
                        task=ML)


def test_per_finding_scores_treat_each_finding_as_two_classes() -> None:
    p = np.array([[0.5, 0.9, 0.0]])
    assert finding_scores(entropy_score, p)[0] == pytest.approx(
        [np.log(2), -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)), 0.0])
    assert finding_scores(least_confidence_score, p)[0] == pytest.approx([0.5, 0.1, 0.0])
    assert finding_scores(margin_score, p)[0] == pytest.approx([1.0, 0.2, 0.0])


@pytest.mark.parametrize("cls", [Entropy, Margin, LeastConfidence])
def test_reduction_mean_and_max_rank_differently(cls) -> None:
    # image 0: one finding at 0.5; image 1: all three mildly uncertain
    probs = np.array([[0.5, 0.0, 0.0], [0.8, 0.8, 0.8], [0.0, 1.0, 0.0]])
    by_mean = cls(reduction="mean").select(_ctx(probs, None), 1).indices
    by_max = cls(reduction="max").select(_ctx(probs, None), 1).indices
    assert (by_mean.tolist(), by_max.tolist()) == ([1], [0])


def test_unknown_reduction_is_refused() -> None:
    with pytest.raises(ConfigError, match="mean, max"):
        Entropy(reduction="median")


def test_bald_per_finding_matches_two_class_bald() -> None:
    scores = finding_mc_scores(bald_score, MC)
    two_class = np.stack([1 - MC[:, :, 1], MC[:, :, 1]], axis=-1)
    assert scores[:, 1] == pytest.approx(bald_score(two_class))
    picked = BALD(mc_samples=5, reduction="max").select(_ctx(), 4)
    assert picked.scores == pytest.approx(np.sort(scores.max(axis=1))[::-1][:4])


def test_power_sampling_draws_from_the_reduced_score() -> None:
    picked = PowerEntropy(beta=1.0).select(_ctx(), 5)
    assert picked.scores == pytest.approx(
        finding_scores(entropy_score, PROBS)[picked.indices].mean(axis=1))


def test_badge_sigmoid_factors_are_the_bce_gradient() -> None:
    p = np.array([[0.2, 0.7]])
    a, _ = sigmoid_gradient_factors(np.ones((1, 4)), p)
    assert a[0] == pytest.approx([0.2, -0.3])  # p - [p >= 0.5]
    picked = BADGE(chunk_size=16).select(_ctx(features=RNG.random((40, 6))), 6)
    assert len(set(picked.indices.tolist())) == 6


def test_margin_ranking_puts_the_most_uncertain_first() -> None:
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.99]])
    ranking = margin_ranking(p)
    assert ranking[0] == pytest.approx(1.0) and ranking[1] < ranking[0]
    assert ranking[2] == pytest.approx(((3 - 2) + (3 - 3)) / (2 * 2))


def test_entropy_distance_is_zero_for_equal_and_one_for_opposite_vectors() -> None:
    v = np.array([[1, 0, 1, 0]])
    d = entropy_distance(np.vstack([v, 1 - v, [[1, 0, 0, 0]]]), v)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6) and d[1, 0] == 1.0
    assert 0.0 < d[2, 0] < 1.0


def test_cvirs_prefers_uncertain_images_unlike_the_labelled_sets() -> None:
    probs = np.array([[0.5, 0.5, 0.5], [0.01, 0.02, 0.03], [0.45, 0.55, 0.5]])
    ctx = _ctx(probs, None)
    ctx.labeled_y = np.zeros((5, 3), dtype=np.int64)
    picked = CVIRS(threshold=0.5, chunk_size=2).select(ctx, 2)
    assert sorted(picked.indices.tolist()) == [0, 2]  # the confident all-negative image last


def test_single_label_only_strategies_are_refused_naming_the_alternatives() -> None:
    chest = load_synthetic_chest(n_pool=30, n_test=20)

    class OnlySoftmax(Strategy):
        name = "mine"

        def select(self, ctx, k):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(ConfigError, match="mine .* multi-label; use one of random, .*cvirs"):
        check_strategy_task(OnlySoftmax(), chest)
    check_strategy_task(RandomSampling(), chest)


def test_cvirs_is_refused_on_single_label_data(tiny_dataset) -> None:
    with pytest.raises(ConfigError, match="cvirs needs multi-label data"):
        check_strategy_task(CVIRS(threshold=0.5, chunk_size=8), tiny_dataset)


class _Clf:
    """A small-text classifier stand-in returning fixed probabilities."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, _data) -> np.ndarray:
        return self.proba


def test_per_finding_scores_agree_with_small_text() -> None:
    pytest.importorskip("small_text")
    from small_text.query_strategies.bayesian import _bald
    from small_text.query_strategies.strategies import (
        BreakingTies,
        PredictionEntropy,
    )
    from small_text.query_strategies.strategies import (
        LeastConfidence as StLeastConfidence,
    )

    for f in range(3):
        two = np.stack([1 - PROBS[:, f], PROBS[:, f]], axis=1)
        clf = _Clf(two)
        assert finding_scores(entropy_score, PROBS)[:, f] == pytest.approx(
            PredictionEntropy().get_confidence(clf, None, None, None, None))
        assert finding_scores(least_confidence_score, PROBS)[:, f] == pytest.approx(
            1 - StLeastConfidence().get_confidence(clf, None, None, None, None))
        assert finding_scores(margin_score, PROBS)[:, f] == pytest.approx(
            1 - BreakingTies().get_confidence(clf, None, None, None, None))
        mc_two = np.stack([1 - MC[:, :, f], MC[:, :, f]], axis=-1)  # small-text: N x T x C
        assert finding_mc_scores(bald_score, MC)[:, f] == pytest.approx(  # nats vs bits
            _bald(mc_two) * np.log(2), abs=1e-6)


def test_cvirs_inconsistency_agrees_with_small_text_where_small_text_follows_the_paper() -> None:
    """small-text returns the Hamming distance beside the entropy distance it computes; both
    are 1 for opposite vectors and 0 for equal ones, so there they must agree."""
    pytest.importorskip("small_text")
    from scipy.sparse import csr_matrix
    from small_text.query_strategies.multi_label import CategoryVectorInconsistencyAndRanking

    st = CategoryVectorInconsistencyAndRanking(pbar=None)
    labeled = np.array([[1, 0, 1, 0]])
    pred = np.vstack([labeled, 1 - labeled])
    theirs = st._compute_vector_inconsistency(csr_matrix(labeled), pred, 4)
    ours = entropy_distance(pred, labeled).mean(axis=1)
    # small-text divides the summed distances by the batch's row count, not the labelled count
    assert ours * len(labeled) / len(pred) == pytest.approx(theirs, abs=1e-6)
