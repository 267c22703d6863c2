"""One experiment assembled from a validated config: components built, the loop run, sinks closed.

The heavy half of ``python -m al_sim.run`` (torch, the data), imported only
once the configuration has been composed and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from al_sim.config.store import instantiate
from al_sim.core.device import fix_mmap_threshold
from al_sim.core.human_oracle import HumanOracle
from al_sim.core.loop import Seeds, run_active_learning
from al_sim.core.oracle import Oracle
from al_sim.core.training import Trainer, resolve_device
from al_sim.data.base import ALDataset
from al_sim.data.transforms import Preprocess
from al_sim.errors import ConfigError, DataError
from al_sim.events import ALResult, CallbackList, RunInfo
from al_sim.models import ALModel, build_model
from al_sim.strategies.base import Strategy
from al_sim.strategies.initial import initial_policy


def build_dataset(cfg: DictConfig) -> ALDataset:
    """The configured dataset (``cfg.dataset._target_``); a human oracle needs no pool labels."""
    extra = {}
    if cfg.oracle.name == "human" and "labels_required" in cfg.dataset:
        extra["labels_required"] = False
    dataset = instantiate(cfg.dataset, _convert_="object", **extra)
    if not isinstance(dataset, ALDataset):
        raise ConfigError(f"dataset._target_={cfg.dataset._target_} did not return an ALDataset")
    return dataset


def build_strategy(cfg: DictConfig) -> Strategy:
    """The configured query strategy (``cfg.strategy._target_``)."""
    strategy = instantiate(cfg.strategy, _convert_="all")
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy._target_={cfg.strategy._target_} is not an al_sim Strategy")
    return strategy


def build_oracle(cfg: DictConfig, dataset: ALDataset, run_dir: Path) -> Oracle | HumanOracle:
    """The configured annotator: simulated (needs every pool label) or a human expert."""
    if cfg.oracle.name == "human":
        root = cfg.dataset.get("root") if "labels_required" in cfg.dataset else None
        return HumanOracle(run_dir, dataset, cfg.oracle.image_size,
                           None if root is None else Path(str(root)).expanduser().resolve())
    if (dataset.pool_y < 0).any():
        raise DataError(f"{dataset.name}: {int((dataset.pool_y < 0).sum())} pool image(s) have "
                        "no label for the simulated oracle to reveal; add them to the labels "
                        "file (dataset.labels_file), or let an expert label them: oracle=human")
    return Oracle(dataset.pool_y, dataset.n_classes, cfg.oracle.noise_rate,
                  seed=Seeds.derive(cfg.seed).oracle)


def check_input_size(model_factory: Callable[[int], ALModel], dataset: ALDataset,
                     model_name: str) -> None:
    """ConfigError when the model cannot take the dataset's images (too small for its pooling)."""
    model = model_factory(0).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *dataset.image_shape))
    except RuntimeError as exc:
        side = dataset.image_shape[1]
        raise ConfigError(
            f"model {model_name} cannot take {side}x{side} images "
            f"({str(exc).splitlines()[0][:200]}); raise dataset.image_size (e.g. 28) or use "
            "a model with less down-sampling"
        ) from None


def run_experiment(cfg: DictConfig, run: RunInfo, callbacks: CallbackList,
                   threads: int) -> ALResult:
    """Set the sinks up, build every component, run the loop; the sinks close however it ends.

    A human oracle's ``LabelsPending`` propagates after the sinks closed with ``PAUSED``.
    """
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy/BLAS too (core-set, BADGE, metrics)
    try:
        callbacks.fire("setup", run)
        strategy = build_strategy(cfg)
        dataset = build_dataset(cfg)
        threshold = cfg.trainer.mapped_pool_mmap_threshold_mb
        if dataset.memory_mapped and threshold is not None:
            fix_mmap_threshold(threshold)  # scoring a pool on disk must not grow the heap
        preprocess = Preprocess(OmegaConf.to_object(cfg.dataset.preprocess),
                                channels=dataset.image_shape[0])
        trainer = Trainer(OmegaConf.to_object(cfg.trainer), preprocess,
                          resolve_device(cfg.trainer.device))
        oracle = build_oracle(cfg, dataset, run.run_dir)

        def model_factory(seed: int) -> ALModel:
            return build_model(cfg.model, dataset.image_shape[0], dataset.n_classes, seed,
                               input_size=dataset.image_shape[-1])

        check_input_size(model_factory, dataset, str(cfg.model.name))
        budget = OmegaConf.to_object(cfg.budget)
        result = run_active_learning(dataset, model_factory, strategy, oracle, trainer, budget,
                                     cfg.seed, callbacks, resume=run.resume,
                                     initial=initial_policy(budget.initial_selection))
    except BaseException as exc:
        callbacks.close(exc)
        raise
    callbacks.close(None)
    return result
