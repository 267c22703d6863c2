"""Duplicates and ties in the diversity strategies (issue 27).

Core-set and BADGE treat a distance as a duplicate's only within the rounding of its
computation (a few ulps of the squared norms), so near but distinct float32 points are
told apart in any dimension; TypiClust draws equally typical images with the seeded
generator, as every other strategy draws its ties.
"""

from __future__ import annotations

import numpy as np
import pytest

from al_sim.strategies.base import ArrayModelView, QueryContext
from al_sim.strategies.diversity import BADGE, CoreSet, min_sq_distances
from al_sim.strategies.typiclust import TypiClust, typiclust_select

COPIES = 6


def near_pair(dims: int, apart: float) -> tuple[np.ndarray, np.ndarray]:
    """A float32 point and another ``apart`` (share of its norm) away from it."""
    rng = np.random.default_rng(dims)
    p = np.abs(rng.normal(size=dims)).astype(np.float32) * 3  # ReLU-like features
    step = rng.normal(size=dims)
    q = (p + step / np.linalg.norm(step) * apart * np.linalg.norm(p)).astype(np.float32)
    return p, q


def context(features: np.ndarray, seed: int) -> QueryContext:
    n = len(features)
    probs = np.tile([0.6, 0.3, 0.1], (n, 1))  # equal: BADGE's factors differ by the features only
    return QueryContext(model=ArrayModelView(probs=probs, features=features),
                        unlabeled=np.arange(n), labeled=np.empty(0, dtype=np.int64),
                        labeled_y=np.empty(0, dtype=np.int64), n_classes=3,
                        rng=np.random.default_rng(seed))


@pytest.mark.parametrize("dims", [64, 512])
@pytest.mark.parametrize("strategy", [CoreSet(chunk_size=4), BADGE(chunk_size=4)],
                         ids=["coreset", "badge"])
def test_near_but_distinct_float32_points_are_both_picked(dims: int, strategy) -> None:
    p, q = near_pair(dims, apart=0.002)  # the old d x eps rule took up to 0.3% (64) / 1% (512)
    features = np.stack([*[p] * COPIES, q])
    for seed in range(8):
        picked = strategy.select(context(features, seed), 2).indices
        assert COPIES in picked, f"seed {seed}: {picked} misses the distinct point"


@pytest.mark.parametrize("dims", [16, 64, 512, 2048])
def test_exact_duplicates_are_still_at_distance_zero(dims: int) -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, dims)) * 50 + 10).astype(np.float32)
    assert (min_sq_distances(x, x[::3], chunk_size=64)[::3] == 0).all()


def test_typiclust_draws_equally_typical_images() -> None:
    emb = np.ones((12, 4), dtype=np.float32)  # one cluster of copies: every typicality ties
    picks = {int(typiclust_select(emb, np.zeros(12, bool), 1, 0, 5, 10,
                                  np.random.default_rng(seed))[0][0]) for seed in range(20)}
    assert len(picks) > 3  # not always the lowest index
    again = {int(TypiClust(k_neighbors=5, max_clusters=10).select(
        context(emb, seed), 1).indices[0]) for seed in range(20)}
    assert len(again) > 3
    first = TypiClust(k_neighbors=5, max_clusters=10).select(context(emb, 3), 2).indices
    assert (first == TypiClust(k_neighbors=5, max_clusters=10).select(
        context(emb, 3), 2).indices).all()  # the same seed, the same draw
