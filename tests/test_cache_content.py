"""The MedMNIST extraction cache follows the archive's content, not its mtime (issue 27)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from al_sim.data import npz
from al_sim.data.medmnist import read_medmnist
from al_sim.runtime.errors import DataError

SPLITS = {"train": 40, "val": 10, "test": 20}


def arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SPLITS.items():
        out[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    return out


def read(root: Path, cache: Path) -> np.ndarray:
    splits = read_medmnist("breastmnist", root=root, in_memory_max_mb=0, cache_dir=cache)
    assert isinstance(splits.images["train"], np.memmap)  # served from the extracted cache
    return np.asarray(splits.images["train"])


def test_a_corrected_copy_with_an_older_mtime_is_extracted_again(tmp_path: Path) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    archive = root / "breastmnist.npz"
    np.savez_compressed(archive, **arrays(0))
    assert (read(root, cache) == arrays(0)["train_images"]).all()
    extracted = cache / "breastmnist.train_images.npy"
    first = extracted.stat().st_mtime_ns
    assert (read(root, cache) == arrays(0)["train_images"]).all()
    assert extracted.stat().st_mtime_ns == first  # unchanged content: reused, not re-extracted
    # the corrected archive arrives as `cp -p` / `rsync -a` leave it: an mtime before the cache's
    corrected = tmp_path / "corrected.npz"
    np.savez_compressed(corrected, **arrays(1))
    os.utime(corrected, ns=(first - 10**12, first - 10**12))
    os.replace(corrected, archive)
    assert archive.stat().st_mtime_ns < first
    assert (read(root, cache) == arrays(1)["train_images"]).all()


def test_an_unwritable_cache_dir_is_named_with_its_knob(tmp_path: Path, monkeypatch) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    np.savez_compressed(root / "breastmnist.npz", **arrays(0))

    def read_only(path: Path, content: object) -> Path:  # what a read-only mount answers
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(npz, "atomic_write", read_only)
    with pytest.raises(DataError, match=rf"cannot write the extraction cache {cache} "
                                        r"\(dataset.cache_dir\).*Read-only file system.*set "
                                        r"dataset.cache_dir= to a writable folder") as err:
        read(root, cache)
    assert "hydra" not in str(err.value)
