"""The hook through which a stack member's training and scoring join its stack's lock-step
round: set by the lock-step stack worker in each member's thread; unset, training and scoring
are the plain ``Trainer``'s."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from al_sim.core.events import FitReport
from al_sim.core.scoring import Need, Output, Source
from al_sim.core.training import Trainer
from al_sim.data.base import Images
from al_sim.models.base import ALModel

FitRequest = tuple[Trainer, ALModel, Images, np.ndarray, int, int, Any]  # .., seed, val


@dataclass(frozen=True)
class ScoreRequest:
    """A member's ``Trainer.score`` call, waiting to be answered with the stack's others."""

    trainer: Trainer
    model: ALModel
    source: Source
    indices: np.ndarray | None
    need: Need


Request = FitRequest | ScoreRequest
JOIN: ContextVar[Callable[[Request], FitReport | Output] | None] = ContextVar(
    "al_sim_lockstep", default=None)


class LockstepTrainer(Trainer):
    """A ``Trainer`` whose ``fit`` and ``score`` wait for the stack's other members and run
    with them."""

    def fit(self, model: ALModel, x: Images, y: np.ndarray, n_classes: int, seed: int,
            val: tuple[Images, np.ndarray] | None = None,
            progress: Callable[[int, int], None] | None = None) -> FitReport:
        join = JOIN.get()
        if join is None:
            return super().fit(model, x, y, n_classes, seed, val, progress)
        return cast(FitReport, join((self, model, x, y, n_classes, seed, val)))

    def score(self, model: ALModel, source: Source, indices: np.ndarray | None,
              need: Need) -> Output:
        join = JOIN.get()
        if join is None:
            return super().score(model, source, indices, need)
        return cast(Output, join(ScoreRequest(self, model, source, indices, need)))


def trainer_class() -> type[Trainer]:
    """``LockstepTrainer`` inside a lock-step stack member, else ``Trainer``."""
    return Trainer if JOIN.get() is None else LockstepTrainer
