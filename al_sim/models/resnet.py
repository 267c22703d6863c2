"""ResNet-18 from torchvision (random init), adapted to small medical images."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from al_sim.config.checks import fraction
from al_sim.models.base import ALModel, DropoutHead


class ResNet18(ALModel):
    """torchvision ResNet-18 trunk (512-d after global pooling) and a dropout head.

    ``small_input_stem`` swaps the 7x7 stride-2 stem and its max-pool for a 3x3
    stride-1 convolution, as the MedMNIST paper does for 28 px inputs, so the
    last stage still sees 4x4 maps at 28 px instead of 1x1.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        dropout: float,
        small_input_stem: bool,
        name: str = "resnet18",
    ) -> None:
        super().__init__()
        fraction("model", dropout=dropout)
        net = resnet18(weights=None)
        if small_input_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.trunk = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool,
            net.layer1, net.layer2, net.layer3, net.layer4,
            net.avgpool, nn.Flatten(),
        )
        self.classifier = DropoutHead(net.fc.in_features, n_classes, dropout)
        self.embedding_dim = net.fc.in_features
        self.n_classes = n_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """512-d embedding after global average pooling."""
        return self.trunk(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings (dropout then linear)."""
        return self.classifier(z)
