"""What the loop reports and to whom: result types and the callback protocol. Torch-free.

A run's side effects (run-dir files, progress bar, checkpoints, MLflow) are
callbacks. The entry point fires ``setup`` before building the components (so
a data error still reaches every sink) and ``on_exception`` / ``on_close`` if
anything fails; the loop fires the rest. Each event goes to every callback in
list order, and no callback depends on another's position: producers write in
``on_run_end`` / ``on_exception``; ``on_close`` comes after every callback has
produced, for mirrors (MLflow uploads the run dir) and clean-up.

A run may also pause: an oracle raises ``LabelsPending`` (a human has not
labelled the batch yet); the loop fires ``on_checkpoint`` with
``LoopState.pending`` set and re-raises; ``close`` sends ``on_close(PAUSED)``
(no ``on_exception``); the same command later resumes from that checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from al_sim.maths.aulc import aulc
from al_sim.tracking.contract import ACCURACY

if TYPE_CHECKING:
    from al_sim.core.pool import LabelPool
    from al_sim.data.base import ALDataset

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
# ``on_close`` status of a run that stopped to wait for an expert's labels (``LabelsPending``):
# its checkpoint holds the pending query; the same command continues it later.
PAUSED = "PAUSED"


class LabelsPending(Exception):  # noqa: N818 - an event, not an error
    """Raised by an oracle whose answers are not there yet (a human labels the batch).

    The loop checkpoints the pending query and re-raises; the sinks close with
    ``PAUSED``; the entry point prints ``str(exc)`` (where to label, how to
    continue) and exits 0. ``missing`` counts the images still without a label;
    ``partial`` is true when the batch was already written and is only partly
    labelled (the entry point refuses it, exit 2).
    """

    def __init__(self, message: str, round_: int, batch_dir: Path, missing: int,
                 partial: bool = False, why: str = "still have no label") -> None:
        super().__init__(message)
        self.round, self.batch_dir, self.missing, self.partial = round_, batch_dir, missing, partial
        self.why = why  # what the missing images lack, in words


@dataclass(kw_only=True)
class FitReport:
    """What one training did."""

    epochs: int
    steps: int
    train_loss: float
    val_loss: float | None = None


@dataclass(kw_only=True)
class QueryRecord:
    """The images labelled in one round (round 0: the initial set)."""

    round: int
    indices: np.ndarray
    scores: np.ndarray
    oracle_labels: np.ndarray
    true_labels: np.ndarray
    # several annotators (oracle=panel): each one's answer per image (-1: not asked; an
    # adjudicator answers only the flagged images), and which images were flagged
    annotations: dict[str, np.ndarray] = field(default_factory=dict)
    flagged: np.ndarray | None = None


@dataclass(kw_only=True)
class RoundResult:
    """Metrics after training on the labelled set of one round."""

    round: int
    n_labeled: int
    metrics: dict[str, float]
    train_s: float
    query_s: float
    fit: FitReport
    eval_s: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)  # stop/<name>: stopping signals
    costs: dict[str, float] = field(default_factory=dict)  # cost/<what>: an oracle's cost model
    agreement: dict[str, float] = field(default_factory=dict)  # agreement/<what>: a panel's


@dataclass
class ALResult:
    """Everything a run produced so far."""

    rounds: list[RoundResult] = field(default_factory=list)
    queries: list[QueryRecord] = field(default_factory=list)
    n_annotated: int = 0
    stopped_by: str | None = None  # the budget.stop_when rule that ended the run early, and why

    @property
    def aulc(self) -> float:
        """Area under test accuracy vs labelled images, normalised to [0, 1]."""
        return self.aulc_of(ACCURACY)

    def aulc_of(self, key: str) -> float:
        """Area under per-round metric ``key`` vs labelled images, normalised by the x-range."""
        return aulc(np.array([r.n_labeled for r in self.rounds]),
                    np.array([r.metrics[key] for r in self.rounds]))


@dataclass(kw_only=True)
class PendingQuery:
    """A round's selection waiting for labels: a resume labels exactly these images."""

    round: int
    indices: np.ndarray
    scores: np.ndarray
    query_s: float


@dataclass(kw_only=True)
class LoopState:
    """Everything needed to continue a run after its last completed round.

    ``callbacks`` holds each callback's own :meth:`RunCallback.state_dict`, by key.
    ``pending`` is set when round ``round + 1`` stopped for labels (``LabelsPending``);
    ``model_state`` is empty when no round has been trained yet.
    """

    round: int
    pool: LabelPool
    oracle: dict
    result: ALResult
    model_state: dict[str, Any]
    callbacks: dict[str, dict] = field(default_factory=dict)
    pending: PendingQuery | None = None


@dataclass
class RunInfo:
    """Who a run is, for the sinks: where its files go, what it is called, what it is."""

    run_dir: Path
    launch_dir: Path
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    parent: str | None = None  # the sweep's parent run in the tracking store
    resume: LoopState | None = None  # the checkpointed state a resumed run continues from


class RunCallback:
    """Receives a run's events; override what you need.

    ``key`` names the callback's entry in a checkpoint's ``LoopState.callbacks``.
    """

    key: str = ""

    def setup(self, run: RunInfo) -> None:
        """Before the components are built; ``run.resume`` is set when the run continues."""

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        """Before the first round the loop runs; ``rounds`` is the run's total round count."""

    def on_progress(self, round_: int, stage: str, done: int, total: int) -> None:
        """Within round ``round_``: ``stage`` (``querying``, ``training``, ``evaluating``) has
        got to ``done`` of ``total`` steps (0 of 0: it has started, with no count)."""

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        """After the oracle labelled a round's images."""

    def on_round_end(self, result: RoundResult) -> None:
        """After a round's training and evaluation."""

    def on_checkpoint(self, state: LoopState) -> None:
        """After every callback's ``on_round_end``: the state to save to resume later."""

    def on_run_end(self, result: ALResult) -> None:
        """After the last round."""

    def on_exception(self, exc: BaseException) -> None:
        """The run failed (or was interrupted) with ``exc``."""

    def on_close(self, status: str) -> None:
        """Last, once: ``FINISHED``, ``FAILED``, ``KILLED`` or ``PAUSED`` (waits for labels)."""

    def on_close_failures(self, failures: list[str]) -> None:
        """After ``on_close`` of a failing run: the sinks that could not close, one line each."""

    def state_dict(self) -> dict:
        """What this callback needs back on resume (plain values)."""
        return {}


class CallbackList(Sequence[RunCallback]):
    """Callbacks in order; ``fire(event, ...)`` calls the hook on each."""

    def __init__(self, callbacks: Sequence[RunCallback] = ()) -> None:
        self._items = list(callbacks)

    def __getitem__(self, i: int) -> RunCallback:  # type: ignore[override]  # no slices
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[RunCallback]:
        return iter(self._items)

    def fire(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback, in order."""
        for callback in self._items:
            getattr(callback, event)(*args)

    def states(self) -> dict[str, dict]:
        """Every keyed callback's state, for a checkpoint."""
        return {cb.key: cb.state_dict() for cb in self._items if cb.key}

    def close(self, exc: BaseException | None) -> None:
        """``on_exception`` (when failing) then ``on_close`` on every callback, each attempted.

        ``LabelsPending`` is no failure: no ``on_exception``, and the status is ``PAUSED``.
        """
        status = FINISHED if exc is None else (
            PAUSED if isinstance(exc, LabelsPending) else
            KILLED if isinstance(exc, KeyboardInterrupt | SystemExit) else FAILED)
        failing = exc is not None and status != PAUSED
        errors: list[tuple[RunCallback, Exception]] = []
        for event, args in ((("on_exception", (exc,)),) if failing else ()) + (
                ("on_close", (status,)),):
            for callback in self._items:
                try:
                    getattr(callback, event)(*args)
                except Exception as err:  # noqa: BLE001 - every sink gets its chance to close
                    errors.append((callback, err))
        if not errors:
            return
        if not failing:
            raise errors[0][1]
        # The run's own error is what the user reads; a sink that could not close beside it
        # (a run left RUNNING, files not written) is said too, never dropped.
        failures = [f"{type(cb).__name__} ({cb.key or 'sink'}) could not close: "
                    f"{type(err).__name__}: {err}" for cb, err in errors]
        for line in failures:
            print(f"warning: {line}", file=sys.stderr, flush=True)
        for callback in self._items:
            try:
                callback.on_close_failures(failures)
            except Exception as err:  # noqa: BLE001 - already reported above
                print(f"warning: {type(callback).__name__} could not record that: {err}",
                      file=sys.stderr, flush=True)
