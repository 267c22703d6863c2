"""The strategy protocol: look at the model through a view, return pool indices to label."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class ModelView(Protocol):
    """What a strategy may ask of the current model, for pool indices."""

    def probs(self, indices: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``N x C``."""
        ...

    def features(self, indices: np.ndarray) -> np.ndarray:
        """Penultimate embeddings ``N x D``."""
        ...

    def features_and_probs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``features`` and ``probs`` from one pass over the model."""
        ...

    def mc_probs(self, indices: np.ndarray, samples: int) -> np.ndarray:
        """MC-dropout probabilities ``N x T x C``."""
        ...


@dataclass
class QueryContext:
    """Everything a strategy sees in one round."""

    model: ModelView
    unlabeled: np.ndarray
    labeled: np.ndarray
    labeled_y: np.ndarray
    n_classes: int
    rng: np.random.Generator
    round: int = 0


@dataclass
class Selection:
    """Pool indices picked, in pick order, with their scores (NaN where a strategy has none)."""

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.indices.shape != self.scores.shape:
            raise ValueError("a Selection needs one score per index")


class Strategy(ABC):
    """A query strategy."""

    name: str = "strategy"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    @abstractmethod
    def select(self, ctx: QueryContext, k: int) -> Selection:
        """Pick ``k`` images among ``ctx.unlabeled``."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores; ties go to the lower position."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("strategy scores contain NaN")
    return np.argsort(-scores, kind="stable")[:k]


class ScoringStrategy(Strategy):
    """Takes the top-k images by a pure function of predicted probabilities."""

    @staticmethod
    @abstractmethod
    def score(probs: np.ndarray) -> np.ndarray:
        """Informativeness per row of ``probs`` (``N x C``); higher is picked first."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        scores = self.score(ctx.model.probs(ctx.unlabeled))
        picked = top_k(scores, k)
        return Selection(ctx.unlabeled[picked], scores[picked])


class ArrayModelView:
    """A ModelView over fixed per-pool-image arrays: run any strategy without a model.

    Useful to test a strategy on hand-made arrays, or to time selection
    separately from the model pass. An array left out raises if asked for.
    """

    def __init__(self, probs: np.ndarray | None = None, features: np.ndarray | None = None,
                 mc: np.ndarray | None = None) -> None:
        self._probs, self._features, self._mc = probs, features, mc

    @staticmethod
    def _take(array: np.ndarray | None, what: str, indices: np.ndarray) -> np.ndarray:
        if array is None:
            raise ValueError(f"this ArrayModelView holds no {what}")
        return array[indices]

    def probs(self, indices: np.ndarray) -> np.ndarray:
        return self._take(self._probs, "probabilities", indices)

    def features(self, indices: np.ndarray) -> np.ndarray:
        return self._take(self._features, "features", indices)

    def features_and_probs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.features(indices), self.probs(indices)

    def mc_probs(self, indices: np.ndarray, samples: int) -> np.ndarray:
        return self._take(self._mc, "MC samples", indices)
