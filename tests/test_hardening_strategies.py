"""Hardening (issue 15): strategies as a public API on arrays check their inputs."""

from __future__ import annotations

import numpy as np
import pytest

from al_sim.strategies.base import ArrayModelView, QueryContext, top_k
from al_sim.strategies.bayesian import BALD
from al_sim.strategies.diversity import BADGE, CoreSet
from al_sim.strategies.random import RandomSampling
from al_sim.strategies.stochastic import PowerBALD, PowerEntropy
from al_sim.strategies.typiclust import TypiClust
from al_sim.strategies.uncertainty import Entropy, LeastConfidence, Margin

N, C, T, D = 40, 3, 6, 5


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"probs": rng.dirichlet(np.ones(C), N), "features": rng.normal(size=(N, D)),
            "mc": rng.dirichlet(np.ones(C), (N, T))}


def ctx(view: ArrayModelView, seed: int = 0, labeled: int = 4) -> QueryContext:
    return QueryContext(model=view, unlabeled=np.arange(labeled, N), labeled=np.arange(labeled),
                        labeled_y=np.arange(labeled) % C, n_classes=C,
                        rng=np.random.default_rng(seed))


STRATEGIES = [Entropy(), Margin(), LeastConfidence(), RandomSampling(), BALD(mc_samples=T),
              PowerEntropy(beta=1.0), PowerBALD(beta=1.0, mc_samples=T), CoreSet(chunk_size=64),
              BADGE(chunk_size=64), TypiClust(k_neighbors=5, max_clusters=50)]
IDS = [s.name for s in STRATEGIES]


@pytest.mark.parametrize("which", ["probs", "features", "mc"])
def test_nan_inputs_are_refused(which: str) -> None:
    data = arrays()
    data[which][7] = np.nan
    view = ArrayModelView(**data)
    asked = {"probs": view.probs, "features": view.features,
             "mc": lambda i: view.mc_probs(i, T)}[which]
    with pytest.raises(ValueError, match="NaN or infinite.*rows 7"):
        asked(np.arange(N))


def test_raw_logits_are_refused() -> None:
    data = arrays()
    with pytest.raises(ValueError, match="raw logits need a softmax"):
        Entropy().select(ctx(ArrayModelView(probs=np.log(data["probs"]) * 3)), 3)


def test_mc_in_the_wrong_layout_is_refused() -> None:
    mc = arrays()["mc"]
    with pytest.raises(ValueError, match="N x T x C"):
        BALD(mc_samples=2).select(ctx(ArrayModelView(mc=mc.transpose(0, 2, 1))), 3)


def test_mc_probs_honours_samples() -> None:
    view = ArrayModelView(**arrays())
    assert view.mc_probs(np.arange(3), 2).shape == (3, 2, C)
    with pytest.raises(ValueError, match=f"holds {T}"):
        view.mc_probs(np.arange(3), T + 1)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
@pytest.mark.parametrize("k", [-1, N, 2.5])
def test_bad_counts_are_refused(strategy, k) -> None:
    with pytest.raises(ValueError, match="k must be|only 36 are unlabelled"):
        strategy.select(ctx(ArrayModelView(**arrays())), k)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
def test_every_unlabelled_image_can_be_asked_for(strategy) -> None:
    picked = strategy.select(ctx(ArrayModelView(**arrays())), N - 4).indices
    assert sorted(picked) == list(range(4, N))


@pytest.mark.parametrize("strategy", [Entropy(), Margin(), LeastConfidence()],
                         ids=["entropy", "margin", "least_confidence"])
def test_ties_are_broken_by_the_seed_not_the_position(strategy) -> None:
    flat = ArrayModelView(probs=np.full((N, C), 1.0 / C))
    picks = {tuple(strategy.select(ctx(flat, seed), 5).indices) for seed in range(6)}
    assert len(picks) > 1  # not always the first five positions
    again = strategy.select(ctx(flat, 3), 5).indices
    assert tuple(again) == tuple(strategy.select(ctx(flat, 3), 5).indices)


@pytest.mark.parametrize("strategy", [CoreSet(chunk_size=64), BADGE(chunk_size=64)],
                         ids=["coreset", "badge"])
@pytest.mark.parametrize("labeled", [0, 4], ids=["cold", "warm"])
def test_diversity_ties_are_broken_by_the_seed_not_the_position(strategy, labeled: int) -> None:
    # every image the same: all distances (and gradient norms) tie exactly
    same = ArrayModelView(probs=np.full((N, C), 1.0 / C), features=np.ones((N, D)))
    firsts = {int(strategy.select(ctx(same, seed, labeled), 3).indices[0]) for seed in range(8)}
    assert len(firsts) > 1  # not always the lowest position
    picks = strategy.select(ctx(same, 3, labeled), 3).indices
    assert len(set(picks)) == 3
    assert list(picks) == list(strategy.select(ctx(same, 3, labeled), 3).indices)


def test_near_duplicates_within_rounding_tie_in_core_set() -> None:
    from al_sim.strategies.diversity import min_sq_distances

    x = np.ones((6, D), dtype=np.float32) * 3.0
    x[2] += np.float32(1e-7)  # a copy up to float32 rounding
    x[5] += 1.0
    d = min_sq_distances(x, x[:1])
    assert d[:5].tolist() == [0.0] * 5 and d[5] == pytest.approx(D, rel=1e-5)


def test_top_k_without_ties_is_unchanged_by_a_generator() -> None:
    scores = np.random.default_rng(1).random(50)
    assert list(top_k(scores, 7, np.random.default_rng(5))) == list(top_k(scores, 7))
    tied = np.array([3.0, 1.0, 2.0, 2.0, 2.0, 0.0])
    got = top_k(tied, 3, np.random.default_rng(0))
    assert got[0] == 0 and set(got[1:]) <= {2, 3, 4} and len(set(got)) == 3


def test_comparison_figure_ticks_at_logged_steps_and_keeps_the_legend_off_the_axes(
        tmp_path) -> None:
    from al_sim.report.figures import CurvePanel, comparison_curves, step_ticks
    from al_sim.report.stats import aggregate

    steps = np.array([20, 25, 30, 35, 40])
    assert step_ticks(steps) == [20, 25, 30, 35, 40]
    assert step_ticks(np.arange(0, 1000, 50)) is None
    rng = np.random.default_rng(0)
    curves = {f"s{i}": aggregate(steps, [rng.random(5) for _ in range(3)]) for i in range(9)}
    curves["random"] = aggregate(steps, [rng.random(5) for _ in range(3)])
    path = comparison_curves([CurvePanel("ten strategies", curves, 0.9)], "test/accuracy",
                             tmp_path / "curves.png")
    assert path.stat().st_size > 0
