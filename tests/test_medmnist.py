"""MedMNIST loader: real archives from ../shared, every error case on small archives built here."""

from __future__ import annotations

import csv
import logging
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from al_sim.data import medmnist as mm
from al_sim.data.medmnist import load_medmnist, read_medmnist
from al_sim.maths.sampling import stratified_sample
from al_sim.runtime.errors import ConfigError, DataError
from tests.conftest import SHARED_MEDMNIST, compose_config, run_cli

needs_shared = pytest.mark.skipif(
    not (SHARED_MEDMNIST / "breastmnist.npz").is_file()
    or not (SHARED_MEDMNIST / "pneumoniamnist.npz").is_file(),
    reason=f"real MedMNIST files not found in {SHARED_MEDMNIST}",
)
SPLITS = {"train": 40, "val": 10, "test": 20}


def write_npz(folder: Path, name: str = "breastmnist", size: int = 28, channels: int = 1,
              n_classes: int = 2, **replace: object) -> Path:
    """A small archive in the official layout (or with ``replace``d / ``None``-dropped keys)."""
    rng = np.random.default_rng(0)
    arrays: dict[str, object] = {}
    for split, n in SPLITS.items():
        shape = (n, size, size) if channels == 1 else (n, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % n_classes).astype(np.uint8)[:, None]
    arrays.update(replace)
    path = folder / mm.file_name(name, size)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# ----------------------------------------------------------------------------- real archives
@needs_shared
def test_pneumoniamnist_splits_shapes_and_class_counts() -> None:
    ds = load_medmnist(name="pneumoniamnist", root=str(SHARED_MEDMNIST))
    assert ds.pool_x.shape == (4708, 1, 28, 28) and ds.pool_x.dtype == torch.uint8
    assert ds.test_x.shape == (624, 1, 28, 28) and ds.val_x.shape == (524, 1, 28, 28)
    assert ds.pool_y.dtype == np.int64 and ds.pool_y.ndim == 1
    assert np.bincount(ds.pool_y).tolist() == [1214, 3494]
    assert len(ds.val_y) == 524 and len(ds.test_y) == 624
    assert ds.class_names == ["normal", "pneumonia"]
    assert ds.pool_ids[:2] == ["train_000000", "train_000001"]


@needs_shared
def test_breastmnist_splits_and_class_counts() -> None:
    ds = load_medmnist(name="breastmnist", root=str(SHARED_MEDMNIST))
    assert (ds.n_pool, len(ds.val_y), len(ds.test_y)) == (546, 78, 156)
    assert np.bincount(ds.pool_y).tolist() == [147, 399]
    assert ds.class_names == ["malignant", "normal, benign"] and ds.image_shape == (1, 28, 28)


def test_checksum_mismatch_warns_by_default_and_fails_when_verified(
        tmp_path: Path, monkeypatch, caplog) -> None:
    actual = mm.md5sum(write_npz(tmp_path))
    official = "0123456789abcdef0123456789abcdef"  # what the package says the file should be
    info = dict(mm._info_table()["breastmnist"], MD5=official)
    monkeypatch.setattr(mm, "dataset_info", lambda name: info)
    with caplog.at_level(logging.WARNING, logger="al_sim"):
        load_medmnist(name="breastmnist", root=str(tmp_path))  # the user's choice: no check
    assert official in caplog.text and actual in caplog.text
    with pytest.raises(DataError, match=f"{actual}.*{official}.*verify_checksum=false"):
        load_medmnist(name="breastmnist", root=str(tmp_path), verify_checksum=True)


@needs_shared
def test_max_pool_is_a_deterministic_stratified_subsample() -> None:
    a = load_medmnist(name="pneumoniamnist", root=str(SHARED_MEDMNIST), max_pool=500)
    b = load_medmnist(name="pneumoniamnist", root=str(SHARED_MEDMNIST), max_pool=500)
    c = load_medmnist(name="pneumoniamnist", root=str(SHARED_MEDMNIST), max_pool=500, seed=1)
    assert a.n_pool == 500 and a.pool_ids == b.pool_ids and a.pool_ids != c.pool_ids
    assert np.bincount(a.pool_y).tolist() == [129, 371]  # 1214 : 3494 of the train split
    assert len(a.test_y) == 624  # the test split is never cut
    full = load_medmnist(name="pneumoniamnist", root=str(SHARED_MEDMNIST))
    picked = [int(i.split("_")[1]) for i in a.pool_ids]
    assert torch.equal(a.pool_x, full.pool_x[picked])


# ----------------------------------------------------------------------------- layouts
def test_file_names_follow_the_medmnist_package() -> None:
    assert mm.file_name("pneumoniamnist", 28) == "pneumoniamnist.npz"
    assert mm.file_name("pneumoniamnist", 128) == "pneumoniamnist_128.npz"


def test_rgb_archive_becomes_nchw_without_changing_pixels(tmp_path: Path) -> None:
    path = write_npz(tmp_path, "retinamnist", size=64, channels=3, n_classes=5)
    ds = load_medmnist(name="retinamnist", size=64, root=str(tmp_path))
    raw = np.load(path)["train_images"]
    assert ds.pool_x.shape == (40, 3, 64, 64) and ds.pool_x.dtype == torch.uint8
    assert (ds.pool_x.numpy() == raw.transpose(0, 3, 1, 2)).all()
    assert ds.n_classes == 5 and ds.class_names == ["0", "1", "2", "3", "4"]  # ordinal grades
    assert np.bincount(ds.pool_y).tolist() == [8] * 5


def test_labels_given_as_a_flat_vector_are_accepted(tmp_path: Path) -> None:
    write_npz(tmp_path, train_labels=(np.arange(40) % 2).astype(np.int64))
    assert load_medmnist(name="breastmnist", root=str(tmp_path)).pool_y.tolist()[:4] == [0, 1, 0, 1]


# ----------------------------------------------------------------------------- errors
def test_missing_file_names_the_file_the_folder_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_medmnist(name="breastmnist", size=64, root=str(tmp_path))
    msg = str(err.value)
    assert "breastmnist_64.npz" in msg and str(tmp_path) in msg
    assert "python -m medmnist download --size=64" in msg and "dataset.download=true" in msg
    assert "dataset.root=" in msg and "zenodo" in msg


def test_missing_root_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_medmnist(name="breastmnist", root=str(tmp_path / "nowhere"))


def test_unknown_names_list_the_valid_ones_2d_and_3d() -> None:
    with pytest.raises(DataError, match="'pneumonia'.*valid names:.*pneumoniamnist.*bloodmnist"
                                        ".*organmnist3d"):
        load_medmnist(name="pneumonia")


def test_bad_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dataset.size"):
        load_medmnist(name="breastmnist", size=32)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_damaged_archive_is_a_clear_data_error(tmp_path: Path, damage: str) -> None:
    path = write_npz(tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "garbage":
        raw = bytearray(b"this is not a zip archive at all" * 10)
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # corrupt bytes inside the first member: the zip CRC check catches it
        raw[200:260] = bytes(60)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="breastmnist.npz"):
        load_medmnist(name="breastmnist", root=str(tmp_path))


def test_wrong_keys_are_listed(tmp_path: Path) -> None:
    write_npz(tmp_path, train_images=None, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks the array.*train_images.*x_train"):
        load_medmnist(name="breastmnist", root=str(tmp_path))


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    objects = np.empty(40, dtype=object)
    objects[:] = [{"label": 1}] * 40
    write_npz(tmp_path, train_labels=objects)
    with pytest.raises(DataError, match="pickled"):
        load_medmnist(name="breastmnist", root=str(tmp_path))


def test_single_npy_array_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "breastmnist.npz").open("wb") as f:
        np.save(f, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="single array"):
        load_medmnist(name="breastmnist", root=str(tmp_path))


def test_zip_without_arrays_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "breastmnist.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="lacks the array"):
        load_medmnist(name="breastmnist", root=str(tmp_path))


@pytest.mark.parametrize(
    ("replace", "match"),
    [({"train_images": np.zeros((40, 64, 64), np.uint8)}, "dataset.size"),
     ({"test_images": np.zeros((20, 28, 28), np.float32)}, "uint8"),
     ({"val_labels": np.full((10, 1), 7, np.uint8)}, r"val_labels.*\[7, 7\].*2 classes"),
     ({"train_labels": np.zeros((40, 1), np.float32)}, "integer class labels"),
     ({"train_labels": np.zeros((39, 1), np.uint8)}, "40 integer class labels")],
)
def test_malformed_arrays_name_the_key(tmp_path: Path, replace: dict, match: str) -> None:
    write_npz(tmp_path, **replace)
    with pytest.raises(DataError, match=match):
        load_medmnist(name="breastmnist", root=str(tmp_path))


def test_matching_checksum_is_silent_and_verified(tmp_path: Path, monkeypatch, caplog) -> None:
    path = write_npz(tmp_path)
    info = dict(mm.dataset_info("breastmnist"), MD5=mm.md5sum(path))
    monkeypatch.setattr(mm, "dataset_info", lambda name: info)
    with caplog.at_level(logging.WARNING, logger="al_sim"):
        read_medmnist("breastmnist", 28, tmp_path, verify_checksum=True)
    assert "MD5" not in caplog.text


def test_download_failure_offline_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import utils as tv_utils

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(DataError, match="could not download breastmnist.npz from https://"):
        load_medmnist(name="breastmnist", root=str(tmp_path / "cache"), download=True)
    write_npz(tmp_path)  # present: download=true does not fetch it again
    assert load_medmnist(name="breastmnist", root=str(tmp_path), download=True).n_pool == 40


# ----------------------------------------------------------------------------- subsampling
@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 60), min_size=1, max_size=6), k=st.integers(1, 200),
       seed=st.integers(0, 3))
def test_stratified_subset_size_classes_and_shares(counts: list[int], k: int, seed: int) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    idx = stratified_sample(y, k, np.random.default_rng(seed))
    assert len(idx) == min(k, len(y)) and len(np.unique(idx)) == len(idx)
    again = stratified_sample(y, k, np.random.default_rng(seed))
    assert (np.diff(idx) > 0).all() and (idx == again).all()
    if k >= len(counts):
        assert set(y[idx]) == set(range(len(counts)))
    if k < len(y) and k >= 2 * len(counts):
        share = np.bincount(y[idx], minlength=len(counts)) / len(idx)
        assert np.abs(share - np.array(counts) / len(y)).max() <= 2 / len(idx) + 1e-9


# ----------------------------------------------------------------------------- the CLI
FAST = ["budget=tiny", "trainer.epochs=1", "trainer.min_steps=2", "trainer.num_threads=1",
        "progress=false", "hydra.run.dir=run"]


@needs_shared
@pytest.mark.slow
def test_cli_runs_medmnist_end_to_end_and_logs_labelled_counts(tmp_path: Path) -> None:
    proc = run_cli(["dataset=medmnist", "dataset.name=breastmnist",
                    f"dataset.root={SHARED_MEDMNIST}", "dataset.max_pool=120", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "run" / "metrics.csv").open() as f:
        assert [int(r["n_labeled"]) for r in csv.DictReader(f)] == [20, 30, 40]
    assert (tmp_path / "mlflow.db").is_file()


def test_run_reports_a_missing_archive_as_a_data_error(tmp_path: Path) -> None:
    from al_sim.app.components import build_dataset

    cfg = compose_config(["dataset=medmnist", f"dataset.root={tmp_path}"])
    with pytest.raises(DataError, match="pneumoniamnist.npz not found"):
        build_dataset(cfg)
