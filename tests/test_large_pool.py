"""MedMNIST+ archives (64/128/224 px) and pools read memory-mapped instead of whole.

Archives are written here in the official layout (``<name>_<size>.npz`` with
``train_images`` ... ``test_labels``): compressed like the official files, or
stored (uncompressed) so they map in place.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from al_sim.data import npz
from al_sim.data.base import ImageRows
from al_sim.data.medmnist import file_name, load_medmnist
from al_sim.runtime.errors import DataError
from tests.conftest import run_cli

SPLITS = {"train": 12, "val": 4, "test": 6}


def arrays(size: int, channels: int, n_classes: int = 2) -> dict[str, np.ndarray]:
    """Official-layout arrays: uint8 images N x S x S [x 3], labels N x 1."""
    rng = np.random.default_rng(size)
    out = {}
    for split, n in SPLITS.items():
        shape = (n, size, size) if channels == 1 else (n, size, size, channels)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % n_classes).astype(np.uint8)[:, None]
    return out


def nhwc(x: torch.Tensor) -> np.ndarray:
    """Back to the archive's layout (N x H x W for grey, N x H x W x 3 for RGB)."""
    return x[:, 0].numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()


@pytest.fixture(autouse=True)
def _strict_warnings() -> None:
    warnings.simplefilter("error", UserWarning)  # e.g. torch's "array is not writable"


@pytest.mark.parametrize(("name", "channels"), [("pneumoniamnist", 1), ("bloodmnist", 3)])
@pytest.mark.parametrize("size", [64, 128, 224])
def test_medmnist_plus_archives_load_by_size(tmp_path: Path, name: str, channels: int,
                                             size: int) -> None:
    data = arrays(size, channels)
    path = tmp_path / file_name(name, size)
    assert path.name == f"{name}_{size}.npz"
    np.savez_compressed(path, **data)  # deflated, as the official files are
    ds = load_medmnist(name=name, size=size, root=str(tmp_path))
    assert ds.image_shape == (channels, size, size) and not ds.memory_mapped
    assert (nhwc(ds.pool_x) == data["train_images"]).all()
    assert (nhwc(ds.test_x) == data["test_images"]).all()
    assert (ds.val_y == data["val_labels"][:, 0]).all()


def test_stored_archive_is_mapped_in_place_not_copied(tmp_path: Path) -> None:
    data = arrays(64, 3)
    path = tmp_path / "bloodmnist_64.npz"
    npz.write_stored(path, data)
    ds = load_medmnist(name="bloodmnist", size=64, root=str(tmp_path), in_memory_max_mb=0)
    assert ds.memory_mapped and not (tmp_path / "al_sim_cache").exists()
    assert (nhwc(ds.pool_x) == data["train_images"]).all()
    assert (nhwc(ds.val_x) == data["val_images"]).all()
    # The tensor reads the file's pages: a change on disk shows through it.
    with np.load(path) as check:
        assert (check["train_images"] == data["train_images"]).all()
    raw = bytearray(path.read_bytes())
    first = data["train_images"][0].tobytes()
    at = raw.find(first)
    raw[at : at + len(first)] = bytes(len(first))
    with path.open("r+b") as f:
        f.write(raw)
    assert int(ds.pool_x[0].sum()) == 0 and int(ds.pool_x[1].sum()) > 0


def test_compressed_archive_is_extracted_once_then_mapped(tmp_path: Path, caplog) -> None:
    data = arrays(128, 1)
    path = tmp_path / "pneumoniamnist_128.npz"
    np.savez_compressed(path, **data)
    with caplog.at_level(logging.INFO, logger="al_sim"):
        ds = load_medmnist(name="pneumoniamnist", size=128, root=str(tmp_path),
                           in_memory_max_mb=0)
    cache = tmp_path / "al_sim_cache" / "pneumoniamnist_128.train_images.npy"
    assert ds.memory_mapped and cache.is_file()
    assert f"once to {cache}" in caplog.text
    assert (nhwc(ds.pool_x) == data["train_images"]).all()
    written = cache.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="al_sim"):
        again = load_medmnist(name="pneumoniamnist", size=128, root=str(tmp_path),
                              in_memory_max_mb=0)
    assert cache.stat().st_mtime_ns == written and "extracting" not in caplog.text
    assert torch.equal(again.pool_x, ds.pool_x)
    # A replaced archive is extracted again, not served stale.
    data["train_images"] = 255 - data["train_images"]
    np.savez_compressed(path, **data)
    os.utime(path, ns=(written + 10**9, written + 10**9))
    fresh = load_medmnist(name="pneumoniamnist", size=128, root=str(tmp_path),
                          in_memory_max_mb=0)
    assert (nhwc(fresh.pool_x) == data["train_images"]).all()


def test_cache_dir_is_honoured_and_an_unusable_one_is_named(tmp_path: Path) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    np.savez_compressed(root / "pneumoniamnist_64.npz", **arrays(64, 1))
    ds = load_medmnist(name="pneumoniamnist", size=64, root=str(root), in_memory_max_mb=0,
                       cache_dir=str(cache))
    assert ds.memory_mapped and (cache / "pneumoniamnist_64.train_images.npy").is_file()
    assert not (root / "al_sim_cache").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # no folder can be made below it, even by root
    with pytest.raises(DataError, match=r"cannot create .*a_file/sub.*set dataset.cache_dir="):
        load_medmnist(name="pneumoniamnist", size=64, root=str(root), in_memory_max_mb=0,
                      cache_dir=str(blocker / "sub"))


def test_small_arrays_stay_in_memory_under_the_auto_threshold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.savez(tmp_path / "pneumoniamnist_64.npz", **arrays(64, 1))
    assert not load_medmnist(name="pneumoniamnist", size=64, root=str(tmp_path)).memory_mapped
    assert npz.memory_budget() > 0
    # MemAvailable moves between two readings: auto is checked against one fixed budget
    monkeypatch.setattr(npz, "memory_budget", lambda: 10 * 2**30)
    assert npz.in_memory_max_bytes(None) == int(10 * 2**30 * npz.AUTO_SHARE)
    assert npz.in_memory_max_bytes(1.5) == int(1.5 * 2**20)


def test_max_pool_from_a_mapped_archive_is_an_in_memory_subsample(tmp_path: Path) -> None:
    data = arrays(64, 1)
    npz.write_stored(tmp_path / "pneumoniamnist_64.npz", data)
    ds = load_medmnist(name="pneumoniamnist", size=64, root=str(tmp_path), in_memory_max_mb=0,
                       max_pool=6)
    assert ds.n_pool == 6 and not ds.memory_mapped
    keep = [int(i.split("_")[1]) for i in ds.pool_ids]
    assert (nhwc(ds.pool_x) == data["train_images"][keep]).all()


def test_image_rows_gather_only_what_is_sliced() -> None:
    images = torch.arange(10 * 1 * 2 * 2, dtype=torch.uint8).reshape(10, 1, 2, 2)
    idx = torch.tensor([7, 2, 9, 4])
    rows = ImageRows(images, idx)
    assert len(rows) == 4 and rows.shape == (4, 1, 2, 2) and rows.dtype == torch.uint8
    assert rows.ndim == 4
    assert torch.equal(rows[1:3], images[[2, 9]])
    assert torch.equal(rows[torch.tensor([3, 0])], images[[4, 7]])
    assert torch.equal(rows[np.array([2])], images[[9]])


def test_pool_rows_are_lazy_only_for_a_mapped_pool(tmp_path: Path) -> None:
    npz.write_stored(tmp_path / "pneumoniamnist_64.npz", arrays(64, 1))
    mapped = load_medmnist(name="pneumoniamnist", size=64, root=str(tmp_path),
                           in_memory_max_mb=0)
    loaded = load_medmnist(name="pneumoniamnist", size=64, root=str(tmp_path))
    idx = np.array([3, 1, 8])
    lazy, eager = mapped.pool_rows(idx), loaded.pool_rows(idx)
    assert isinstance(lazy, ImageRows) and isinstance(eager, torch.Tensor)
    assert torch.equal(lazy[0:3], eager)


def test_write_stored_refuses_chunks_that_do_not_fill_the_shape(tmp_path: Path) -> None:
    chunks = [np.zeros((2, 4), np.uint8)]
    with pytest.raises(ValueError, match="chunks hold 8 bytes"):
        npz.write_stored(tmp_path / "x.npz", {"a": ((3, 4), np.uint8, chunks)})


@pytest.mark.slow
def test_a_mapped_pool_gives_the_same_run_as_one_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = {}
    for split, n in {"train": 160, "val": 20, "test": 60}.items():
        y = np.arange(n) % 2
        x = rng.integers(0, 120, (n, 64, 64), dtype=np.uint8)
        x[y == 1, 20:44, 20:44] += 100  # a learnable class signal
        data[f"{split}_images"], data[f"{split}_labels"] = x, y.astype(np.uint8)[:, None]
    npz.write_stored(tmp_path / "pneumoniamnist_64.npz", data)
    outputs = {}
    for label, limit in (("mapped", "0"), ("loaded", "100000")):
        (tmp_path / label).mkdir()
        proc = run_cli(["dataset=medmnist", f"dataset.root={tmp_path}", "dataset.size=64",
                        f"dataset.in_memory_max_mb={limit}", "budget=tiny", "trainer.epochs=1",
                        "trainer.min_steps=4", "trainer.num_threads=1", "progress=false",
                        "hydra.run.dir=run"], tmp_path / label)
        assert proc.returncode == 0, proc.stderr
        with (tmp_path / label / "run" / "metrics.csv").open() as f:
            metrics = [{k: v for k, v in row.items() if not k.startswith("time/")}
                       for row in csv.DictReader(f)]
        outputs[label] = ((tmp_path / label / "run" / "queries.csv").read_text(), metrics)
    assert outputs["mapped"] == outputs["loaded"]
    assert len(outputs["mapped"][1]) == 3
