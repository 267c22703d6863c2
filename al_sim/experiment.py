"""One experiment assembled from a validated config: components built, the loop run, sinks closed.

The heavy half of ``python -m al_sim.run`` (torch, the data), imported only
once the configuration has been composed and checked.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from al_sim.config.store import instantiate
from al_sim.core.loop import Seeds, run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.core.training import Trainer, resolve_device
from al_sim.data.base import ALDataset
from al_sim.data.transforms import Preprocess
from al_sim.errors import ConfigError
from al_sim.events import ALResult, CallbackList, RunInfo
from al_sim.models import ALModel, build_model
from al_sim.strategies.base import Strategy
from al_sim.strategies.initial import initial_policy


def build_dataset(cfg: DictConfig) -> ALDataset:
    """The configured dataset (``cfg.dataset._target_``)."""
    dataset = instantiate(cfg.dataset, _convert_="object")
    if not isinstance(dataset, ALDataset):
        raise ConfigError(f"dataset._target_={cfg.dataset._target_} did not return an ALDataset")
    return dataset


def build_strategy(cfg: DictConfig) -> Strategy:
    """The configured query strategy (``cfg.strategy._target_``)."""
    strategy = instantiate(cfg.strategy, _convert_="all")
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy._target_={cfg.strategy._target_} is not an al_sim Strategy")
    return strategy


def run_experiment(cfg: DictConfig, run: RunInfo, callbacks: CallbackList,
                   threads: int) -> ALResult:
    """Set the sinks up, build every component, run the loop; the sinks close however it ends."""
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy/BLAS too (core-set, BADGE, metrics)
    try:
        callbacks.fire("setup", run)
        strategy = build_strategy(cfg)
        dataset = build_dataset(cfg)
        preprocess = Preprocess(OmegaConf.to_object(cfg.dataset.preprocess),
                                channels=dataset.image_shape[0])
        trainer = Trainer(OmegaConf.to_object(cfg.trainer), preprocess,
                          resolve_device(cfg.trainer.device))
        oracle = Oracle(dataset.pool_y, dataset.n_classes, cfg.oracle.noise_rate,
                        seed=Seeds.derive(cfg.seed).oracle)

        def model_factory(seed: int) -> ALModel:
            return build_model(cfg.model, dataset.image_shape[0], dataset.n_classes, seed,
                               input_size=dataset.image_shape[-1])

        budget = OmegaConf.to_object(cfg.budget)
        result = run_active_learning(dataset, model_factory, strategy, oracle, trainer, budget,
                                     cfg.seed, callbacks, resume=run.resume,
                                     initial=initial_policy(budget.initial_selection))
    except BaseException as exc:
        callbacks.close(exc)
        raise
    callbacks.close(None)
    return result
