"""torchvision's ImageNet weights, read from the local torch cache only (never downloaded).

The file is the one ``torchvision.models.resnet18(weights="IMAGENET1K_V1")``
would download: ``<torch.hub.get_dir()>/checkpoints/resnet18-f37072fd.pth``
(``$TORCH_HOME/hub/checkpoints/`` when ``TORCH_HOME`` is set). It is loaded
with ``weights_only=True`` once per process and kept, so building a model
each round (or once more while the config is checked) reads it once.
"""

from __future__ import annotations

import logging
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torchvision.models import ResNet18_Weights

from al_sim.runtime.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


def weights_path(weights: Any = WEIGHTS) -> Path:
    """Where torchvision's ``weights`` must lie: torch's hub cache, as torchvision keeps them."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[1]


@lru_cache(maxsize=2)
def _load(path: str, mtime_ns: int, size: int, url: str, what: str
          ) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(
            f"{path} is not a readable {what} state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); replace it with {url}"
        ) from exc
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict; replace "
                          f"it with {url}")
    return state


def cached_state_dict(weights: Any, what: str, trained_on: str) -> dict[str, torch.Tensor]:
    """torchvision's ``weights`` (of the model ``what``, trained on ``trained_on``) from the
    local cache; ConfigError if absent."""
    path = weights_path(weights)
    if not path.is_file():
        raise ConfigError(
            f"model.pretrained=true needs torchvision's {trained_on} {what} weights at {path} "
            f"(al_sim never downloads them): fetch {weights.url} on a machine with internet and "
            "copy it there (TORCH_HOME=<dir> reads <dir>/hub/checkpoints/ instead), or set "
            "model.pretrained=false"
        )
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size, weights.url, what)


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 state dict from the local cache; ConfigError if absent."""
    return cached_state_dict(WEIGHTS, "ResNet-18", "ImageNet")


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained RGB filters ``64 x 3 x k x k`` (``x k`` more for 3D) for ``in_channels``
    inputs.

    One channel: the sum over RGB, so a grey image gives the response the RGB
    filters give to that image repeated in all three channels.
    """
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    raise ConfigError(f"model.pretrained=true takes 1- or 3-channel images, got {in_channels} "
                      "channels; set model.pretrained=false")


def load_trunk(net: torch.nn.Module, state: dict[str, torch.Tensor], in_channels: int,
               small: bool, first: str, source: str, model: str) -> None:
    """Copy pretrained weights (trained on ``source``) into every layer of torchvision's
    ``model`` but its fc; its first convolution ``first`` adapted to ``in_channels``, or left
    random under a small-input stem (the pretrained filters do not fit it)."""
    trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if small:
        trunk.pop(first, None)
        log.info("model.pretrained: the small-input stem's first convolution stays random "
                 "(set model.small_input_stem=false to use the %s stem's filters)", source)
    elif first in trunk:
        trunk[first] = adapt_first_conv(trunk[first], in_channels)
    try:
        missing, unexpected = net.load_state_dict(trunk, strict=False)
    except RuntimeError as exc:
        raise ConfigError(f"the {source} weights do not fit {model} ({str(exc).splitlines()[0]}"
                          f"...); replace the file with torchvision's {model} weights") from exc
    missing = [k for k in missing if not k.startswith("fc.") and not (small and k == first)]
    if missing or unexpected:
        raise ConfigError(f"the {source} weights are not torchvision's {model} (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}); replace the file")
