"""Bayesian strategies over MC-dropout samples (Gal, Islam & Ghahramani 2017).

Scores are pure functions of MC probabilities ``N x T x C`` (``T`` dropout
samples per image). The model's trunk runs once per batch and only the dropout
head runs ``T`` times (``Trainer.mc_proba``), so a BALD round costs about one
deterministic pool pass plus ``T`` cheap head passes.
"""

from __future__ import annotations

import numpy as np

from al_sim.config.checks import positive
from al_sim.strategies.base import QueryContext, Selection, Strategy, top_k
from al_sim.strategies.multilabel import check_reduction, finding_mc_scores, reduce_findings
from al_sim.strategies.uncertainty import entropy_score


def mc_scores(ctx: QueryContext, samples: int, reduction: str) -> np.ndarray:
    """BALD of every image of ``ctx.unlabeled``; multi-label: per finding, then reduced."""
    mc = ctx.model.mc_probs(ctx.unlabeled, samples)
    if ctx.multilabel:
        return reduce_findings(finding_mc_scores(bald_score, mc), reduction)
    return bald_score(mc)


def bald_score(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information ``H[mean_t p_t] - mean_t H[p_t]`` in nats, per image (``>= 0``).

    High when the dropout samples are each confident but disagree with one
    another (epistemic uncertainty); near zero when every sample gives the same
    prediction, however uncertain that prediction is.
    """
    mc = np.asarray(mc_probs, dtype=np.float64)
    if mc.ndim != 3:
        raise ValueError(f"BALD needs MC probabilities N x T x C, got shape {mc.shape}")
    n, t, c = mc.shape
    predictive = entropy_score(mc.mean(axis=1))
    expected = entropy_score(mc.reshape(n * t, c)).reshape(n, t).mean(axis=1)
    return np.maximum(predictive - expected, 0.0)


class BALD(Strategy):
    """BALD (Houlsby et al. 2011) with MC dropout: top-k mutual information.

    Cost: one trunk pass over the pool plus ``mc_samples`` dropout-head passes;
    memory O(N x T x C).
    """

    name = "bald"
    multilabel = True  # BALD per finding, reduced by ``reduction``

    def __init__(self, name: str | None = None, *, mc_samples: int,
                 reduction: str = "mean") -> None:
        super().__init__(name)
        positive("strategy", mc_samples=mc_samples)
        self.mc_samples = mc_samples
        self.reduction = check_reduction(reduction)

    def select(self, ctx: QueryContext, k: int) -> Selection:
        scores = mc_scores(ctx, self.mc_samples, self.reduction)
        picked = top_k(scores, k, ctx.rng)
        return Selection(ctx.unlabeled[picked], scores[picked])
