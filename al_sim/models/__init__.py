"""Models exposing ``features()`` and logits; built from ``conf/model`` by ``build_model``."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from al_sim.config.store import instantiate
from al_sim.errors import ConfigError
from al_sim.models.base import ALModel


def build_model(model_cfg: DictConfig, in_channels: int, n_classes: int, seed: int) -> ALModel:
    """Instantiate the configured model with weights drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(
            model_cfg, in_channels=in_channels, n_classes=n_classes, _convert_="all"
        )
    if not isinstance(model, ALModel):
        raise ConfigError(
            f"model._target_={model_cfg._target_} does not build an al_sim ALModel "
            "(it must expose features() and head())"
        )
    return model


__all__ = ["ALModel", "build_model"]
