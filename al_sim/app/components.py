"""The run's components built from a validated config: dataset, strategy, oracle and model."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from al_sim.config.annotators import PANEL, PanelOracleConf
from al_sim.config.data import is_folder_dataset
from al_sim.config.derive import locate
from al_sim.config.human import HumanOracleConf
from al_sim.config.registry import instantiate, to_object
from al_sim.core.loop import Seeds
from al_sim.core.oracle import Oracle
from al_sim.core.panel_oracle import PanelOracle
from al_sim.data.base import ALDataset
from al_sim.label.human_oracle import HumanOracle
from al_sim.label.panel import Panel
from al_sim.models import ALModel
from al_sim.runtime.errors import ConfigError, DataError, out_of_memory
from al_sim.strategies.base import MULTILABEL_STRATEGIES, Strategy

# The datasets built while a stack runs in this process, by their resolved config: its
# members share one copy (datasets are read-only to the loop); None outside a stack.
_SHARED: list[dict[str, ALDataset]] = []


@contextlib.contextmanager
def shared_datasets() -> Iterator[None]:
    """While inside: a dataset built once is handed to every later run with the same config."""
    _SHARED.append({})
    try:
        yield
    finally:
        _SHARED.pop()


def build_dataset(cfg: DictConfig) -> ALDataset:
    """The configured dataset (``cfg.dataset._target_``); a human oracle needs no pool labels.
    Inside :func:`shared_datasets`, the copy an earlier run of the stack built."""
    if not _SHARED:
        return _build_dataset(cfg)
    key = OmegaConf.to_yaml(cfg.dataset, resolve=True) + str(cfg.oracle.name)
    if key not in _SHARED[-1]:
        _SHARED[-1][key] = _build_dataset(cfg)
    return _SHARED[-1][key]


def _build_dataset(cfg: DictConfig) -> ALDataset:
    extra = {}
    if cfg.oracle.name == "human" and is_folder_dataset(cfg.dataset):
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


def build_oracle(cfg: DictConfig, dataset: ALDataset, run_dir: Path
                 ) -> Oracle | PanelOracle | HumanOracle:
    """The configured annotator: simulated (one, or a panel: needs every pool label) or a
    human expert."""
    if cfg.oracle.name == "human":
        root = cfg.dataset.get("root") if is_folder_dataset(cfg.dataset) else None
        window = cfg.dataset.get("window") if is_folder_dataset(cfg.dataset) else None
        return HumanOracle(run_dir, dataset, cfg.oracle.image_size,
                           None if root is None else Path(str(root)).expanduser().resolve(),
                           None if window is None else str(window) if isinstance(window, str)
                           else [float(v) for v in window],
                           human_panel(to_object(cfg.oracle, HumanOracleConf), dataset))
    if cfg.oracle.name == PANEL and dataset.multilabel:
        raise ConfigError(
            f"oracle=panel aggregates one class per image and {dataset.name} is "
            f"{dataset.task.kind}; use oracle=simulated (oracle.noise_rate flips findings) "
            "or oracle=human")
    unknown = int((~dataset.task.known(dataset.pool_y)).sum())
    if unknown:
        raise DataError(f"{dataset.name}: {unknown} pool image(s) have "
                        "no label for the simulated oracle to reveal; add them to the labels "
                        "file (dataset.labels_file) or the manifest (dataset.manifest), or let "
                        "an expert label them: oracle=human")
    seed = Seeds.derive(cfg.seed).oracle
    if cfg.oracle.name == PANEL:
        return PanelOracle.from_conf(to_object(cfg.oracle, PanelOracleConf), dataset.pool_y,
                                     dataset.n_classes, seed, volumes=dataset.volumes)
    return Oracle(dataset.pool_y, dataset.n_classes, cfg.oracle.noise_rate, seed=seed,
                  task=dataset.task)


def human_panel(conf: HumanOracleConf, dataset: ALDataset) -> Panel | None:
    """The named annotators of ``oracle=human`` (None: one expert); single-label only."""
    if not conf.panel:
        return None
    if dataset.multilabel:
        raise ConfigError(f"oracle.annotators aggregates one class per image and {dataset.name} "
                          f"is {dataset.task.kind}; label it with one expert "
                          "(oracle.annotators=[])")
    return Panel(conf.readers, conf.annotators_per_image, conf.aggregation, conf.adjudicator,
                 conf.flag_below, conf.idle_cap_s)


def check_strategy_task(strategy: Strategy, dataset: ALDataset) -> None:
    """ConfigError naming the alternatives when ``strategy`` cannot serve the dataset's task."""
    if dataset.multilabel and not strategy.multilabel:
        raise ConfigError(
            f"strategy {strategy.name} scores single-label outputs only and {dataset.name} is "
            f"multi-label; use one of {', '.join(MULTILABEL_STRATEGIES)} (strategy=...)")
    if not dataset.multilabel and not strategy.single_label:
        raise ConfigError(
            f"strategy {strategy.name} needs multi-label data and {dataset.name} is "
            f"{dataset.task.kind}; use e.g. margin, entropy, bald or badge (strategy=...)")


# What torch says when an input is too small for a model's down-sampling (pooling, strided or
# large kernels) or does not match its fixed-size head.
_TOO_SMALL = ("Output size is too small", "Kernel size can't be greater than actual input size",
              "smaller than kernel size", "shapes cannot be multiplied", "size mismatch",
              "Expected more than 1 value per channel")


def check_input_size(model_factory: Callable[[int], ALModel], dataset: ALDataset,
                     model_name: str) -> None:
    """ConfigError when the model cannot take the dataset's images (volumes for a 2D model or
    the reverse, or images too small for its pooling)."""
    model = model_factory(0).eval()
    if model.spatial_rank != dataset.spatial_rank:
        kinds = {2: "2D images", 3: "volumes"}
        fix = "cnn3d or model=resnet18_3d" if dataset.volumes else "simple_cnn or model=resnet18"
        raise ConfigError(
            f"model {model_name} takes {kinds[model.spatial_rank]} and {dataset.name} holds "
            f"{kinds[dataset.spatial_rank]} ({'x'.join(map(str, dataset.image_shape))}); use "
            f"model={fix}")
    try:
        with torch.no_grad():
            model(torch.zeros(2, *dataset.image_shape))
    except RuntimeError as exc:
        if out_of_memory(exc) is not None:  # the images fit the model, not the memory
            raise
        if not any(words in str(exc) for words in _TOO_SMALL):  # the model's own fault: its
            raise  # traceback, not advice about image sizes
        size = "x".join(map(str, dataset.image_shape[1:]))
        raise ConfigError(
            f"model {model_name} cannot take {size} images "
            f"({str(exc).splitlines()[0][:200]}); raise dataset.image_size (e.g. 28) or use "
            "a model with less down-sampling"
        ) from None


def build_model(model_cfg: DictConfig, in_channels: int, n_classes: int, seed: int,
                input_size: int | None = None) -> ALModel:
    """Instantiate the configured model with weights drawn from ``seed``.

    ``input_size`` (the image side) reaches models whose constructor takes an
    ``input_size`` argument (ResNet-18 picks its stem from it); others never see it.
    """
    supplied: dict[str, int] = {"in_channels": in_channels, "n_classes": n_classes}
    if input_size is not None and _takes_input_size(str(model_cfg._target_)):
        supplied["input_size"] = input_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(model_cfg, **supplied, _convert_="all")
    if not isinstance(model, ALModel):
        raise ConfigError(
            f"model._target_={model_cfg._target_} does not build an al_sim ALModel "
            "(it must expose features() and head())"
        )
    return model


def _takes_input_size(target: str) -> bool:
    obj = locate(target)
    return "input_size" in inspect.signature(obj).parameters
