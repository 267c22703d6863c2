"""Initial labelled set policies, chosen by ``budget.initial_selection``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from al_sim.config.schema import InitialSelection
from al_sim.data.base import ALDataset
from al_sim.maths.sampling import stratified_sample

InitialPolicy = Callable[[ALDataset, int, np.random.Generator], np.ndarray]
_PIXEL_SIDE = 16  # cold-start embedding: images average-pooled to at most 16 x 16
_VOXEL_SIDE = 8  # ... volumes to at most 8 x 8 x 8 (twice the features of 16 x 16)
_PIXEL_COMPONENTS = 32  # ... then projected on their first 32 principal components
_CHUNK_IMAGES, _CHUNK_BYTES = 4096, 64 << 20  # images pooled at once: at most 64 MB of floats


def random_initial(dataset: ALDataset, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` pool indices drawn uniformly, sorted."""
    return np.sort(rng.choice(dataset.n_pool, size=k, replace=False))


def stratified_initial(dataset: ALDataset, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` pool indices in the pool's class shares (every class at least once when k allows;
    multi-label: strata by each image's rarest finding, ``Task.strata``)."""
    return stratified_sample(dataset.task.strata(dataset.pool_y), k, rng)


def pixel_embedding(images: torch.Tensor, chunk_size: int | None = None) -> np.ndarray:
    """A training-free deterministic embedding: PCA of average-pooled pixels scaled to [0, 1].

    Images (uint8 ``N x C x H x W``) are pooled to at most 16 x 16 per channel (volumes
    ``N x C x D x H x W`` to 8 x 8 x 8),
    then projected on their first (up to) 32 principal components (exact
    covariance eigendecomposition, so no randomness).
    """
    from sklearn.decomposition import PCA

    if chunk_size is None:  # bounded float memory at any image size (a mapped pool streams)
        per_image = 4 * int(np.prod(images.shape[1:]))
        chunk_size = max(1, min(_CHUNK_IMAGES, _CHUNK_BYTES // per_image))
    volumes = images.ndim == 5
    cap = _VOXEL_SIDE if volumes else _PIXEL_SIDE
    side = [min(cap, int(d)) for d in images.shape[2:]]

    def pool(x: torch.Tensor) -> torch.Tensor:
        if volumes:
            return F.adaptive_avg_pool3d(x, (side[0], side[1], side[2]))
        return F.adaptive_avg_pool2d(x, (side[0], side[1]))

    flat = [pool(images[s : s + chunk_size].float() / 255.0).flatten(1)
            for s in range(0, len(images), chunk_size)]
    x = torch.cat(flat).numpy()
    n_comp = min(_PIXEL_COMPONENTS, x.shape[0], x.shape[1])
    return PCA(n_components=n_comp, svd_solver="covariance_eigh").fit_transform(x)


def typiclust_initial(dataset: ALDataset, k: int, rng: np.random.Generator,
                      k_neighbors: int = 20, max_clusters: int = 500) -> np.ndarray:
    """``k`` pool indices chosen by TypiClust on :func:`pixel_embedding` (no model needed)."""
    from al_sim.strategies.typiclust import typiclust_select

    emb = pixel_embedding(dataset.pool_x)
    seed = int(rng.integers(2**31 - 1))
    picked, _ = typiclust_select(emb, np.zeros(len(emb), dtype=bool), k, seed,
                                 k_neighbors, max_clusters)
    return np.sort(picked)


INITIAL_POLICIES: dict[InitialSelection, InitialPolicy] = {
    InitialSelection.random: random_initial,
    InitialSelection.stratified: stratified_initial,
    InitialSelection.typiclust: typiclust_initial,
}


def initial_policy(selection: InitialSelection | str) -> InitialPolicy:
    """The policy for ``budget.initial_selection``."""
    return INITIAL_POLICIES[InitialSelection(selection)]
