"""SimpleCNN: conv blocks, global pooling, an embedding layer and a dropout head; 2D, or 3D
for volumes (``model=cnn3d``)."""

from __future__ import annotations

import torch
from torch import nn

from al_sim.config.checks import fraction, positive
from al_sim.models.base import ALModel, DropoutHead
from al_sim.runtime.errors import ConfigError

# convolution, batch norm, max-pool and global pooling per number of spatial axes
_LAYERS: dict[int, tuple[type[nn.Module], ...]] = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d),
}


class SimpleCNN(ALModel):
    """``len(widths)`` blocks of (conv 3x3, BN, ReLU, conv 3x3, BN, ReLU, max-pool 2); 3x3x3
    and 3D pooling with ``spatial_dims=3``."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        widths: list[int],
        hidden: int,
        dropout: float,
        spatial_dims: int = 2,
        name: str = "simple_cnn",
    ) -> None:
        super().__init__()
        if not widths:
            raise ConfigError("model.widths must be a non-empty list of positive ints; e.g. "
                              "model.widths=[16,32,64]")
        if spatial_dims not in _LAYERS:
            raise ConfigError(f"model.spatial_dims must be 2 (images) or 3 (volumes), got "
                              f"{spatial_dims}; set model.spatial_dims=2")
        conv, norm, pool, global_pool = _LAYERS[spatial_dims]
        self.spatial_rank = spatial_dims
        positive("model", hidden=hidden, **{f"widths[{i}]": w for i, w in enumerate(widths)})
        fraction("model", dropout=dropout)
        layers: list[nn.Module] = []
        prev = in_channels
        for width in widths:
            layers += [
                conv(prev, width, 3, padding=1, bias=False),
                norm(width),
                nn.ReLU(inplace=True),
                conv(width, width, 3, padding=1, bias=False),
                norm(width),
                nn.ReLU(inplace=True),
                pool(2),
            ]
            prev = width
        self.trunk = nn.Sequential(*layers, global_pool(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(prev, hidden), nn.ReLU(inplace=True))
        self.classifier = DropoutHead(hidden, n_classes, dropout)
        self.embedding_dim = hidden
        self.n_classes = n_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(z)
