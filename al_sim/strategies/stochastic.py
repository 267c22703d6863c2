"""Stochastic batch acquisition (Kirsch et al. 2023, "Stochastic Batch Acquisition").

Instead of the top-k scores, a batch is sampled without replacement with
probability proportional to ``score ** beta`` (power sampling), which avoids
the redundant batches top-k picks when neighbouring images share a high score.
Sampling uses the Gumbel-top-k trick: the ``k`` largest ``beta * log(score) + G``
with ``G`` i.i.d. standard Gumbel noise are an exact draw without replacement.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from al_sim.config.checks import positive
from al_sim.strategies.base import QueryContext, Selection, Strategy
from al_sim.strategies.bayesian import mc_scores
from al_sim.strategies.multilabel import check_reduction, finding_scores, reduce_findings
from al_sim.strategies.uncertainty import entropy_score


def power_sample(scores: np.ndarray, k: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` distinct rows drawn with probability proportional to ``score ** beta``.

    Scores must be ``>= 0``; zero scores are drawn only once every positive one is taken.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any() or (scores < 0).any():
        raise ValueError("power sampling needs non-negative, non-NaN scores")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if k > len(scores):
        raise ValueError(f"cannot draw {k} distinct rows from {len(scores)}")
    gumbel = rng.gumbel(size=len(scores))
    positive = scores > 0
    keys = gumbel.copy()  # zero scores: a uniformly random order among themselves
    keys[positive] += beta * np.log(scores[positive])
    return np.lexsort((-keys, ~positive))[:k]  # positive scores first, then by key


class _PowerSampling(Strategy):
    """Power sampling over the pool scores given by :meth:`scores` (multi-label: the score
    reduced over findings by ``reduction``)."""

    multilabel = True

    def __init__(self, name: str | None = None, *, beta: float, reduction: str = "mean") -> None:
        super().__init__(name)
        positive("strategy", beta=beta)
        self.beta = beta
        self.reduction = check_reduction(reduction)

    @abstractmethod
    def scores(self, ctx: QueryContext) -> np.ndarray:
        """Non-negative informativeness of every image of ``ctx.unlabeled``."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        scores = self.scores(ctx)
        picked = power_sample(scores, k, self.beta, ctx.rng)
        return Selection(ctx.unlabeled[picked], scores[picked])


class PowerEntropy(_PowerSampling):
    """PowerEntropy (Kirsch et al. 2023): entropy, sampled proportional to ``entropy ** beta``.

    Cost: one deterministic pool pass; memory O(N x C).
    """

    name = "power_entropy"

    def scores(self, ctx: QueryContext) -> np.ndarray:
        probs = ctx.model.probs(ctx.unlabeled)
        if ctx.multilabel:
            return reduce_findings(finding_scores(entropy_score, probs), self.reduction)
        return entropy_score(probs)


class PowerBALD(_PowerSampling):
    """PowerBALD (Kirsch et al. 2023): BALD, sampled proportional to ``bald ** beta``.

    Cost: one trunk pass plus ``mc_samples`` dropout-head passes; memory O(N x T x C).
    """

    name = "power_bald"

    def __init__(self, name: str | None = None, *, beta: float, mc_samples: int,
                 reduction: str = "mean") -> None:
        super().__init__(name, beta=beta, reduction=reduction)
        positive("strategy", mc_samples=mc_samples)
        self.mc_samples = mc_samples

    def scores(self, ctx: QueryContext) -> np.ndarray:
        return mc_scores(ctx, self.mc_samples, self.reduction)
