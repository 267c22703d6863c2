"""Synthetic chest radiographs with several findings at once: the offline multi-label default.

Each image is a frontal "chest": two dark lung fields beside a bright
mediastinum, a heart shadow and tissue texture. Four findings, drawn per image:
``cardiomegaly`` (an enlarged heart shadow), ``effusion`` (the base of a lung
whitened, more likely with cardiomegaly: the two co-occur), ``opacity`` (a
diffuse patch in a lung) and ``nodule`` (a small bright spot, rare).
``difficulty`` lowers the findings' contrast and adds anatomy variation, so a
share of images is ambiguous. Vectorised numpy, deterministic by seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from al_sim.config.data import SyntheticChestDatasetConf
from al_sim.data.base import ALDataset
from al_sim.maths.sampling import flip_bits
from al_sim.maths.task import TaskType

FINDINGS = ("cardiomegaly", "effusion", "opacity", "nodule")
_HEART = (0.16, 0.25)  # heart radius (normal, enlarged), relative to the image size
_CONTRAST = 0.35  # a finding's brightness at difficulty 0
_NOISE_SIGMA = 0.04


def draw_findings(n: int, prevalence: list[float], co_occurrence: float,
                  rng: np.random.Generator) -> np.ndarray:
    """``n x 4`` finding bits: each with its prevalence, effusion with probability
    ``co_occurrence`` where cardiomegaly is present."""
    p = np.asarray(prevalence, dtype=np.float64)
    y = (rng.random((n, len(FINDINGS))) < p).astype(np.int64)
    with_heart = y[:, 0] == 1
    y[with_heart, 1] = (rng.random(int(with_heart.sum())) < co_occurrence).astype(np.int64)
    return y


def _render(y: np.ndarray, size: int, difficulty: float, rng: np.random.Generator) -> np.ndarray:
    n = len(y)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    jitter = 1.0 + 0.15 * difficulty * rng.standard_normal((n, 1, 1))
    img = 0.75 - 0.1 * yy[None] * jitter  # brighter towards the abdomen
    lung_x = 0.45 + 0.05 * difficulty * rng.standard_normal((n, 1, 1))
    lungs = []
    for side in (-1, 1):
        lung = ((xx[None] - side * lung_x) / 0.32) ** 2 + ((yy[None] + 0.1) / 0.7) ** 2 < 1
        lungs.append(lung)
        img = img - 0.45 * lung
    contrast = _CONTRAST * (1.0 - 0.75 * difficulty) * rng.uniform(0.6, 1.4, (n, 1, 1))
    heart_r = np.where(y[:, 0:1, None] == 1, _HEART[1], _HEART[0]) * 2
    heart_r = heart_r + 0.06 * difficulty * rng.standard_normal((n, 1, 1))
    heart = ((xx[None] + 0.1) ** 2 + (yy[None] - 0.3) ** 2) < heart_r**2
    img = img + 0.3 * heart
    base = np.clip((yy[None] - 0.25) / 0.4, 0, 1)  # the lung bases fill first
    img = img + contrast * y[:, 1, None, None] * base * lungs[0]
    cx = rng.uniform(-0.7, 0.7, (n, 1, 1))
    cy = rng.uniform(-0.5, 0.3, (n, 1, 1))
    patch = np.exp(-((xx[None] - cx) ** 2 + (yy[None] - cy) ** 2) / 0.08)
    img = img + contrast * y[:, 2, None, None] * patch * (lungs[0] | lungs[1])
    nx = rng.choice([-1, 1], (n, 1, 1)) * rng.uniform(0.3, 0.6, (n, 1, 1))
    ny = rng.uniform(-0.5, 0.2, (n, 1, 1))
    spot = ((xx[None] - nx) ** 2 + (yy[None] - ny) ** 2) < (2.5 / size + 0.06) ** 2
    img = img + 1.5 * contrast * y[:, 3, None, None] * spot
    img = img + _NOISE_SIGMA * (1 + difficulty) * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)[:, None]


def generate_chest(n: int, size: int, prevalence: list[float], co_occurrence: float,
                   difficulty: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images ``n x 1 x size x size`` and their ``n x 4`` finding bits."""
    rng = np.random.default_rng(seed)
    y = draw_findings(n, prevalence, co_occurrence, rng)
    return _render(y, size, difficulty, rng), y


def load_synthetic_chest(**cfg: Any) -> ALDataset:
    """Build the dataset from its config fields (see ``SyntheticChestDatasetConf``)."""
    conf = SyntheticChestDatasetConf(**cfg)
    pool_seed, test_seed, noise_seed = np.random.SeedSequence(conf.seed).generate_state(3)
    args = (conf.image_size, list(conf.prevalence), conf.co_occurrence, conf.difficulty)
    pool_x, pool_y = generate_chest(conf.n_pool, *args, seed=int(pool_seed))
    test_x, test_y = generate_chest(conf.n_test, *args, seed=int(test_seed))
    if conf.label_noise > 0:
        pool_y = flip_bits(pool_y, conf.label_noise, np.random.default_rng(int(noise_seed)))
    return ALDataset(name=conf.name, pool_x=torch.from_numpy(pool_x), pool_y=pool_y,
                     test_x=torch.from_numpy(test_x), test_y=test_y,
                     class_names=list(FINDINGS), task_type=TaskType.multilabel)
