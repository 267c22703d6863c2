"""Synthetic CT-like volumes: textured tissue; the rare class holds a round nodule, and many
normal volumes hold a vessel (an elongated tube) that looks like one when seen end-on.

The shape separates the classes (a nodule is nearly round in 3D, a vessel is long); faint
nodules and short, thick vessels overlap, more so with ``difficulty``, as nodule screening
does. Volumes are ``1 x S x S x S`` uint8, deterministic by seed, rendered in chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from al_sim.config.data import SyntheticVolumeDatasetConf
from al_sim.data.base import ALDataset
from al_sim.maths.sampling import flip_labels

_CHUNK_VOXELS = 1 << 22  # voxels rendered at once (16 MB per float32 temporary)
_TISSUE_MEAN, _TISSUE_STD = 0.38, 0.07
_NOISE_SIGMA = 0.03
_CONTRAST_MAX = 0.45
_NODULE_RADIUS = (0.10, 0.20)  # relative to the side
_NODULE_ELONGATION = 1.3  # a nodule's longest axis is at most this times its shortest
_VESSEL_RADIUS = (0.05, 0.09)
_VESSEL_LENGTH = (2.5, 6.0)  # long axis / radius, at difficulty 0
_EDGE = 0.8  # softness of the borders, in voxels
CLASS_NAMES = ["normal", "nodule"]


def _texture(rng: np.random.Generator, n: int, size: int, beta: float) -> np.ndarray:
    """Tissue-like 1/f^beta noise volumes, zero mean and unit std each."""
    f = [np.fft.fftfreq(size)[:, None, None], np.fft.fftfreq(size)[None, :, None],
         np.fft.rfftfreq(size)[None, None, :]]
    radial = np.sqrt(f[0] ** 2 + f[1] ** 2 + f[2] ** 2) + 1.0 / size
    white = rng.standard_normal((n, size, size, size), dtype=np.float32)
    tex = np.fft.irfftn(np.fft.rfftn(white, axes=(1, 2, 3)) / radial**beta, s=(size,) * 3,
                        axes=(1, 2, 3)).astype(np.float32, copy=False)
    tex -= tex.mean(axis=(1, 2, 3), keepdims=True)
    tex /= tex.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    return tex


def _rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random 3D rotation matrices (QR of Gaussian matrices, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    return (q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]).astype(np.float32)


def _ellipsoids(rng: np.random.Generator, size: int, semi_axes: np.ndarray) -> np.ndarray:
    """Soft masks ``n x S x S x S`` of ellipsoids with ``semi_axes`` (voxels), turned at random
    and placed near the centre."""
    n = len(semi_axes)
    centre = size / 2 + rng.uniform(-0.15, 0.15, (n, 3)).astype(np.float32) * size
    rot = _rotations(rng, n)
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"), -1)
    offset = grid.reshape(1, -1, 3) - centre[:, None, :]
    local = np.einsum("npk,nkj->npj", offset, rot)  # coordinates along the ellipsoid's axes
    rho = np.sqrt(((local / semi_axes[:, None, :]) ** 2).sum(-1))
    radius = semi_axes.min(axis=1)[:, None]
    with np.errstate(over="ignore"):
        mask = 1.0 / (1.0 + np.exp((rho - 1.0) * radius / _EDGE))
    return mask.reshape(n, size, size, size)


def _render(rng: np.random.Generator, labels: np.ndarray, size: int,
            difficulty: float) -> np.ndarray:
    """Volumes (uint8, ``n x S x S x S``) for the given classes (0 normal, 1 nodule)."""
    n = len(labels)
    nodule = labels == 1
    vessel = ~nodule & (rng.random(n) < 0.4 + 0.5 * difficulty)
    r = np.where(nodule, rng.uniform(*_NODULE_RADIUS, n), rng.uniform(*_VESSEL_RADIUS, n))
    r = (r * size).astype(np.float32)
    shortest_vessel = _VESSEL_LENGTH[0] - (_VESSEL_LENGTH[0] - 1.4) * difficulty
    length = np.where(nodule, rng.uniform(1.0, _NODULE_ELONGATION, n),
                      rng.uniform(shortest_vessel, _VESSEL_LENGTH[1], n)).astype(np.float32)
    semi_axes = np.stack([r * length, r, r], axis=1)
    faintest = 0.30 - 0.22 * difficulty
    contrast = np.where(nodule | vessel, rng.uniform(faintest, _CONTRAST_MAX, n), 0.0)
    tissue = _TISSUE_MEAN + _TISSUE_STD * _texture(rng, n, size, beta=1.4)
    masks = _ellipsoids(rng, size, semi_axes)
    vol = tissue + contrast.astype(np.float32)[:, None, None, None] * masks
    vol += _NOISE_SIGMA * rng.standard_normal(vol.shape, dtype=np.float32)
    return (np.clip(vol, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate_volumes(n: int, size: int, class_proportions: list[float], difficulty: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Volumes (uint8 ``N x 1 x S x S x S``) and their classes, deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    props = np.asarray(class_proportions, dtype=np.float64)
    props /= props.sum()
    counts = np.floor(props * n).astype(int)
    counts[: n - counts.sum()] += 1
    labels = rng.permutation(np.repeat(np.arange(len(props)), counts))
    volumes = np.empty((n, 1, size, size, size), dtype=np.uint8)
    chunk = max(1, _CHUNK_VOXELS // size**3)
    for start in range(0, n, chunk):
        volumes[start:start + chunk, 0] = _render(rng, labels[start:start + chunk], size,
                                                  difficulty)
    return volumes, labels.astype(np.int64)


def load_synthetic_volume(**cfg: Any) -> ALDataset:
    """Build the synthetic volume dataset from its config (``SyntheticVolumeDatasetConf``)."""
    conf = SyntheticVolumeDatasetConf(**cfg)
    pool_seed, test_seed, noise_seed = np.random.SeedSequence(conf.seed).generate_state(3)
    args = (conf.image_size, list(conf.class_proportions), conf.difficulty)
    pool_x, pool_y = generate_volumes(conf.n_pool, *args, seed=int(pool_seed))
    test_x, test_y = generate_volumes(conf.n_test, *args, seed=int(test_seed))
    if conf.label_noise > 0:
        pool_y = flip_labels(pool_y, conf.label_noise, 2, np.random.default_rng(int(noise_seed)))
    return ALDataset(name=conf.name, pool_x=torch.from_numpy(pool_x), pool_y=pool_y,
                     test_x=torch.from_numpy(test_x), test_y=test_y,
                     class_names=list(CLASS_NAMES))
