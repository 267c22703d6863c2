"""Models exposing ``features()`` and logits; built from ``conf/model`` by ``build_model``."""

from __future__ import annotations

import inspect

import torch
from omegaconf import DictConfig

from al_sim.config.derive import locate
from al_sim.config.store import instantiate
from al_sim.errors import ConfigError
from al_sim.models.base import ALModel


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


__all__ = ["ALModel", "build_model"]
