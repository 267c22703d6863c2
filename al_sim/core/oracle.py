"""The simulated annotator: reveals pool labels, optionally with errors, and counts its cost."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from al_sim.maths.sampling import flip_labels
from al_sim.maths.task import Task
from al_sim.strategies.base import ModelView


class Annotator(Protocol):
    """Whoever labels the loop's queries (simulated or human): answers, their count, a state."""

    n_annotated: int

    def truth(self, indices: np.ndarray) -> np.ndarray:
        """The true labels, for logging only (-1 where unknown)."""
        ...

    def query(self, indices: np.ndarray, round_: int = 0, model: ModelView | None = None
              ) -> np.ndarray:
        """The labels for ``indices``."""
        ...

    def state(self) -> dict:
        """What a checkpoint keeps."""
        ...

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state`."""
        ...


class Oracle:
    """Answers label queries from ``truth``; flips a ``noise_rate`` share to another class
    (for a multi-label ``task``: each finding's bit flips with probability ``noise_rate``)."""

    def __init__(self, truth: np.ndarray, n_classes: int, noise_rate: float = 0.0,
                 seed: int = 0, task: Task | None = None) -> None:
        if not 0.0 <= noise_rate < 1.0:
            raise ValueError(f"oracle noise_rate must be in [0, 1), got {noise_rate}")
        self._truth = np.asarray(truth, dtype=np.int64)
        self._n_classes = n_classes
        self._task = task
        self._noise_rate = noise_rate
        self._rng = np.random.default_rng(seed)
        self.n_annotated = 0

    def truth(self, indices: np.ndarray) -> np.ndarray:
        """The true labels (for logging only: the loop learns from :meth:`query`)."""
        return self._truth[np.asarray(indices, dtype=np.int64)]

    def query(self, indices: np.ndarray, round_: int = 0, model: ModelView | None = None
              ) -> np.ndarray:
        """The annotator's labels for ``indices``; each call adds ``len(indices)`` to the cost.

        ``round_`` and ``model`` (the current model, None before the first training) are what
        a human oracle shows the expert; the simulated one needs neither.
        """
        if self._task is not None and self._task.multilabel:
            answers = self._task.flip(self.truth(indices), self._noise_rate, self._rng)
        else:
            answers = flip_labels(self.truth(indices), self._noise_rate, self._n_classes,
                                  self._rng)
        self.n_annotated += len(answers)
        return answers

    def state(self) -> dict:
        """The annotation count and noise generator state (for checkpoints)."""
        return {"n_annotated": self.n_annotated, "rng": self._rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state`."""
        self.n_annotated = int(state["n_annotated"])
        self._rng.bit_generator.state = state["rng"]


@runtime_checkable
class RecordingOracle(Protocol):
    """An oracle that records expert time, agreement and every annotator's answer per query
    (``oracle=panel``; ``oracle=human`` with named annotators); the loop logs them each round."""

    def round_costs(self) -> dict[str, float]:
        """``cost/<what>`` after the last query."""
        ...

    def round_agreement(self) -> dict[str, float]:
        """``agreement/<what>`` of the last query's answers."""
        ...

    def round_answers(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The last query's answers per annotator (-1: not asked) and its flagged mask."""
        ...


@runtime_checkable
class CostedOracle(RecordingOracle, Protocol):
    """An oracle with a cost model known before the answers (``oracle=panel``).

    Besides what a :class:`RecordingOracle` records, the loop stops before
    ``budget.cost_limit`` would be exceeded and lets cost-aware strategies divide by an
    image's expected time.
    """

    @property
    def total_seconds(self) -> float:
        """Expert seconds spent so far."""
        ...

    def seconds_of(self, indices: np.ndarray) -> float:
        """The seconds that labelling ``indices`` will cost (known before the answers)."""
        ...

    def expected_seconds(self, probs: np.ndarray) -> np.ndarray:
        """The expected seconds per image under class probabilities ``probs`` (N x C)."""
        ...
