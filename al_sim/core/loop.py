"""The active-learning cycle. Pure: no Hydra, no MLflow; every side effect leaves via callbacks.

Round 0 labels the initial set; each later round queries ``query_size``
images. Every round ends with train -> evaluate, so the learning curve has
``rounds + 1`` points at ``initial, initial + q, ...`` labelled images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from al_sim.config.schema import BudgetConf
from al_sim.core.events import (
    ALResult,
    CallbackList,
    LabelsPending,
    LoopState,
    PendingQuery,
    QueryRecord,
    RoundResult,
    RunCallback,
)
from al_sim.core.model_view import TrainedModelView, check_trained, pool_rows
from al_sim.core.oracle import Annotator, CostedOracle, RecordingOracle
from al_sim.core.pool import LabelPool
from al_sim.core.scoring import PROBS, images_source, one_array
from al_sim.core.training import Trainer
from al_sim.data.base import ALDataset
from al_sim.maths.stop_signals import PREFIX, StopMonitor, first_holding, parse_rules, stop_set
from al_sim.models.base import ALModel
from al_sim.runtime.errors import BudgetError, ConfigError
from al_sim.strategies.base import QueryContext, Selection, Strategy
from al_sim.strategies.initial import InitialPolicy, initial_policy


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
    stop: int  # the stop set (stopping signals)

    @classmethod
    def derive(cls, seed: int) -> Seeds:
        """Seeds spawned from ``seed`` (stable across releases: SeedSequence)."""
        values = np.random.SeedSequence(seed).generate_state(6)  # prefix-stable: old 5 unchanged
        return cls(*(int(v) for v in values))


def plan_sizes(budget: BudgetConf, n_pool: int, fixed_initial: int | None = None) -> list[int]:
    """Labelled counts after each round; raises BudgetError if the budget exceeds the pool."""
    if budget.full:
        return [n_pool]
    initial = budget.initial if fixed_initial is None else fixed_initial
    sizes = [initial + r * budget.query_size for r in range(budget.rounds + 1)]
    if initial > n_pool and fixed_initial is None:  # no number of rounds fits
        raise BudgetError(f"budget.initial={initial} is more than the pool's {n_pool} images; "
                          f"set budget.initial below {n_pool} or use a larger pool")
    if sizes[-1] > n_pool:
        room = (n_pool - initial) // budget.query_size if n_pool > initial else 0
        raise BudgetError(
            f"the budget needs {initial} initial + {budget.rounds} rounds x "
            f"{budget.query_size} = {sizes[-1]} labelled images but the pool has only {n_pool}; "
            f"lower budget.rounds (at most {room} here), budget.query_size or budget.initial, "
            "or use a larger pool"
        )
    return sizes


def initial_indices(budget: BudgetConf, dataset: ALDataset, rng: np.random.Generator,
                    policy: InitialPolicy) -> np.ndarray:
    """The initial labelled set: the dataset's own, the whole pool, or drawn by ``policy``."""
    if budget.full:  # the upper bound labels everything, whatever the source's own initial set
        return np.arange(dataset.n_pool)
    if dataset.initial_labeled is not None:
        return np.asarray(dataset.initial_labeled, dtype=np.int64)
    return policy(dataset, budget.initial, rng)


def _select(round_: int, budget: BudgetConf, dataset: ALDataset, pool: LabelPool,
            strategy: Strategy, view: TrainedModelView | None,
            seeds: Seeds, initial: InitialPolicy, costed: CostedOracle | None = None
            ) -> Selection:
    if round_ == 0 or view is None:  # view: None only before the first training
        picked = initial_indices(budget, dataset, np.random.default_rng(seeds.initial), initial)
        return Selection(picked, np.full(len(picked), np.nan))
    labeled = pool.labeled_indices()
    ctx = QueryContext(
        model=view,
        unlabeled=pool.unlabeled_indices(),
        labeled=labeled,
        labeled_y=pool.labels_of(labeled),
        n_classes=dataset.n_classes,
        rng=np.random.default_rng([seeds.strategy, round_]),
        round=round_,
        task=dataset.task,
        expected_seconds=None if costed is None else costed.expected_seconds,
    )
    return strategy.select(ctx, budget.query_size)


def _over_cost_limit(budget: BudgetConf, costed: CostedOracle | None, round_: int,
                     indices: np.ndarray, n_labeled: int) -> str | None:
    """Why round ``round_`` must not be labelled (``budget.cost_limit``), or None.

    BudgetError when the initial set alone would exceed the limit.
    """
    if budget.cost_limit is None or costed is None:
        return None
    planned = costed.total_seconds + costed.seconds_of(indices)
    if planned <= budget.cost_limit:
        return None
    if round_ == 0:
        raise BudgetError(f"labelling the initial set costs {planned:.0f} expert seconds, more "
                          f"than budget.cost_limit={budget.cost_limit:g}; raise "
                          "budget.cost_limit or lower budget.initial")
    return (f"budget.cost_limit={budget.cost_limit:g} (round {round_} would bring expert time "
            f"to {planned:.0f} s; stopped after round {round_ - 1}, {n_labeled} labelled images)")


def run_active_learning(
    dataset: ALDataset,
    model_factory: Callable[[int], ALModel],
    strategy: Strategy,
    oracle: Annotator,
    trainer: Trainer,
    budget: BudgetConf,
    seed: int,
    callbacks: Sequence[RunCallback] = (),
    resume: LoopState | None = None,
    initial: InitialPolicy | None = None,
) -> ALResult:
    """Run the whole AL experiment and return its result; callbacks see every step as it ends.

    ``initial`` draws the initial labelled set (default: the policy ``budget.initial_selection``
    names). With ``resume``, continue after its last completed round: the outcome is identical
    to an uninterrupted run with the same seed.
    """
    hooks = callbacks if isinstance(callbacks, CallbackList) else CallbackList(callbacks)
    task = dataset.task
    if task.multilabel and (trainer.task is None or not trainer.task.multilabel):
        raise ConfigError(f"{dataset.name} is multi-label but the trainer was built for "
                          "single-label outputs; build it with Trainer(..., task=dataset.task)")
    initial = initial or initial_policy(budget.initial_selection)
    fixed = None if dataset.initial_labeled is None else len(dataset.initial_labeled)
    sizes = plan_sizes(budget, dataset.n_pool, fixed)
    seeds = Seeds.derive(seed)
    val = None
    if trainer.conf.early_stopping_source == "val":
        if dataset.val_x is None or dataset.val_y is None:
            raise ConfigError(f"trainer.early_stopping_source=val but {dataset.name} has no "
                              "validation split; use trainer.early_stopping_source=labeled")
        val = (dataset.val_x, dataset.val_y)
    # on a GPU the uint8 pool and test images move there once when they fit
    pool_x, test_x = trainer.place(dataset.pool_x), trainer.place(dataset.test_x)
    rows, test = pool_rows(dataset, pool_x), images_source(test_x, dataset, "test")
    costed = oracle if isinstance(oracle, CostedOracle) else None
    recording = oracle if isinstance(oracle, RecordingOracle) else None
    hooks.fire("on_run_start", dataset, len(sizes))
    findings = dataset.n_classes if task.multilabel else None
    pool, result, model, first = LabelPool(dataset.n_pool, findings), ALResult(), None, 0
    pending = None if resume is None else resume.pending
    rules = parse_rules(budget.stop_when) if budget.stop_when else []
    stop_idx = stop_set(dataset.n_pool, budget.stop_set_size, seeds.stop)
    # stopping signals read a multi-label model's findings as 2-class decisions
    monitor = StopMonitor(2 if task.multilabel else dataset.n_classes, budget.stop_window)
    per_image = dataset.n_classes if task.multilabel else 1
    if resume is not None:
        pool, result, first = resume.pool, resume.result, resume.round + 1
        oracle.restore(resume.oracle)
        if resume.model_state:  # empty when round 0 itself waited for labels
            model = model_factory(seeds.model)
            model.load_state_dict(resume.model_state)
            monitor.restore(task.decisions(trainer.predict_proba(model, rows(stop_idx))),
                            [r.signals for r in result.rounds],
                            [r.metrics[budget.stop_metric] for r in result.rounds])
    for round_ in range(first, len(sizes)):
        view = None if model is None else TrainedModelView(
            trainer, model, rows, seeds.strategy + round_, round_, task.multilabel)
        if pending is not None and pending.round == round_:  # the batch the expert labels
            selection, query_s = Selection(pending.indices, pending.scores), pending.query_s
        else:
            hooks.fire("on_progress", round_, "querying", 0, 0)
            start = time.perf_counter()
            selection = _select(round_, budget, dataset, pool, strategy, view, seeds, initial,
                                costed)
            query_s = time.perf_counter() - start
        over = _over_cost_limit(budget, costed, round_, selection.indices, pool.n_labeled)
        if over is not None:
            result.stopped_by = over
            break
        try:
            answers = oracle.query(selection.indices, round_, view)
        except LabelsPending:  # keep the selection so the resumed run labels exactly it
            hooks.fire("on_checkpoint", LoopState(
                round=round_ - 1, pool=pool, oracle=oracle.state(), result=result,
                model_state={} if model is None else model.state_dict(),
                callbacks=hooks.states(),
                pending=PendingQuery(round=round_, indices=selection.indices,
                                     scores=selection.scores, query_s=query_s)))
            raise
        pool.add(selection.indices, answers, round_)
        if pool.n_labeled != sizes[round_]:
            raise RuntimeError(
                f"strategy {strategy.name} returned {len(selection.indices)} images in round "
                f"{round_}; the labelled set has {pool.n_labeled} instead of {sizes[round_]}"
            )
        record = QueryRecord(round=round_, indices=selection.indices, scores=selection.scores,
                             oracle_labels=answers, true_labels=oracle.truth(selection.indices))
        if recording is not None:
            record.annotations, record.flagged = recording.round_answers()
        result.queries.append(record)
        hooks.fire("on_query", record, dataset)

        start = time.perf_counter()
        if model is None or trainer.conf.reinit_each_round:
            model = model_factory(seeds.model)
        labeled = pool.labeled_indices()
        fit = trainer.fit(model, rows(labeled), pool.labels_of(labeled), dataset.n_classes,
                          seeds.train + round_, val, progress=partial(
                              hooks.fire, "on_progress", round_, "training"))
        train_s = time.perf_counter() - start
        hooks.fire("on_progress", round_, "evaluating", 0, 0)
        start = time.perf_counter()
        probs = one_array(trainer.score(model, test, None, PROBS))
        check_trained(fit, probs, round_)
        eval_s = time.perf_counter() - start
        metrics = task.metrics(dataset.test_y, probs)
        stop_probs = one_array(trainer.score(model, rows, stop_idx, PROBS))
        signals = monitor.update(task.decisions(stop_probs),
                                 np.repeat(pool.round_of(stop_idx) < 0, per_image),
                                 metrics[budget.stop_metric])
        round_result = RoundResult(round=round_, n_labeled=pool.n_labeled, metrics=metrics,
                                   train_s=train_s, query_s=query_s, fit=fit, eval_s=eval_s,
                                   signals=signals)
        if recording is not None:
            round_result.costs, round_result.agreement = (recording.round_costs(),
                                                          recording.round_agreement())
        result.rounds.append(round_result)
        result.n_annotated = oracle.n_annotated
        hooks.fire("on_round_end", round_result)
        state = LoopState(round=round_, pool=pool, oracle=oracle.state(), result=result,
                          model_state=model.state_dict(), callbacks=hooks.states())
        hooks.fire("on_checkpoint", state)
        rule = first_holding(rules, signals)
        if rule is not None and round_ < len(sizes) - 1:
            result.stopped_by = (f"{rule} ({rule.signal}={signals[PREFIX + rule.signal]:.4g} "
                                 f"after round {round_}, {pool.n_labeled} labelled images)")
            break
    hooks.fire("on_run_end", result)
    return result
