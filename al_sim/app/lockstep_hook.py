"""The hook through which a stack member's training joins its stack's lock-step round: set by
the lock-step stack worker in each member's thread; unset, training is the plain ``Trainer``'s."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import numpy as np

from al_sim.core.events import FitReport
from al_sim.core.training import Trainer
from al_sim.data.base import Images
from al_sim.models.base import ALModel

FitRequest = tuple[Trainer, ALModel, Images, np.ndarray, int, int, Any]  # .., seed, val
JOIN: ContextVar[Callable[[FitRequest], FitReport] | None] = ContextVar("al_sim_lockstep",
                                                                        default=None)


class LockstepTrainer(Trainer):
    """A ``Trainer`` whose ``fit`` waits for the stack's other members and trains with them."""

    def fit(self, model: ALModel, x: Images, y: np.ndarray, n_classes: int, seed: int,
            val: tuple[Images, np.ndarray] | None = None,
            progress: Callable[[int, int], None] | None = None) -> FitReport:
        join = JOIN.get()
        if join is None:
            return super().fit(model, x, y, n_classes, seed, val, progress)
        return join((self, model, x, y, n_classes, seed, val))


def trainer_class() -> type[Trainer]:
    """``LockstepTrainer`` inside a lock-step stack member, else ``Trainer``."""
    return Trainer if JOIN.get() is None else LockstepTrainer
