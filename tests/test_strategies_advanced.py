"""BALD, power sampling, core-set, BADGE, TypiClust on hand-built arrays, then in the real loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from al_sim.app.components import build_strategy
from al_sim.config.schema import BudgetConf
from al_sim.core.loop import initial_indices, run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.data.base import ALDataset
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.strategies.base import ArrayModelView, QueryContext
from al_sim.strategies.bayesian import BALD, bald_score
from al_sim.strategies.diversity import (
    BADGE,
    CoreSet,
    gradient_embedding_factors,
    k_center_greedy,
    kmeanspp_outer,
    min_sq_distances,
)
from al_sim.strategies.initial import initial_policy, pixel_embedding
from al_sim.strategies.stochastic import PowerBALD, PowerEntropy, power_sample
from al_sim.strategies.typiclust import TypiClust, typicality, typiclust_select
from tests.conftest import compose_config, query_context

CONF = Path(__file__).resolve().parents[1] / "conf"


class ArrayView(ArrayModelView):
    """An ArrayModelView that records the MC sample counts asked for."""

    def __init__(self, probs: np.ndarray, features: np.ndarray, mc: np.ndarray) -> None:
        super().__init__(probs, features, mc)
        self.mc_asked: list[int] = []

    def mc_probs(self, indices: np.ndarray, samples: int) -> np.ndarray:
        self.mc_asked.append(samples)
        return super().mc_probs(indices, samples)


def context(view: ArrayView, n: int, labeled: list[int] | np.ndarray, seed: int = 0,
            n_classes: int = 3) -> QueryContext:
    return query_context(view, n, labeled, seed, n_classes)


def random_view(n: int, seed: int, c: int = 3, d: int = 4, t: int = 5,
                decimals: int = 8) -> ArrayView:
    """Random MC probabilities and embeddings; few ``decimals`` make ties and copies."""
    rng = np.random.default_rng(seed)
    mc = rng.dirichlet(np.ones(c), size=(n, t))
    return ArrayView(mc.mean(axis=1), np.round(rng.normal(size=(n, d)), decimals), mc)


NEW_STRATEGIES = {
    "bald": lambda: BALD(mc_samples=5),
    "power_entropy": lambda: PowerEntropy(beta=1.0),
    "power_bald": lambda: PowerBALD(beta=2.0, mc_samples=5),
    "coreset": lambda: CoreSet(chunk_size=7),
    "badge": lambda: BADGE(chunk_size=7),
    "typiclust": lambda: TypiClust(k_neighbors=3, max_clusters=8),
}


# ------------------------------------------------------------------------ BALD
def test_bald_prefers_disagreement_to_uniform_uncertainty() -> None:
    mc = np.array([
        [[1.0, 0.0], [0.0, 1.0]],  # 0: confident samples that disagree
        [[0.5, 0.5], [0.5, 0.5]],  # 1: every sample uniformly uncertain
        [[0.9, 0.1], [0.1, 0.9]],  # 2: milder disagreement
        [[1.0, 0.0], [1.0, 0.0]],  # 3: confident and agreeing
    ])
    h = lambda p: -sum(x * np.log(x) for x in p if x > 0)  # noqa: E731
    expected = [np.log(2), 0.0, np.log(2) - h([0.9, 0.1]), 0.0]
    np.testing.assert_allclose(bald_score(mc), expected, atol=1e-12)
    view = ArrayView(mc.mean(axis=1), np.zeros((4, 1)), mc)
    sel = BALD(mc_samples=2).select(context(view, 4, []), 2)
    assert sel.indices.tolist() == [0, 2] and view.mc_asked == [2]
    np.testing.assert_allclose(sel.scores, expected[::2])
    with pytest.raises(ValueError, match="N x T x C"):
        bald_score(mc[0])


# ------------------------------------------------------------------------ power sampling
def test_power_sampling_follows_score_to_the_beta() -> None:
    scores = np.array([1.0, 2.0, 4.0, 8.0])
    rng = np.random.default_rng(0)
    counts = np.bincount([power_sample(scores, 1, 1.0, rng)[0] for _ in range(6000)], minlength=4)
    assert np.all(np.diff(counts) > 0)  # higher scores are drawn more often
    np.testing.assert_allclose(counts / 6000, scores / scores.sum(), atol=0.03)
    sharp = np.bincount([power_sample(scores, 1, 8.0, rng)[0] for _ in range(500)], minlength=4)
    assert sharp[3] > 450  # a large beta approaches top-k


def test_power_sampling_is_without_replacement_and_seeded() -> None:
    scores = np.array([0.0, 0.5, 0.0, 3.0, 1.0])
    fourth: set[int] = set()
    for seed in range(50):
        picked = power_sample(scores, 4, 0.01, np.random.default_rng(seed))
        assert len(set(picked.tolist())) == 4
        assert set(picked[:3].tolist()) == {1, 3, 4}  # zero scores only once the rest are gone
        fourth.add(int(picked[3]))
    assert fourth == {0, 2}  # ... and then in random order
    a = power_sample(scores, 3, 1.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a, power_sample(scores, 3, 1.0, np.random.default_rng(7)))
    with pytest.raises(ValueError, match="non-negative"):
        power_sample(-scores - 1, 1, 1.0, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["power_entropy", "power_bald"])
def test_power_strategies_never_return_labelled_images(name: str) -> None:
    view = random_view(30, seed=1)
    labeled = [0, 3, 4, 10, 29]
    for seed in range(20):
        sel = NEW_STRATEGIES[name]().select(context(view, 30, labeled, seed), 10)
        assert len(set(sel.indices.tolist())) == 10 and not set(sel.indices) & set(labeled)


# ------------------------------------------------------------------------ core-set
POINTS = np.array([[0, 0], [1, 0], [10, 0], [0, 10], [5, 5], [10, 10]], dtype=float)


def test_coreset_greedy_picks_on_known_points() -> None:
    view = ArrayView(np.full((6, 3), 1 / 3), POINTS, np.zeros((6, 1, 3)))
    sel = CoreSet(chunk_size=8192).select(context(view, 6, [0]), 3)
    # farthest from (0,0) is (10,10); then (10,0) and (0,10) tie at 10: the seed orders them
    assert sel.indices[0] == 5 and set(sel.indices[1:].tolist()) == {2, 3}
    orders = {tuple(CoreSet(chunk_size=8192).select(context(view, 6, [0], seed), 3).indices)
              for seed in range(8)}
    assert orders == {(5, 2, 3), (5, 3, 2)}
    np.testing.assert_allclose(sel.scores, [np.sqrt(200), 10, 10])
    picked, scores = k_center_greedy(POINTS, POINTS[:0], 2)  # cold start: nearest the mean
    assert picked.tolist() == [4, 0] and np.isnan(scores[0])


def brute_k_center(pool: np.ndarray, labeled: np.ndarray, k: int) -> list[int]:
    dist = cdist(pool, labeled).min(axis=1)
    picks: list[int] = []
    for _ in range(k):
        picks.append(int(np.argmax(dist)))
        dist = np.minimum(dist, cdist(pool, pool[picks[-1:]])[:, 0])
    return picks


@pytest.mark.parametrize("chunk", [1, 5, 8192])
def test_coreset_matches_brute_force_whatever_the_chunk(chunk: int) -> None:
    rng = np.random.default_rng(3)
    pool, labeled = rng.normal(size=(200, 6)), rng.normal(size=(300, 6))
    np.testing.assert_allclose(min_sq_distances(pool, labeled, chunk),
                               cdist(pool, labeled, "sqeuclidean").min(axis=1), atol=1e-9)
    picked, _ = k_center_greedy(pool, labeled, 15, chunk)
    assert picked.tolist() == brute_k_center(pool, labeled, 15)


# ------------------------------------------------------------------------ BADGE
def test_gradient_embedding_factors_and_distances_match_explicit_outer_products() -> None:
    view = random_view(40, seed=2, c=3, d=5)
    a, z = gradient_embedding_factors(view.features(np.arange(40)), view.probs(np.arange(40)))
    p = view.probs(np.arange(40))
    np.testing.assert_allclose(a, p - np.eye(3)[p.argmax(axis=1)])
    g = np.einsum("nc,nd->ncd", a, z).reshape(40, 15)
    picked, scores = kmeanspp_outer(a, z, 6, np.random.default_rng(0), chunk_size=7)
    assert picked[0] == np.argmax(np.linalg.norm(g, axis=1))
    for i in range(1, 6):
        nearest = cdist(g[picked[i : i + 1]], g[picked[:i]]).min()
        assert scores[i] == pytest.approx(nearest, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_badge_picks_distinct_images_not_copies(dtype: type) -> None:
    rng = np.random.default_rng(5)
    base_z, base_p = rng.normal(size=(4, 128)).astype(dtype), rng.dirichlet(np.ones(3), size=4)
    copies = np.repeat(np.arange(4), 6)  # 24 pool images: 6 copies of each of 4 images
    view = ArrayView(base_p[copies].astype(dtype), base_z[copies], np.zeros((24, 1, 3)))
    for seed in range(20):
        sel = BADGE(chunk_size=8192).select(context(view, 24, [], seed), 6)
        assert sorted(set(copies[sel.indices[:4]].tolist())) == [0, 1, 2, 3]
        assert len(set(sel.indices.tolist())) == 6  # beyond the distinct ones: still no repeats


# ------------------------------------------------------------------------ TypiClust
def blobs(per: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Four far-apart blobs; the first point of each is its exact, most typical centre."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [50, 0], [0, 50], [50, 50]], dtype=float)
    pts = [np.vstack([c, c + rng.normal(size=(per - 1, 2))]) for c in centres]
    return np.vstack(pts), np.repeat(np.arange(4), per)


def test_typiclust_picks_the_typical_image_of_each_uncovered_cluster() -> None:
    emb, blob = blobs()
    picked, scores = typiclust_select(emb, np.zeros(100, dtype=bool), 4, seed=0, k_neighbors=10)
    assert sorted(blob[picked].tolist()) == [0, 1, 2, 3]
    for p, score in zip(picked, scores, strict=True):  # the blob's most typical point, its score
        members = np.flatnonzero(blob == blob[p])
        typ = typicality(emb[members], 10)
        knn = np.sort(cdist(emb[members], emb[members]), axis=1)[:, 1:11].mean(axis=1)
        np.testing.assert_allclose(typ, 1.0 / (knn + 1e-5))  # typicality, by its definition
        assert p == members[np.argmax(typ)] and score == pytest.approx(typ.max())
    view = ArrayView(np.full((100, 3), 1 / 3), emb, np.zeros((100, 1, 3)))
    sel = TypiClust(k_neighbors=10, max_clusters=50).select(context(view, 100, [0, 1, 2]), 3)
    assert sorted(blob[sel.indices].tolist()) == [1, 2, 3]  # blob 0 is covered already


def test_cold_start_typiclust_is_deterministic_and_diverse() -> None:
    _, blob = blobs()
    noise = np.random.default_rng(0).integers(0, 30, size=(100, 1, 20, 20))
    images = torch.from_numpy((blob[:, None, None, None] * 60 + noise).astype(np.uint8))
    assert pixel_embedding(images).shape == (100, 32)  # 16x16 pooled, first 32 components
    ds = ALDataset("blobs", images, blob, images[:4], blob[:4], ["a", "b", "c", "d"])
    budget = BudgetConf(initial=4, initial_selection="typiclust")
    policy = initial_policy(budget.initial_selection)
    first = initial_indices(budget, ds, np.random.default_rng(1), policy)
    np.testing.assert_array_equal(first,
                                  initial_indices(budget, ds, np.random.default_rng(1), policy))
    assert sorted(blob[first].tolist()) == [0, 1, 2, 3]


# ------------------------------------------------------------------------ every strategy
@pytest.mark.parametrize("name", sorted(NEW_STRATEGIES))
def test_same_seed_same_selection(name: str) -> None:
    view = random_view(60, seed=4)
    labeled = [1, 7, 8, 30]
    a = NEW_STRATEGIES[name]().select(context(view, 60, labeled, seed=11), 9)
    b = NEW_STRATEGIES[name]().select(context(view, 60, labeled, seed=11), 9)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), c=st.integers(2, 4), d=st.integers(1, 5), seed=st.integers(0, 999),
       data=st.data())
def test_any_arrays_and_budget_give_valid_selections(n: int, c: int, d: int, seed: int,
                                                     data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    view = random_view(n, seed, c=c, d=d, decimals=data.draw(st.sampled_from([0, 3])))
    labeled = np.flatnonzero(rng.random(n) < data.draw(st.floats(0.0, 0.9)))
    k = data.draw(st.integers(0, n - len(labeled)))
    for name, make in NEW_STRATEGIES.items():
        sel = make().select(context(view, n, labeled, seed, n_classes=c), k)
        got = sel.indices.tolist()
        assert len(got) == k and len(set(got)) == k, name
        assert all(0 <= i < n for i in got) and not set(got) & set(labeled.tolist()), name


@pytest.mark.parametrize("name", sorted(NEW_STRATEGIES))
def test_config_builds_the_strategy(name: str) -> None:
    strategy = build_strategy(compose_config([f"strategy={name}"]))
    assert strategy.name == name
    assert type(strategy) is type(NEW_STRATEGIES[name]())


# ------------------------------------------------------------------------ model passes and loop
class CountingCNN(SimpleCNN):
    """SimpleCNN that counts trunk and head calls."""

    def __init__(self) -> None:
        super().__init__(1, 3, widths=[4], hidden=8, dropout=0.3)
        self.calls = {"features": 0, "head": 0}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["features"] += 1
        return super().features(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        self.calls["head"] += 1
        return super().head(z)


def test_mc_proba_runs_the_trunk_once_and_features_and_proba_matches(fast_trainer) -> None:
    torch.manual_seed(0)
    model, x = CountingCNN(), torch.randint(0, 255, (600, 1, 16, 16), dtype=torch.uint8)
    assert fast_trainer.eval_batch_size(model.eval(), x) == 256  # measured once: 1 pass
    model.calls = {"features": 0, "head": 0}
    mc = fast_trainer.mc_proba(model, x, samples=7, seed=0)  # 3 batches of <= 256
    assert mc.shape == (600, 7, 3) and model.calls == {"features": 3, "head": 21}
    assert not np.allclose(mc[:, 0], mc[:, 1])  # dropout is live in the head
    z, p = fast_trainer.features_and_proba(model, x)
    np.testing.assert_allclose(z, fast_trainer.embed(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, fast_trainer.predict_proba(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NEW_STRATEGIES))
def test_strategy_runs_in_the_real_loop(name: str, tiny_dataset, fast_trainer) -> None:
    budget = BudgetConf(initial=20, query_size=10, rounds=2,
                        initial_selection="typiclust" if name == "typiclust" else "stratified")

    def model_factory(seed: int) -> SimpleCNN:
        torch.manual_seed(seed)
        return SimpleCNN(1, tiny_dataset.n_classes, widths=[8, 16], hidden=16, dropout=0.3)

    result = run_active_learning(tiny_dataset, model_factory, NEW_STRATEGIES[name](),
                                 Oracle(tiny_dataset.pool_y, tiny_dataset.n_classes), fast_trainer,
                                 budget, seed=0)
    assert [r.n_labeled for r in result.rounds] == [20, 30, 40]
    picked = np.concatenate([q.indices for q in result.queries])
    assert len(np.unique(picked)) == 40 and picked.max() < tiny_dataset.n_pool
    assert not np.isnan(np.concatenate([q.scores for q in result.queries[1:]])).any()
