"""Random sampling: the baseline every strategy must beat. Cost: no model pass."""

from __future__ import annotations

import numpy as np

from al_sim.strategies.base import QueryContext, Selection, Strategy


class RandomSampling(Strategy):
    """Uniform sampling without replacement from the unlabelled pool."""

    name = "random"
    multilabel = True  # no model outputs used

    def select(self, ctx: QueryContext, k: int) -> Selection:
        picked = ctx.rng.choice(ctx.unlabeled, size=k, replace=False)
        return Selection(picked, np.full(k, np.nan))
