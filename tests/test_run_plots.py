"""Query grids: large images are cut to the size their tiles are drawn at."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import matplotlib.image
import numpy as np

from al_sim.sinks.run_plots import GRID_DPI, OVERSAMPLE, TILE_IN, query_grid, thumbnail

MOST = OVERSAMPLE * int(TILE_IN[0] * GRID_DPI)  # pixels across a tile keeps at most


def test_a_large_image_is_thinned_to_its_tile_and_a_small_one_kept() -> None:
    big = np.zeros((1, 4000, 3000), dtype=np.uint8)
    thin = thumbnail(big)
    assert np.shares_memory(thin, big)  # a view: nothing copied
    assert MOST // 2 < max(thin.shape[1:]) <= MOST
    assert thumbnail(np.zeros((3, 28, 28), dtype=np.uint8)).shape == (3, 28, 28)
    volume = thumbnail(np.zeros((1, 200, 200, 200), dtype=np.uint8))
    assert 3 * max(volume.shape[1:]) <= MOST  # three mid slices side by side in one tile


def peak_bytes(images: np.ndarray | list[np.ndarray], path: Path) -> int:
    """The most memory Python held while drawing a query grid of ``images``."""
    tracemalloc.start()
    try:
        query_grid(images, [f"#{i}" for i in range(len(images))], path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_grid_of_large_images_costs_what_its_tiles_need(tmp_path: Path) -> None:
    pool = np.random.default_rng(0).integers(0, 255, (8, 1, 4000, 4000), dtype=np.uint8)
    tile_size = pool[:, :, :MOST, :MOST]
    peak_bytes(tile_size, tmp_path / "warm.png")  # matplotlib's first-draw caches
    big = peak_bytes([pool[i] for i in range(8)], tmp_path / "big.png")  # views of the pool
    small = peak_bytes(tile_size, tmp_path / "small.png")
    assert big < 1.5 * small, f"{big / 1e6:.0f} MB for 8 tiles of 4000x4000, " \
                              f"{small / 1e6:.0f} MB for 8 of {MOST}x{MOST}"
    drawn = [matplotlib.image.imread(tmp_path / name).shape for name in ("big.png", "small.png")]
    assert drawn[0] == drawn[1]  # the same figure: only the tiles' detail differs
