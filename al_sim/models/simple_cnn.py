"""SimpleCNN: conv blocks, global pooling, an embedding layer and a dropout head."""

from __future__ import annotations

import torch
from torch import nn

from al_sim.config.checks import fraction, positive
from al_sim.models.base import ALModel, DropoutHead
from al_sim.runtime.errors import ConfigError


class SimpleCNN(ALModel):
    """``len(widths)`` blocks of (conv 3x3, BN, ReLU, conv 3x3, BN, ReLU, max-pool 2)."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        widths: list[int],
        hidden: int,
        dropout: float,
        name: str = "simple_cnn",
    ) -> None:
        super().__init__()
        if not widths:
            raise ConfigError("model.widths must be a non-empty list of positive ints")
        positive("model", hidden=hidden, **{f"widths[{i}]": w for i, w in enumerate(widths)})
        fraction("model", dropout=dropout)
        layers: list[nn.Module] = []
        prev = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(prev, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            prev = width
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(prev, hidden), nn.ReLU(inplace=True))
        self.classifier = DropoutHead(hidden, n_classes, dropout)
        self.embedding_dim = hidden
        self.n_classes = n_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(z)
