"""Matplotlib figures: a run's learning curve and grids of the images a round picked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from al_sim.runtime.files import atomic_write  # noqa: E402

TILE_IN = (1.3, 1.45)  # a query-grid tile's width and height in inches, its caption included
GRID_DPI = 90
OVERSAMPLE = 2  # image pixels kept per drawn pixel of a tile
# The learning curve's axes in figure fractions, room for its labels and one-line title: fixed,
# as tight_layout's extra drawing pass cost a third of the plot's time (every run pays it).
CURVE_MARGINS = {"left": 0.11, "right": 0.97, "bottom": 0.12, "top": 0.92}


def learning_curve(
    n_labeled: Sequence[int], curves: dict[str, Sequence[float]], path: Path, title: str = ""
) -> Path:
    """Plot each metric in ``curves`` against the labelled count and save a PNG."""
    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.add_subplot()
    for name, values in curves.items():
        ax.plot(n_labeled, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test metric")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.subplots_adjust(**CURVE_MARGINS)
    return _save(fig, path)


def query_grid(
    images: np.ndarray | Sequence[np.ndarray],
    captions: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """Save a grid of uint8 images ``C x H x W`` with one caption each; a volume
    (``C x D x H x W``) is shown as its three orthogonal mid slices side by side.

    Each image is first cut to :func:`thumbnail` size, so large images cost what the drawn
    tiles need. The tiles go into one mosaic drawn on a single axes: one image artist
    instead of one axes per tile keeps this cheap enough to run every round.
    """
    tiles = [thumbnail(img) for img in images]
    tiles = [mid_slices(t) if t.ndim == 4 else t for t in tiles]
    n = len(tiles)
    c, h, w = (max(t.shape[i] for t in tiles) for i in range(3)) if n else (1, 1, 3)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    pad, band = max(2, h // 14), max(8, h // 2)  # gap between tiles, caption band under each
    mosaic = np.full((rows * (h + pad + band), cols * (w + pad), c), 255, dtype=np.uint8)
    for i, img in enumerate(tiles):
        r, q = divmod(i, cols)
        y, x = r * (h + pad + band), q * (w + pad)
        th, tw = img.shape[1:]
        mosaic[y : y + th, x : x + tw] = np.transpose(img, (1, 2, 0))
    tile_w, tile_h = TILE_IN
    head = 0.16 * (title.count("\n") + 1) + 0.1 if title else 0.0  # inches for the title
    fig = Figure(figsize=(tile_w * cols, tile_h * rows + head), dpi=GRID_DPI)
    ax = fig.add_axes((0, 0, 1, 1 - head / (tile_h * rows + head)))
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray" if c == 1 else None,
              vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    for i, caption in enumerate(captions[:n]):
        r, q = divmod(i, cols)
        ax.text(q * (w + pad) + w / 2, r * (h + pad + band) + h + 1, caption, fontsize=5.5,
                ha="center", va="top")
    if title:
        fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """``image`` (``C x H x W``, or a ``C x D x H x W`` volume) strided to at most
    ``OVERSAMPLE`` pixels per pixel its grid tile is drawn with: a view, not a copy."""
    drawn = int(TILE_IN[0] * GRID_DPI)
    across = max(image.shape[1:]) * (3 if image.ndim == 4 else 1)  # a volume: 3 slices across
    step = max(1, math.ceil(across / (OVERSAMPLE * drawn)))
    return image[(slice(None),) + (slice(None, None, step),) * (image.ndim - 1)]


def mid_slices(volume: np.ndarray) -> np.ndarray:
    """The axial, coronal and sagittal mid slices of a ``C x D x H x W`` volume, side by side
    (``C x S x 3S``, each slice centred on a white ``S x S`` tile, S the longest side)."""
    c, d, h, w = volume.shape
    side = max(d, h, w)
    tiles = np.full((c, side, 3 * side), 255, dtype=np.uint8)
    planes = (volume[:, d // 2], volume[:, :, h // 2], volume[:, :, :, w // 2])
    for i, plane in enumerate(planes):
        ph, pw = plane.shape[1:]
        y, x = (side - ph) // 2, i * side + (side - pw) // 2
        tiles[:, y : y + ph, x : x + pw] = plane
    return tiles


def _save(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as ``path`` atomically, so a reader never sees half a PNG."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
