"""Batch preprocessing: uint8 -> normalised float, plus optional train-time augmentation.

Works on whole batches of tensors on the training device, never on per-sample
PIL images. Normalisation uses torchvision ``transforms.v2``; augmentation
draws its parameters per image (``v2`` transforms draw once per call, which
would flip or rotate a whole batch alike) and applies them in one batched
``grid_sample``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from al_sim.config.data import PreprocessConf
from al_sim.errors import ConfigError


class Preprocess:
    """Turns a uint8 batch ``B x C x H x W`` into the model's float input."""

    def __init__(self, conf: PreprocessConf, channels: int) -> None:
        mean, std = list(conf.mean), list(conf.std)
        if len(mean) == 1 and channels > 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels:
            raise ConfigError(
                f"dataset.preprocess.mean has {len(mean)} values but the images have "
                f"{channels} channel(s); give 1 or {channels} values"
            )
        self._normalise = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]
        )
        self._conf = conf

    @property
    def augments(self) -> bool:
        """Whether training batches are augmented."""
        c = self._conf
        return c.hflip or c.vflip or c.rotation_degrees > 0 or c.random_resized_crop_scale < 1

    def __call__(
        self, batch: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Normalised float batch; augmented when ``train`` and augmentation is configured."""
        x = self._normalise(batch)
        if train and self.augments:
            x = self._augment(x, generator)
        return x

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        c, n = self._conf, x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator).mul_(high - low).add_(low)

        sx, sy = torch.ones(n), torch.ones(n)
        if c.hflip:
            sx = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        if c.vflip:
            sy = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        angle = uniform(-c.rotation_degrees, c.rotation_degrees) * (math.pi / 180)
        zoom = uniform(c.random_resized_crop_scale, 1.0).sqrt_()
        shift_room = 1.0 - zoom
        tx, ty = uniform(-1, 1) * shift_room, uniform(-1, 1) * shift_room
        cos, sin = angle.cos() * zoom, angle.sin() * zoom
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, tx], dim=1),
                torch.stack([sin * sx, cos * sy, ty], dim=1),
            ],
            dim=1,
        ).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)
