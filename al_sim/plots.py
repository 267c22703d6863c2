"""Matplotlib figures: a run's learning curve and grids of the images a round picked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curve(
    n_labeled: Sequence[int], curves: dict[str, Sequence[float]], path: Path, title: str = ""
) -> Path:
    """Plot each metric in ``curves`` against the labelled count and save a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, values in curves.items():
        ax.plot(n_labeled, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test metric")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def query_grid(
    images: np.ndarray,
    captions: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """Save a grid of uint8 images ``N x C x H x W`` with one caption each."""
    n = len(images)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.55 * rows + 0.4), dpi=100,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, caption in zip(axes.ravel(), images, captions, strict=False):
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(np.transpose(img, (1, 2, 0)))
        ax.set_title(caption, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
