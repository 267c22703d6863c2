"""Single-label strategies held against a peer library's (small-text 1.4; scikit-activeml 1.0
for TypiClust): the same scores and the same picks on random arrays, so a definition we got
wrong cannot hide.

The multi-label scores are held against small-text per finding in
tests/test_multilabel_strategies.py; here the classes are many (C = 7), the case two-class
findings cannot show.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from al_sim.strategies.base import ArrayModelView
from al_sim.strategies.bayesian import BALD, bald_score
from al_sim.strategies.diversity import CoreSet, k_center_greedy
from al_sim.strategies.uncertainty import (
    Entropy,
    LeastConfidence,
    Margin,
    entropy_score,
    least_confidence_score,
    margin_score,
)
from tests.conftest import query_context

N, C, T = 300, 7, 12
RNG = np.random.default_rng(11)
PROBS = RNG.dirichlet(np.full(C, 0.6), size=N)
MC = RNG.dirichlet(np.full(C, 0.4), size=(N, T))  # N x T x C, small-text's layout and ours
LABELED = RNG.choice(N, size=40, replace=False)
UNLABELED = np.setdiff1d(np.arange(N), LABELED)


class _Clf:
    """A small-text classifier that answers with fixed probabilities (or MC samples)."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = proba

    def predict_proba(self, _data: object, dropout_sampling: int = 1) -> np.ndarray:
        return self.proba


@pytest.fixture(scope="module")
def small_text() -> SimpleNamespace:
    """small-text's strategies, imported where these tests run (2 s: it loads transformers)."""
    pytest.importorskip("small_text")
    from small_text.query_strategies import bayesian, coresets, strategies

    return SimpleNamespace(bald=bayesian._bald, greedy_coreset=coresets.greedy_coreset,
                           strategies=strategies)


# ours, our score, small-text's class of the same strategy, its confidence as our score
PEERS = [(Entropy(), entropy_score, "PredictionEntropy", lambda conf: conf),
         (LeastConfidence(), least_confidence_score, "LeastConfidence", lambda conf: 1 - conf),
         (Margin(), margin_score, "BreakingTies", lambda conf: 1 - conf)]


@pytest.mark.parametrize(("ours", "score", "theirs", "as_ours"), PEERS,
                         ids=[p[0].name for p in PEERS])
def test_uncertainty_scores_and_picks_equal_small_texts(small_text, ours, score, theirs,
                                                       as_ours) -> None:
    """small-text ranks by a confidence (lower: queried first); ours by an uncertainty."""
    theirs = getattr(small_text.strategies, theirs)()
    confidence = theirs.get_confidence(_Clf(PROBS), None, UNLABELED, LABELED, None)
    np.testing.assert_allclose(score(PROBS), as_ours(confidence), atol=1e-12)
    picked = theirs.query(_Clf(PROBS), None, UNLABELED, LABELED, None, n=25)
    context = query_context(ArrayModelView(probs=PROBS), N, LABELED.tolist(), 0, C)
    assert set(ours.select(context, 25).indices.tolist()) == set(picked.tolist())


def test_bald_equals_small_texts_in_nats(small_text) -> None:
    """small-text's BALD is in bits with a 1e-8 guard in each log; ours in nats, exact."""
    np.testing.assert_allclose(bald_score(MC), small_text.bald(MC) * np.log(2), atol=1e-6)
    view = ArrayModelView(mc=MC)
    context = query_context(view, N, LABELED.tolist(), 0, C)
    ours = BALD(mc_samples=T).select(context, 25).indices
    theirs = UNLABELED[np.argsort(-small_text.bald(MC[UNLABELED]), kind="stable")[:25]]
    assert set(ours.tolist()) == set(theirs.tolist())


def test_coreset_picks_small_texts_greedy_coreset_in_order(small_text) -> None:
    """Euclidean k-center greedy (Sener & Savarese 2018) from the labelled rows: the same
    rows in the same order. small-text's picks index its unlabelled rows only where those
    come first in ``x`` (its indices mix the two), so the pool is laid out that way."""
    features = RNG.normal(size=(N, 16))
    x = np.concatenate([features[UNLABELED], features[LABELED]])
    theirs = small_text.greedy_coreset(x, np.arange(len(UNLABELED)),
                                       np.arange(len(UNLABELED), N), 20,
                                       distance_metric="euclidean", batch_size=64)
    picked, _ = k_center_greedy(features[UNLABELED], features[LABELED], 20)
    assert picked.tolist() == theirs.tolist()
    context = query_context(ArrayModelView(features=features), N, LABELED.tolist(), 0, C)
    selected = CoreSet(chunk_size=64).select(context, 20).indices
    assert selected.tolist() == UNLABELED[theirs].tolist()


@pytest.mark.parametrize("n_labeled", [0, 15])
@pytest.mark.parametrize("k", [8, 20])
def test_typiclust_picks_scikit_activemls(n_labeled: int, k: int) -> None:
    """TypiClust against scikit-activeml's (1.0): the same k-means clusters, picked from the
    largest uncovered first, and in each the same most typical image with the same typicality.
    Clusters of equal size are taken in another order (ours by id, theirs at random), so the
    clusters are compared by size and the picks where both took the cluster."""
    pytest.importorskip("skactiveml", reason='pip install -e ".[test]"')
    from skactiveml.pool import TypiClust as Theirs

    from al_sim.strategies.typiclust import cluster_labels, typiclust_select

    rng = np.random.default_rng(3)
    sizes = rng.permutation(np.arange(8, 8 + 3 * 12, 3))  # 12 blobs of distinct sizes
    x = np.concatenate([rng.normal(0, 6, size=8) + rng.normal(size=(s, 8)) for s in sizes])
    labeled = np.zeros(len(x), dtype=bool)
    labeled[rng.choice(len(x), size=n_labeled, replace=False)] = True
    y = np.where(labeled, 0.0, np.nan)
    ours, typicality = typiclust_select(x, labeled, k, seed=7, k_neighbors=20)
    theirs, utilities = Theirs(k=20, random_state=7).query(x, y, batch_size=k,
                                                           return_utilities=True)
    cluster = cluster_labels(x, n_labeled + k, 7)
    size = np.bincount(cluster)
    assert size[cluster[ours]].tolist() == size[cluster[theirs]].tolist()  # largest first
    assert not labeled[ours].any() and not set(cluster[ours]) & set(cluster[labeled])
    both = set(cluster[ours]) & set(cluster[theirs])
    assert len(both) >= k - 2
    mine = {int(cluster[i]): (int(i), t) for i, t in zip(ours, typicality, strict=True)
            if cluster[i] in both}
    peer = {int(cluster[i]): (int(i), u) for i, u in zip(
        theirs, utilities[np.arange(k), theirs], strict=True) if cluster[i] in both}
    assert {c: i for c, (i, _) in mine.items()} == {c: i for c, (i, _) in peer.items()}
    np.testing.assert_allclose([mine[c][1] for c in sorted(mine)],
                               [peer[c][1] for c in sorted(mine)], rtol=1e-4)
