"""3D ResNet-18 for volumes: torchvision's video ResNet (``r3d_18``) with a stem chosen for the
input size and optional Kinetics-400 weights from the local torch cache."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.video import R3D_18_Weights, r3d_18

from al_sim.config.checks import fraction, positive
from al_sim.models.base import ALModel, DropoutHead
from al_sim.models.pretrained import cached_state_dict, load_trunk
from al_sim.models.resnet import small_stem

WEIGHTS = R3D_18_Weights.KINETICS400_V1


class ResNet18_3D(ALModel):  # noqa: N801 - the name torchvision's model goes by
    """torchvision ``r3d_18`` trunk (512-d after global pooling) and a dropout head.

    Small volumes (up to ``small_stem_max_size`` voxels a side with ``small_input_stem=auto``,
    e.g. MedMNIST's 28^3) get a 3x3x3 stride-1 stem, as MedMNIST's 3D baselines do, so the
    last stage still sees 4^3 maps; larger ones keep the video stem (3x7x7, in-plane stride 2).
    ``pretrained``: the Kinetics-400 weights from the local torch cache (never downloaded);
    1-channel volumes get the RGB filters summed; with the small stem its first convolution
    stays random. ``input_size`` is the volume's side, supplied from the data.
    """

    spatial_rank = 3

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        dropout: float,
        small_input_stem: bool | str,
        small_stem_max_size: int,
        pretrained: bool,
        input_size: int | None = None,
        name: str = "resnet18_3d",
    ) -> None:
        super().__init__()
        fraction("model", dropout=dropout)
        positive("model", small_stem_max_size=small_stem_max_size)
        small = small_stem(small_input_stem, input_size, small_stem_max_size)
        state = cached_state_dict(WEIGHTS, "R3D-18", "Kinetics-400") if pretrained else None
        net = r3d_18(weights=None)
        if small:
            net.stem[0] = nn.Conv3d(in_channels, 64, kernel_size=3, stride=1, padding=1,
                                    bias=False)
        elif in_channels != 3:
            net.stem[0] = nn.Conv3d(in_channels, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2),
                                    padding=(1, 3, 3), bias=False)
        nn.init.kaiming_normal_(net.stem[0].weight, mode="fan_out", nonlinearity="relu")
        if state is not None:
            load_trunk(net, state, in_channels, small, "stem.0.weight", "Kinetics", "R3D-18")
        self.trunk = nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4,
                                   net.avgpool, nn.Flatten())
        self.classifier = DropoutHead(net.fc.in_features, n_classes, dropout)
        self.embedding_dim = net.fc.in_features
        self.n_classes = n_classes
        self.small_input_stem = small

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """512-d embedding after global average pooling."""
        return self.trunk(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings (dropout then linear)."""
        return self.classifier(z)

