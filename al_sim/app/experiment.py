"""One experiment assembled from a validated config: components built, the loop run, sinks closed.

The heavy half of ``python -m al_sim.run`` (torch, the data), imported only
once the configuration has been composed and checked.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from al_sim.app.components import (
    build_dataset,
    build_model,
    build_oracle,
    build_strategy,
    check_input_size,
    check_strategy_task,
)
from al_sim.app.lockstep_hook import trainer_class
from al_sim.app.source_watch import SourceWatch
from al_sim.config.data import PreprocessConf
from al_sim.config.registry import to_object
from al_sim.config.schema import BudgetConf, TrainerConf
from al_sim.core.device import fix_mmap_threshold, start_threads
from al_sim.core.events import ALResult, CallbackList, RunInfo
from al_sim.core.loop import run_active_learning
from al_sim.core.training import resolve_device
from al_sim.data.transforms import Preprocess
from al_sim.models import ALModel
from al_sim.runtime.memory_cap import memory_cap
from al_sim.strategies.initial import initial_policy


def run_experiment(cfg: DictConfig, run: RunInfo, callbacks: CallbackList,
                   threads: int) -> ALResult:
    """Set the sinks up, build every component, run the loop; the sinks close however it ends.

    A human oracle's ``LabelsPending`` propagates after the sinks closed with ``PAUSED``.
    """
    torch.set_num_threads(threads)
    start_threads(threads)  # before the memory cap below
    threadpool_limits(limits=threads)  # numpy/BLAS too (core-set, BADGE, metrics)
    try:
        callbacks.fire("setup", run)
        device = resolve_device(cfg.trainer.device)
        cap = cfg.trainer.memory_limit_fraction if device.type == "cpu" else None
        with memory_cap(cap):  # lifted before the sinks close: closing must not fail for it
            result = _build_and_run(cfg, run, callbacks, device)
    except BaseException as exc:
        callbacks.close(exc)
        raise
    callbacks.close(None)
    return result


def _build_and_run(cfg: DictConfig, run: RunInfo, callbacks: CallbackList,
                   device: torch.device) -> ALResult:
    """Every component built from ``cfg``, then the loop run to its end."""
    strategy = build_strategy(cfg)
    dataset = build_dataset(cfg)
    threshold = cfg.trainer.mapped_pool_mmap_threshold_mb
    if dataset.memory_mapped and threshold is not None:
        fix_mmap_threshold(threshold)  # scoring a pool on disk must not grow the heap
    preprocess = Preprocess(to_object(cfg.dataset.preprocess, PreprocessConf),
                            channels=dataset.image_shape[0], spatial_rank=dataset.spatial_rank)
    trainer = trainer_class()(to_object(cfg.trainer, TrainerConf), preprocess, device,
                              task=dataset.task)
    check_strategy_task(strategy, dataset)
    oracle = build_oracle(cfg, dataset, run.run_dir)

    def model_factory(seed: int) -> ALModel:
        return build_model(cfg.model, dataset.image_shape[0], dataset.n_classes, seed,
                           input_size=dataset.image_shape[-1])

    check_input_size(model_factory, dataset, str(cfg.model.name))
    budget = to_object(cfg.budget, BudgetConf)
    hooks = CallbackList([SourceWatch(), *callbacks])  # first: fail before any sink logs
    return run_active_learning(dataset, model_factory, strategy, oracle, trainer, budget,
                               cfg.seed, hooks, resume=run.resume,
                               initial=initial_policy(budget.initial_selection))
