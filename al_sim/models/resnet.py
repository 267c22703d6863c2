"""ResNet-18 from torchvision: a stem chosen for the input size, optional ImageNet weights."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from al_sim.config.checks import fraction, positive
from al_sim.models.base import ALModel, DropoutHead
from al_sim.models.pretrained import imagenet_state_dict, load_trunk
from al_sim.runtime.errors import ConfigError

AUTO = "auto"


def small_stem(choice: bool | str, input_size: int | None, small_stem_max_size: int) -> bool:
    """Whether the 3x3 stride-1 stem is used: ``auto`` picks it up to ``small_stem_max_size`` px.

    Without a known ``input_size`` (the config check builds the model with no
    data) ``auto`` means the small stem.
    """
    if isinstance(choice, bool):
        return choice
    if str(choice).lower() != AUTO:
        raise ConfigError(f"model.small_input_stem must be auto, true or false, got {choice!r}")
    return input_size is None or input_size <= small_stem_max_size


class ResNet18(ALModel):
    """torchvision ResNet-18 trunk (512-d after global pooling) and a dropout head.

    The small-input stem (a 3x3 stride-1 convolution, no max-pool, as the
    MedMNIST paper uses at 28 px) keeps 4x4 maps in the last stage at 28 px;
    the ImageNet stem (7x7 stride 2 and a max-pool) divides the resolution by 4
    first, the right choice at 128-224 px. ``small_input_stem=auto`` picks the
    small stem up to ``small_stem_max_size`` px and the ImageNet stem above.
    ``pretrained`` loads torchvision's ImageNet weights from the local torch
    cache (see :mod:`al_sim.models.pretrained`); 1-channel images get the RGB
    filters summed; with the small stem the first convolution stays random.
    ``input_size`` is the image side, supplied from the data, not configured.
    """

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
        name: str = "resnet18",
    ) -> None:
        super().__init__()
        fraction("model", dropout=dropout)
        positive("model", small_stem_max_size=small_stem_max_size)
        small = small_stem(small_input_stem, input_size, small_stem_max_size)
        state = imagenet_state_dict() if pretrained else None
        net = resnet18(weights=None)
        if small:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if state is not None:
            load_trunk(net, state, in_channels, small, "conv1.weight", "ImageNet", "ResNet-18")
        self.trunk = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool,
            net.layer1, net.layer2, net.layer3, net.layer4,
            net.avgpool, nn.Flatten(),
        )
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

