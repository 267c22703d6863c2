"""The synthetic screening-image generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from al_sim.data.synthetic import chunk_size, generate_images, load_synthetic
from al_sim.maths.sampling import flip_labels
from al_sim.runtime.errors import ConfigError, DataError


def test_shapes_dtype_and_determinism() -> None:
    x1, y1 = generate_images(500, 28, [0.6, 0.25, 0.15], 0.5, seed=3)
    x2, y2 = generate_images(500, 28, [0.6, 0.25, 0.15], 0.5, seed=3)
    x3, _ = generate_images(500, 28, [0.6, 0.25, 0.15], 0.5, seed=4)
    assert x1.shape == (500, 1, 28, 28) and x1.dtype == np.uint8
    assert (x1 == x2).all() and (y1 == y2).all()
    assert (x1 != x3).reshape(500, -1).any(axis=1).all()  # another seed: every image differs


def test_class_proportions_are_respected() -> None:
    _, y = generate_images(1000, 28, [0.7, 0.2, 0.1], 0.5, seed=0)
    assert np.bincount(y).tolist() == [700, 200, 100]
    _, y2 = generate_images(101, 28, [0.5, 0.5], 0.5, seed=0)
    assert sorted(np.bincount(y2).tolist()) == [50, 51]


def test_image_size_is_configurable() -> None:
    x, _ = generate_images(10, 64, [0.5, 0.5], 0.2, seed=0)
    assert x.shape == (10, 1, 64, 64)


# Digests of images al_sim has always drawn: any change to the recipe up to 64 px shows here.
PINNED = {28: "aeaf7867e77e3291", 64: "e89f2a5cc6f582f0"}


@pytest.mark.parametrize("size", [28, 64])
def test_images_up_to_64_px_never_change(size: int) -> None:
    x, y = generate_images(300, size, [0.6, 0.25, 0.15], 0.5, seed=11)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    assert digest == PINNED[size]


@pytest.mark.parametrize("size", [128, 224])
def test_large_images_are_chunked_deterministic_and_keep_their_classes(size: int) -> None:
    n = 3 * chunk_size(size) + 5  # several chunks and a partial one
    x, y = generate_images(n, size, [0.4, 0.3, 0.3], 0.0, seed=2)
    again, again_y = generate_images(n, size, [0.4, 0.3, 0.3], 0.0, seed=2, workers=3)
    assert x.shape == (n, 1, size, size) and x.dtype == np.uint8
    assert (x == again).all() and (y == again_y).all()  # the same images on 1 or 3 threads
    assert chunk_size(size) < n and chunk_size(size) * size * size <= 1 << 21
    lo, hi = size * 3 // 8, size * 5 // 8
    centre = x[:, 0, lo:hi, lo:hi].mean(axis=(1, 2))
    assert centre[y == 1].mean() > centre[y == 0].mean() + 10  # lesions at every size
    assert centre[y == 2].mean() > centre[y == 0].mean() + 10
    per_image = x.reshape(n, -1).astype(np.float32)
    assert per_image.std(axis=1).min() > 5  # textured, not flat
    assert not (x[: chunk_size(size)] == x[chunk_size(size): 2 * chunk_size(size)]).all()


def test_lesion_classes_are_brighter_at_the_centre_than_normal() -> None:
    x, y = generate_images(2000, 28, [0.4, 0.3, 0.3], 0.0, seed=0)
    centre = x[:, 0, 10:18, 10:18].mean(axis=(1, 2))
    assert centre[y == 1].mean() > centre[y == 0].mean() + 10
    assert centre[y == 2].mean() > centre[y == 0].mean() + 10


def test_label_noise_flips_the_requested_share_of_pool_labels() -> None:
    y = np.zeros(10_000, dtype=np.int64)
    noisy = flip_labels(y, 0.1, 3, np.random.default_rng(0))
    assert 0.09 < (noisy != y).mean() < 0.11
    ds = load_synthetic(n_pool=300, n_test=100, label_noise=0.2)
    clean = load_synthetic(n_pool=300, n_test=100)
    assert (ds.pool_y != clean.pool_y).any()
    assert (ds.test_y == clean.test_y).all()  # the test split stays clean


def test_pool_and_test_are_different_images() -> None:
    ds = load_synthetic(n_pool=200, n_test=100)
    assert ds.pool_x.shape == (200, 1, 28, 28) and ds.test_x.shape == (100, 1, 28, 28)
    pool = {bytes(img) for img in ds.pool_x.numpy()}
    assert len(pool) == 200  # no duplicates within the pool
    assert not pool & {bytes(img) for img in ds.test_x.numpy()}  # no test image is a pool image
    assert ds.class_names == ["normal", "benign", "malignant"]


@pytest.mark.parametrize(
    "bad",
    [{"n_pool": 0}, {"n_test": -1}, {"class_proportions": [1.0]}, {"difficulty": 2.0},
     {"label_noise": 1.0}, {"image_size": 8}],
)
def test_bad_knobs_raise_config_errors(bad) -> None:
    with pytest.raises(ConfigError):
        load_synthetic(**bad)


def test_dataset_refuses_test_classes_missing_from_pool() -> None:
    ds = load_synthetic(n_pool=60, n_test=30)
    from al_sim.data.base import ALDataset

    with pytest.raises(DataError, match="never occur in the pool"):
        ALDataset("x", ds.pool_x[:5], np.zeros(5, int), ds.test_x[:5],
                  np.array([0, 1, 0, 0, 0]), ["a", "b"])
