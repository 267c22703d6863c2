"""The ResNet-18 graph as torchvision builds it, without importing torchvision.

Importing torchvision costs a run seconds (it loads its operator library and
``torch._dynamo``; 4 s of a 25 s GPU run on an H100). This module builds the same
network: the same module names (torchvision's ImageNet state dict loads into it),
the same layers, and the same random draws in the same order, so a seed gives
bit-identical weights (``tests/test_resnet.py`` checks both against torchvision).
Adapted from torchvision/models/resnet.py (BSD-3-Clause).
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = (64, 128, 256, 512)  # output channels of layer1..layer4
BLOCKS = (2, 2, 2, 2)  # basic blocks per stage: ResNet-18
STEM_CHANNELS = 64
IMAGENET_CLASSES = 1000  # torchvision's fc layer: built (its draws keep the seed's weights), unused


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18Net(nn.Module):
    """torchvision's ``resnet18(weights=None)``: ImageNet stem, four stages, a 1000-way fc."""

    def __init__(self) -> None:
        super().__init__()
        self.inplanes = STEM_CHANNELS
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(STAGES[0], BLOCKS[0])
        self.layer2 = self._make_layer(STAGES[1], BLOCKS[1], stride=2)
        self.layer3 = self._make_layer(STAGES[2], BLOCKS[2], stride=2)
        self.layer4 = self._make_layer(STAGES[3], BLOCKS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(STAGES[-1], IMAGENET_CLASSES)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (al_sim uses the trunk only)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
