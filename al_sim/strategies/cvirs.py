"""CVIRS (Reyes, Morell & Ventura 2018): category vector inconsistency x ranking of scores.

Multi-label only: scores are a pure function of the pool's sigmoid outputs and the
labelled set's finding vectors (``strategies.multilabel.cvirs_score``). Cost: one
deterministic pool pass; memory O(chunk_size x L) for L labelled images.
"""

from __future__ import annotations

from al_sim.config.checks import positive
from al_sim.runtime.errors import ConfigError
from al_sim.strategies.base import QueryContext, Selection, Strategy, top_k
from al_sim.strategies.multilabel import cvirs_score


class CVIRS(Strategy):
    """Top-k CVIRS scores: uncertain on many findings and unlike the labelled finding sets."""

    name = "cvirs"
    multilabel = True
    single_label = False  # refused at start-up on single-label data

    def __init__(self, name: str | None = None, *, threshold: float, chunk_size: int) -> None:
        super().__init__(name)
        positive("strategy", chunk_size=chunk_size)
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"strategy.threshold must be in (0, 1), got {threshold}")
        self.threshold, self.chunk_size = threshold, chunk_size

    def select(self, ctx: QueryContext, k: int) -> Selection:
        if not ctx.multilabel:
            raise ConfigError("strategy cvirs needs a multi-label dataset (task=multilabel)")
        probs = ctx.model.probs(ctx.unlabeled)
        scores = cvirs_score(probs, ctx.labeled_y, self.threshold, self.chunk_size)
        picked = top_k(scores, k, ctx.rng)
        return Selection(ctx.unlabeled[picked], scores[picked])
