"""Batch preprocessing: uint8 -> normalised float, plus optional train-time augmentation.

Works on whole batches of tensors on the training device, never on per-sample PIL images,
of images (``B x C x H x W``) and volumes (``B x C x D x H x W``) alike. Normalisation is
``transforms.v2``'s arithmetic without its dispatch; augmentation draws its parameters per
image (``v2`` transforms draw once per call, which would flip or rotate a whole batch alike)
and applies them in one batched ``grid_sample`` (for volumes: flips on each axis, in-plane
rotation, zoom, shifts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from al_sim.config.data import PreprocessConf
from al_sim.runtime.errors import ConfigError


class Preprocess:
    """Turns a uint8 batch ``B x C x H x W`` (or ``B x C x D x H x W``) into the model's
    float input."""

    def __init__(self, conf: PreprocessConf, channels: int, spatial_rank: int = 2) -> None:
        if spatial_rank not in (2, 3):
            raise ConfigError(f"images must have 2 or 3 spatial axes, got {spatial_rank}")
        if conf.dflip and spatial_rank == 2:
            raise ConfigError("dataset.preprocess.dflip flips volumes along their slice axis; "
                              "these are 2D images: set dataset.preprocess.dflip=false")
        mean, std = list(conf.mean), list(conf.std)
        if len(mean) == 1 and channels > 1:
            mean, std = mean * channels, std * channels
        if len(mean) != channels:
            raise ConfigError(
                f"dataset.preprocess.mean has {len(mean)} values but the images have "
                f"{channels} channel(s); give 1 or {channels} values"
            )
        per_channel = (-1,) + (1,) * spatial_rank  # broadcast over the spatial axes
        self._mean = torch.tensor(mean, dtype=torch.float32).view(per_channel)
        self._std = torch.tensor(std, dtype=torch.float32).view(per_channel)
        # fused: x * scale + shift == (x / 255 - mean) / std up to float rounding
        self._scale = (1.0 / (255.0 * self._std)).float()
        self._shift = (-self._mean / self._std).float()
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._conf = conf
        self.spatial_rank = spatial_rank

    @property
    def augments(self) -> bool:
        """Whether training batches are augmented."""
        c = self._conf
        return (c.hflip or c.vflip or c.dflip or c.rotation_degrees > 0
                or c.random_resized_crop_scale < 1)

    def __call__(
        self, batch: torch.Tensor, train: bool = False, generator: torch.Generator | None = None,
        fused: bool = False,
    ) -> torch.Tensor:
        """Normalised float batch on ``batch``'s device; augmented when ``train`` asks for it.

        The default path does what ``v2.ToDtype(scale=True)`` + ``v2.Normalize`` do, op for op
        (same float results) without their per-call dispatch; ``fused`` does one multiply-add.
        """
        x = self.normalise(batch, fused)
        if train and self.augments:
            x = self._augment(x, generator)
        return x

    def normalise(self, batch: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """uint8 ``B x C x H x W`` (``B x C x D x H x W``) -> normalised float32, on the
        batch's device."""
        if batch.ndim != self.spatial_rank + 2:
            raise ConfigError(f"a batch of shape {tuple(batch.shape)} reached a preprocess "
                              f"built for {self.spatial_rank}D images")
        if batch.device not in self._on:
            self._on[batch.device] = tuple(
                t.to(batch.device) for t in (self._mean, self._std, self._scale, self._shift)
            )
        mean, std, scale, shift = self._on[batch.device]
        if batch.is_floating_point():  # as v2.ToDtype: float input is not rescaled
            return batch.to(torch.float32).sub(mean).div_(std)
        x = batch.to(torch.float32)
        if fused:
            return x.mul_(scale).add_(shift)
        return x.mul_(1.0 / 255).sub_(mean).div_(std)

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.spatial_rank == 3:
            return self._augment_volumes(x, generator)
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

    def _augment_volumes(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per volume: flips on each enabled axis, an in-plane rotation, a zoom and shifts."""
        c, n = self._conf, x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator).mul_(high - low).add_(low)

        def flip(on: bool) -> torch.Tensor:
            return torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if on else torch.ones(n)

        sx, sy, sz = flip(c.hflip), flip(c.vflip), flip(c.dflip)  # W, H, D
        angle = uniform(-c.rotation_degrees, c.rotation_degrees) * (math.pi / 180)
        zoom = uniform(c.random_resized_crop_scale, 1.0).pow_(1 / 3)  # a share of the volume
        room = 1.0 - zoom
        tx, ty, tz = uniform(-1, 1) * room, uniform(-1, 1) * room, uniform(-1, 1) * room
        cos, sin, zero = angle.cos() * zoom, angle.sin() * zoom, torch.zeros(n)
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, zero, tx], dim=1),
                torch.stack([sin * sx, cos * sy, zero, ty], dim=1),
                torch.stack([zero, zero, zoom * sz, tz], dim=1),
            ],
            dim=1,
        ).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)
