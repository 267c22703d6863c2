"""Seeded draws over labels: stratified subsets and label flips (the one copy of each)."""

from __future__ import annotations

import numpy as np


def stratified_sample(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``k`` items in the class shares of ``y`` (each class >= 1 if k allows).

    Largest-remainder quotas; ``k >= len(y)`` returns every index.
    """
    y = np.asarray(y)
    if k >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = counts / counts.sum() * k
    take = np.floor(quota).astype(int)
    if k >= len(classes):
        take = np.maximum(take, 1)
    while take.sum() > k:  # trim the classes most above their quota (never below 1)
        take[np.argmax(np.where(take > 1, take - quota, -np.inf))] -= 1
    while take.sum() < k:  # top up the classes most below their quota
        take[np.argmax(np.where(take < counts, quota - take, -np.inf))] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=t, replace=False)
              for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def flip_labels(labels: np.ndarray, rate: float, n_classes: int,
                rng: np.random.Generator) -> np.ndarray:
    """A copy of ``labels`` with a ``rate`` share flipped to another class (draws from ``rng``)."""
    out = np.array(labels, dtype=np.int64)
    if rate <= 0 or n_classes < 2:
        return out
    flip = rng.random(len(out)) < rate
    shift = rng.integers(1, n_classes, size=int(flip.sum()))
    out[flip] = (out[flip] + shift) % n_classes
    return out


def flip_bits(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of the 0/1 matrix ``labels`` with each bit flipped with probability ``rate``."""
    out = np.array(labels, dtype=np.int64)
    if rate <= 0:
        return out
    flip = rng.random(out.shape) < rate
    out[flip] = 1 - out[flip]
    return out
