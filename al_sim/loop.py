"""The active-learning cycle. Pure: no Hydra, no MLflow; every side effect leaves via callbacks.

Round 0 labels the initial set; each later round queries ``query_size``
images. Every round ends with train -> evaluate, so the learning curve has
``rounds + 1`` points at ``initial, initial + q, ...`` labelled images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from al_sim.config import BudgetConf
from al_sim.data.base import ALDataset
from al_sim.errors import BudgetError, ConfigError
from al_sim.metrics import aulc, classification_metrics
from al_sim.models.base import ALModel
from al_sim.oracle import Oracle
from al_sim.pool import LabelPool
from al_sim.strategies.base import QueryContext, Selection, Strategy
from al_sim.strategies.typiclust import initial_typiclust
from al_sim.training import FitReport, Trainer


@dataclass(frozen=True)
class Seeds:
    """Independent seeds for each random part of a run, derived from one ``seed``.

    Strategies compared under the same ``seed`` share the initial set, the
    initial weights and the training order.
    """

    initial: int
    model: int
    train: int
    strategy: int
    oracle: int

    @classmethod
    def derive(cls, seed: int) -> Seeds:
        """Seeds spawned from ``seed`` (stable across releases: SeedSequence)."""
        values = np.random.SeedSequence(seed).generate_state(5)
        return cls(*(int(v) for v in values))


@dataclass
class QueryRecord:
    """The images labelled in one round (round 0: the initial set)."""

    round: int
    indices: np.ndarray
    scores: np.ndarray
    oracle_labels: np.ndarray
    true_labels: np.ndarray


@dataclass
class RoundResult:
    """Metrics after training on the labelled set of one round."""

    round: int
    n_labeled: int
    metrics: dict[str, float]
    train_s: float
    query_s: float
    fit: FitReport
    eval_s: float = 0.0


@dataclass
class ALResult:
    """Everything a finished run produced."""

    rounds: list[RoundResult] = field(default_factory=list)
    queries: list[QueryRecord] = field(default_factory=list)
    n_annotated: int = 0

    @property
    def aulc(self) -> float:
        """Area under test accuracy vs labelled images, normalised to [0, 1]."""
        return aulc(
            np.array([r.n_labeled for r in self.rounds]),
            np.array([r.metrics["test/accuracy"] for r in self.rounds]),
        )


class Callback:
    """Receives the loop's events; override what you need."""

    def on_run_start(self, dataset: ALDataset, budget: BudgetConf) -> None:
        """Before the initial set is drawn."""

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        """After the oracle labelled a round's images."""

    def on_round_end(self, result: RoundResult) -> None:
        """After a round's training and evaluation."""

    def on_checkpoint(self, state: LoopState) -> None:
        """After ``on_round_end``: the state to save to resume later."""

    def on_run_end(self, result: ALResult) -> None:
        """After the last round."""


def plan_sizes(budget: BudgetConf, n_pool: int, fixed_initial: int | None = None) -> list[int]:
    """Labelled counts after each round; raises BudgetError if the budget exceeds the pool."""
    if budget.full:
        return [n_pool]
    initial = budget.initial if fixed_initial is None else fixed_initial
    sizes = [initial + r * budget.query_size for r in range(budget.rounds + 1)]
    if sizes[-1] > n_pool:
        room = (n_pool - initial) // budget.query_size if n_pool > initial else 0
        raise BudgetError(
            f"the budget needs {initial} initial + {budget.rounds} rounds x "
            f"{budget.query_size} = {sizes[-1]} labelled images but the pool has only {n_pool}; "
            f"lower budget.rounds (at most {room} here), budget.query_size or budget.initial, "
            "or use a larger pool"
        )
    return sizes


def initial_indices(
    budget: BudgetConf, dataset: ALDataset, rng: np.random.Generator
) -> np.ndarray:
    """The initial labelled set: the dataset's own, the whole pool, or drawn per the budget."""
    if dataset.initial_labeled is not None:
        return np.asarray(dataset.initial_labeled, dtype=np.int64)
    n = dataset.n_pool
    if budget.full:
        return np.arange(n)
    if budget.initial_selection == "random":
        return np.sort(rng.choice(n, size=budget.initial, replace=False))
    if budget.initial_selection == "typiclust":
        return np.sort(initial_typiclust(dataset.pool_x, budget.initial, rng))
    return stratified_sample(dataset.pool_y, budget.initial, rng)


def stratified_sample(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices with the class shares of ``y`` (every class >= 1 when ``k`` allows)."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts / counts.sum() * k
    take = np.floor(quota).astype(int)
    if k >= len(classes):
        take = np.maximum(take, 1)
    while take.sum() > k:
        take[np.argmax(take - quota)] -= 1
    remainder = quota - take
    for c in np.argsort(-remainder, kind="stable"):
        if take.sum() >= k:
            break
        take[c] += 1
    take = np.minimum(take, counts)
    picked = [rng.choice(np.flatnonzero(y == c), size=t, replace=False)
              for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


class _TrainedModelView:
    """The strategies' window on the current model (see ``ModelView``)."""

    def __init__(self, trainer: Trainer, model: ALModel, pool_x: torch.Tensor, seed: int) -> None:
        self._trainer, self._model, self._x, self._seed = trainer, model, pool_x, seed

    def _images(self, indices: np.ndarray) -> torch.Tensor:
        return self._x[torch.from_numpy(np.asarray(indices, dtype=np.int64))]

    def probs(self, indices: np.ndarray) -> np.ndarray:
        return self._trainer.predict_proba(self._model, self._images(indices))

    def features(self, indices: np.ndarray) -> np.ndarray:
        return self._trainer.embed(self._model, self._images(indices))

    def features_and_probs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._trainer.features_and_proba(self._model, self._images(indices))

    def mc_probs(self, indices: np.ndarray, samples: int) -> np.ndarray:
        return self._trainer.mc_proba(self._model, self._images(indices), samples, self._seed)


@dataclass
class LoopState:
    """Everything needed to continue a run after its last completed round."""

    round: int
    pool: LabelPool
    oracle: dict
    result: ALResult
    model_state: dict[str, torch.Tensor]


def _select(round_: int, budget: BudgetConf, dataset: ALDataset, pool: LabelPool,
            strategy: Strategy, trainer: Trainer, model: ALModel | None,
            seeds: Seeds) -> Selection:
    if round_ == 0:
        picked = initial_indices(budget, dataset, np.random.default_rng(seeds.initial))
        return Selection(picked, np.full(len(picked), np.nan))
    labeled = pool.labeled_indices()
    ctx = QueryContext(
        model=_TrainedModelView(trainer, model, dataset.pool_x, seeds.strategy + round_),
        unlabeled=pool.unlabeled_indices(),
        labeled=labeled,
        labeled_y=pool.labels_of(labeled),
        n_classes=dataset.n_classes,
        rng=np.random.default_rng([seeds.strategy, round_]),
        round=round_,
    )
    return strategy.select(ctx, budget.query_size)


def run_active_learning(
    dataset: ALDataset,
    model_factory: Callable[[int], ALModel],
    strategy: Strategy,
    oracle: Oracle,
    trainer: Trainer,
    budget: BudgetConf,
    seed: int,
    callbacks: Sequence[Callback] = (),
    resume: LoopState | None = None,
) -> ALResult:
    """Run the whole AL experiment and return its result; callbacks see every step as it ends.

    With ``resume``, continue after its last completed round: the outcome is
    identical to an uninterrupted run with the same seed.
    """
    fixed = None if dataset.initial_labeled is None else len(dataset.initial_labeled)
    sizes = plan_sizes(budget, dataset.n_pool, fixed)
    seeds = Seeds.derive(seed)
    val = None
    if trainer.conf.early_stopping_source == "val":
        if dataset.val_x is None or dataset.val_y is None:
            raise ConfigError(f"trainer.early_stopping_source=val but {dataset.name} has no "
                              "validation split; use trainer.early_stopping_source=labeled")
        val = (dataset.val_x, dataset.val_y)
    for cb in callbacks:
        cb.on_run_start(dataset, budget)
    pool, result, model, first = LabelPool(dataset.n_pool), ALResult(), None, 0
    if resume is not None:
        pool, result, first = resume.pool, resume.result, resume.round + 1
        oracle.restore(resume.oracle)
        model = model_factory(seeds.model)
        model.load_state_dict(resume.model_state)
    for round_ in range(first, len(sizes)):
        start = time.perf_counter()
        selection = _select(round_, budget, dataset, pool, strategy, trainer, model, seeds)
        query_s = time.perf_counter() - start
        answers = oracle.query(selection.indices)
        pool.add(selection.indices, answers, round_)
        if pool.n_labeled != sizes[round_]:
            raise RuntimeError(
                f"strategy {strategy.name} returned {len(selection.indices)} images in round "
                f"{round_}; the labelled set has {pool.n_labeled} instead of {sizes[round_]}"
            )
        record = QueryRecord(round_, selection.indices, selection.scores, answers,
                             oracle.truth(selection.indices))
        result.queries.append(record)
        for cb in callbacks:
            cb.on_query(record, dataset)

        start = time.perf_counter()
        if model is None or trainer.conf.reinit_each_round:
            model = model_factory(seeds.model)
        labeled = pool.labeled_indices()
        fit = trainer.fit(model, dataset.pool_x[torch.from_numpy(labeled)],
                          pool.labels_of(labeled), dataset.n_classes, seeds.train + round_, val)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        probs = trainer.predict_proba(model, dataset.test_x)
        eval_s = time.perf_counter() - start
        metrics = {f"test/{k}": v for k, v in classification_metrics(dataset.test_y, probs).items()}
        round_result = RoundResult(round_, pool.n_labeled, metrics, train_s, query_s, fit, eval_s)
        result.rounds.append(round_result)
        result.n_annotated = oracle.n_annotated
        for cb in callbacks:
            cb.on_round_end(round_result)
        state = LoopState(round_, pool, oracle.state(), result, model.state_dict())
        for cb in callbacks:
            cb.on_checkpoint(state)
    for cb in callbacks:
        cb.on_run_end(result)
    return result
