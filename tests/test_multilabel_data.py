"""Multi-label data sources: ChestMNIST archives (built here with the official keys)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from al_sim.data import medmnist as mm
from al_sim.data.export_folder import export
from al_sim.data.medmnist import load_medmnist
from al_sim.runtime.errors import DataError

CHEST_SPLITS = {"train": 60, "val": 12, "test": 30}


def write_chestmnist(folder: Path, size: int = 28, **replace: object) -> Path:
    """A small ChestMNIST archive: official keys, uint8 images, N x 14 uint8 finding bits."""
    rng = np.random.default_rng(0)
    arrays: dict[str, object] = {}
    for split, n in CHEST_SPLITS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = (rng.random((n, 14)) < 0.15).astype(np.uint8)
        y[:2] = 1  # every finding present at least twice per split
        y[2:4] = 0
        arrays[f"{split}_labels"] = y
    arrays.update(replace)
    path = folder / mm.file_name("chestmnist", size)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_chestmnist_loads_as_multilabel_with_the_official_finding_names(tmp_path) -> None:
    write_chestmnist(tmp_path, size=64)
    data = load_medmnist(name="chestmnist", size=64, root=str(tmp_path))
    assert data.multilabel and data.n_classes == 14
    assert data.class_names[1] == "cardiomegaly" and data.class_names[-1] == "hernia"
    assert data.pool_y.shape == (60, 14) and data.test_y.shape == (30, 14)
    assert data.val_y is not None and data.val_y.shape == (12, 14)
    assert data.pool_x.shape == (60, 1, 64, 64)


def test_chestmnist_max_pool_draws_every_finding(tmp_path) -> None:
    write_chestmnist(tmp_path)
    data = load_medmnist(name="chestmnist", root=str(tmp_path), max_pool=20)
    assert len(data.pool_y) == 20 and (data.pool_y.sum(axis=0) > 0).all()


@pytest.mark.parametrize("labels, match", [
    (np.zeros((60, 13), dtype=np.uint8), "60 x 14 finding bits"),
    (np.full((60, 14), 2, dtype=np.uint8), "finding bits"),
    (np.zeros(60, dtype=np.uint8), "60 x 14"),
])
def test_malformed_chestmnist_labels_name_the_key(tmp_path, labels, match) -> None:
    write_chestmnist(tmp_path, train_labels=labels)
    with pytest.raises(DataError, match=f"'train_labels'.*{match}"):
        load_medmnist(name="chestmnist", root=str(tmp_path))


def test_chestmnist_cannot_be_exported_to_class_folders(tmp_path) -> None:
    write_chestmnist(tmp_path)
    with pytest.raises(DataError, match="multi-label"):
        export("chestmnist", tmp_path / "out", root=tmp_path)
