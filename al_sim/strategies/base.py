"""The strategy protocol: look at the model through a view, return pool indices to label."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from al_sim.maths.task import Task
from al_sim.runtime.errors import ConfigError
from al_sim.strategies.multilabel import check_reduction, finding_scores, reduce_findings

# the built-in strategies that serve multi-label outputs (named in the refusal of others)
MULTILABEL_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald",
                         "power_entropy", "power_bald", "coreset", "badge", "typiclust", "cvirs")


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
    task: Task | None = None  # None: single-label
    # an image's expected expert seconds from its class probabilities; set by an oracle with a
    # cost model (oracle=panel), for cost-aware strategies
    expected_seconds: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def multilabel(self) -> bool:
        """Whether the probabilities are per-finding sigmoids (``N x F``), not a softmax."""
        return self.task is not None and self.task.multilabel


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
    """A query strategy.

    Every subclass's ``select`` is checked on the way in and out: ``k`` must be
    an integer in ``[0, len(ctx.unlabeled)]``, and exactly ``k`` distinct
    unlabelled pool indices must come back (ValueError otherwise).
    """

    name: str = "strategy"
    multilabel: bool = False  # whether it serves multi-label (sigmoid) outputs; refused otherwise
    single_label: bool = True  # whether it serves single-label (softmax) outputs

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "select" in cls.__dict__ and not getattr(cls.__dict__["select"], "_checked", False):
            # every subclass's select is wrapped in the output checks (mypy cannot follow it)
            checked = _checked_select(cls.__dict__["select"])
            cls.select = checked  # type: ignore[method-assign,assignment]

    @abstractmethod
    def select(self, ctx: QueryContext, k: int) -> Selection:
        """Pick ``k`` images among ``ctx.unlabeled``."""


def _checked_select(select: Callable[[Strategy, QueryContext, int], Selection],
                    ) -> Callable[[Strategy, QueryContext, int], Selection]:
    @functools.wraps(select)
    def checked(self: Strategy, ctx: QueryContext, k: int) -> Selection:
        n = len(ctx.unlabeled)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"{self.name}: k must be an integer >= 0, got {k!r}")
        if k > n:
            raise ValueError(f"{self.name}: asked for {k} images but only {n} are unlabelled")
        picked = select(self, ctx, k)
        indices = picked.indices
        if len(indices) != k or len(np.unique(indices)) != k or not np.isin(
                indices, ctx.unlabeled).all():
            raise ValueError(f"{self.name} returned {len(indices)} indices for k={k}; a "
                             "strategy must return k distinct unlabelled pool indices")
        return picked

    setattr(checked, "_checked", True)  # noqa: B010 - a marker on a function object
    return checked


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first.

    Scores tied across the k-th place are drawn with ``rng`` (seeded: a tie no
    longer always favours the lowest positions); without ``rng``, or without such
    a tie, ties go to the lower position.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("strategy scores contain NaN")
    order = np.argsort(-scores, kind="stable")
    if rng is None or k <= 0 or k >= len(scores) or scores[order[k]] != scores[order[k - 1]]:
        return order[:k]
    kth = scores[order[k - 1]]
    above = order[scores[order] > kth]
    tied = np.flatnonzero(scores == kth)
    drawn = np.sort(rng.choice(tied, size=k - len(above), replace=False))
    return np.concatenate([above, drawn])


class ModelOutputError(ConfigError, ValueError):
    """Model outputs a strategy cannot use: NaN or infinite values, or not probabilities."""


def checked_array(array: np.ndarray, what: str, probabilities_axis: int | None = None,
                  round_: int | None = None) -> np.ndarray:
    """``array`` unchanged if finite (and, with ``probabilities_axis``, summing to 1 on it);
    else ModelOutputError naming the round (when given) and how many pool rows are bad."""
    out = np.asarray(array)
    where = "" if round_ is None else f"round {round_}: the model's "
    if not np.isfinite(out).all():
        raise ModelOutputError(
            f"{where}{what} hold NaN or infinite values in {_rows(~np.isfinite(out))}: a "
            "diverged model (lower trainer.lr, e.g. trainer.lr=1e-3), or bad input")
    if probabilities_axis is not None:
        sums = out.sum(axis=probabilities_axis)
        if out.min(initial=0.0) < 0 or not np.allclose(sums, 1.0, atol=1e-3):
            raise ModelOutputError(
                f"{where}{what} are not probabilities summing to 1 along axis "
                f"{probabilities_axis} (in {_rows(~np.isclose(sums, 1.0, atol=1e-3))}): raw "
                "logits need a softmax; MC samples must be laid out N x T x C")
    return out


def _rows(bad: np.ndarray) -> str:
    rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
    shown = ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")
    return f"{len(rows)} of {len(bad)} pool rows (rows {shown})"


class ScoringStrategy(Strategy):
    """Takes the top-k images by a pure function of predicted probabilities.

    Multi-label: the score per finding (a two-class decision), reduced over the findings
    by ``reduction`` (``mean`` or ``max``).

    ``cost_aware``: the score is divided by the image's expected expert seconds
    (:func:`per_second`), so cheap informative images go first; needs an oracle with a
    cost model (``oracle=panel``, single-label only).
    """

    multilabel = True

    def __init__(self, name: str | None = None, *, reduction: str = "mean",
                 cost_aware: bool = False) -> None:
        super().__init__(name)
        self.reduction = check_reduction(reduction)
        self.cost_aware = cost_aware

    @staticmethod
    @abstractmethod
    def score(probs: np.ndarray) -> np.ndarray:
        """Informativeness per row of ``probs`` (``N x C``); higher is picked first."""

    def scores(self, ctx: QueryContext) -> np.ndarray:
        """One score per image of ``ctx.unlabeled``."""
        probs = ctx.model.probs(ctx.unlabeled)
        if ctx.multilabel:
            scores = reduce_findings(finding_scores(self.score, probs), self.reduction)
        else:
            scores = self.score(probs)
        if self.cost_aware:
            if ctx.expected_seconds is None:
                raise ValueError(f"{self.name}: cost_aware=true needs an oracle with a cost "
                                 "model (oracle=panel)")
            scores = per_second(scores, ctx.expected_seconds(probs))
        return scores

    def select(self, ctx: QueryContext, k: int) -> Selection:
        scores = self.scores(ctx)
        picked = top_k(scores, k, ctx.rng)
        return Selection(ctx.unlabeled[picked], scores[picked])


def per_second(scores: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Informativeness per expected expert second: ``scores / seconds`` (seconds > 0)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    if not (np.isfinite(seconds).all() and (seconds > 0).all()):
        raise ValueError("expected expert seconds must be finite and > 0")
    return np.asarray(scores, dtype=np.float64) / seconds


class ArrayModelView:
    """A ModelView over fixed per-pool-image arrays: run any strategy without a model.

    Useful to test a strategy on hand-made arrays, or to time selection
    separately from the model pass. An array left out raises if asked for.
    """

    def __init__(self, probs: np.ndarray | None = None, features: np.ndarray | None = None,
                 mc: np.ndarray | None = None, multilabel: bool = False) -> None:
        """``multilabel``: probabilities are per-finding sigmoids (rows need not sum to 1)."""
        self._probs, self._features, self._mc = probs, features, mc
        self.multilabel = multilabel
        self._checked: set[str] = set()  # each array is checked once, when first asked for

    def _take(self, array: np.ndarray | None, what: str, indices: np.ndarray,
              probabilities_axis: int | None = None) -> np.ndarray:
        if array is None:
            raise ValueError(f"this ArrayModelView holds no {what}")
        if what not in self._checked:
            checked_array(array, what, None if self.multilabel else probabilities_axis)
            self._checked.add(what)
        return array[indices]

    def probs(self, indices: np.ndarray) -> np.ndarray:
        return self._take(self._probs, "probs", indices, probabilities_axis=1)

    def features(self, indices: np.ndarray) -> np.ndarray:
        return self._take(self._features, "features", indices)

    def features_and_probs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.features(indices), self.probs(indices)

    def mc_probs(self, indices: np.ndarray, samples: int) -> np.ndarray:
        """The first ``samples`` of the held MC samples (ValueError if it holds fewer)."""
        if self._mc is not None and np.ndim(self._mc) != 3:
            raise ValueError(f"mc must be N x T x C MC-dropout probabilities, got shape "
                             f"{np.shape(self._mc)}")
        mc = self._take(self._mc, "mc", indices, probabilities_axis=2)
        if samples > mc.shape[1]:
            raise ValueError(f"asked for {samples} MC samples but this ArrayModelView holds "
                             f"{mc.shape[1]} (mc is N x T x C)")
        return mc[:, :samples]
