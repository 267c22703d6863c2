"""The trained model as the strategies see it: pool images by index, outputs checked."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from al_sim.core.events import FitReport
from al_sim.core.scoring import PROBS, Need, Output, Source, one_array, source_of, two_arrays
from al_sim.core.training import Trainer
from al_sim.data.base import ALDataset, Images
from al_sim.models.base import ALModel
from al_sim.runtime.errors import ConfigError
from al_sim.strategies.base import checked_array


class TrainedModelView:
    """The strategies' window on the current model (see ``ModelView``); every output is
    checked as ``ArrayModelView`` checks its arrays (a diverged model stops the run)."""

    def __init__(self, trainer: Trainer, model: ALModel,
                 rows: Callable[[np.ndarray], Images] | Source, seed: int, round_: int,
                 multilabel: bool = False) -> None:
        self._trainer, self._model, self._seed = trainer, model, seed
        self._source = source_of(rows)
        self._round = round_
        # per-finding sigmoids need not sum to 1: only finiteness is checked for them
        self._axis = None if multilabel else 1

    def _ask(self, indices: np.ndarray, need: Need) -> Output:
        return self._trainer.score(self._model, self._source, np.asarray(indices), need)

    def probs(self, indices: np.ndarray) -> np.ndarray:
        probs = one_array(self._ask(indices, PROBS))
        return checked_array(probs, "pool probabilities", self._axis, self._round)

    def features(self, indices: np.ndarray) -> np.ndarray:
        features = one_array(self._ask(indices, Need("features")))
        return checked_array(features, "pool features", None, self._round)

    def features_and_probs(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        both = two_arrays(self._ask(indices, Need("features_and_probs")))
        return (checked_array(both[0], "pool features", None, self._round),
                checked_array(both[1], "pool probabilities", self._axis, self._round))

    def mc_probs(self, indices: np.ndarray, samples: int) -> np.ndarray:
        mc = one_array(self._ask(indices, Need("mc", samples, self._seed)))
        return checked_array(mc, "pool MC-dropout probabilities",
                             None if self._axis is None else 2, self._round)


def check_trained(fit: FitReport, probs: np.ndarray, round_: int) -> None:
    """ConfigError when training did nothing or diverged (never a run of untrained metrics)."""
    if fit.steps == 0:
        raise ConfigError(f"no training step ran in round {round_}; check trainer.batch_size "
                          "and trainer.epochs")
    if not (np.isfinite(fit.train_loss) and np.isfinite(probs).all()):
        raise ConfigError(
            f"the training diverged in round {round_} (train loss {fit.train_loss}, "
            "non-finite predictions); lower trainer.lr (e.g. trainer.lr=1e-3)"
        )


def pool_rows(dataset: ALDataset, pool_x: Images) -> Source:
    """Pool images by index: from the device copy when the pool went there, else the
    dataset's own rows (lazy for a memory-mapped pool); the dataset's pool, by identity."""
    if pool_x is dataset.pool_x:
        return Source((id(dataset), "pool"), dataset.pool_rows, dataset.n_pool, pool_x)
    return Source((id(dataset), "pool"), lambda idx: pool_x[torch.from_numpy(
        np.asarray(idx, dtype=np.int64)).to(pool_x.device)], dataset.n_pool, pool_x)
