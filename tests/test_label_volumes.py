"""Volumes in the labelling batch: NIfTI + montage on disk, slices from the token-guarded API."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nibabel")

from al_sim.label.batch import Batch, Item, batch_dir, write_batch  # noqa: E402
from al_sim.label.human_oracle import HumanOracle  # noqa: E402
from al_sim.label.volumes import (  # noqa: E402
    montage_png,
    read_volume,
    volume_path,
    write_volume,
)
from al_sim.label.web import create_app  # noqa: E402
from tests.volume_files import write_nifti  # noqa: E402

CLASSES = ["lesion", "normal"]


def volume(seed: int, shape: tuple[int, int, int] = (6, 8, 10)) -> np.ndarray:
    """A (D, H, W) volume whose value tells its slice: 100 * slice (+ noise < 1)."""
    noise = np.random.default_rng(seed).random(shape).astype(np.float32) * 0.5
    return (np.arange(shape[0])[:, None, None] * 100.0 + noise).astype(np.float32)


def volume_batch(run_dir: Path, n: int = 2, flat: bool = False) -> Path:
    """A round-1 batch of ``n`` volumes, written as the human oracle writes one (``flat``:
    then a 2D DICOM image's values, one slice with its window)."""
    folder = batch_dir(run_dir, 1)
    items = [Item(f"{i:07d}.png", i, f"unlabeled_pool_images/v{i}.nii.gz", "", None)
             for i in range(n)]
    pngs = []
    for i, item in enumerate(items):
        write_volume(volume_path(folder, item.image), volume(i))
        pngs.append(montage_png(volume(i), 32))
    if flat:
        items.append(Item(f"{n:07d}.png", n, "unlabeled_pool_images/x.dcm", "", None))
        write_volume(volume_path(folder, items[-1].image), volume(n, (1, 8, 8)), (40.0, 400.0))
        pngs.append(montage_png(volume(n, (1, 8, 8)), 32))
    write_batch(folder, 1, CLASSES, items, pngs)
    return folder


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_batch_holds_nifti_and_a_montage(tmp_path) -> None:
    folder = volume_batch(tmp_path)
    np.testing.assert_allclose(read_volume(volume_path(folder, "0000001.png")), volume(1))
    montage = png((folder / "images" / "0000000.png").read_bytes())
    assert montage.shape == (32, 96)  # axial | coronal | sagittal


def test_slices_come_from_the_guarded_api(tmp_path) -> None:
    folder = volume_batch(tmp_path)
    client = create_app(Batch.load(folder), tmp_path, {"expert": "tok"}).test_client()
    described = client.get("/api/batch?token=tok").get_json()
    assert [e["volume"] for e in described["images"]] == [[6, 8, 10], [6, 8, 10]]
    assert described["windows"]["ct_lung"] == [-600.0, 1500.0]
    axial = client.get("/api/slice?token=tok&image=0000000.png&plane=axial&index=3")
    assert axial.status_code == 200 and png(axial.data).shape == (8, 10)
    coronal = png(client.get("/api/slice?token=tok&image=0000000.png&plane=coronal&index=0").data)
    assert coronal.shape == (6, 10) and coronal[0].mean() > coronal[-1].mean()  # superior up
    win = client.get("/api/slice?token=tok&image=0000000.png&plane=axial&index=2"
                     "&centre=200&width=2")  # a narrow window around slice 2's values
    assert png(win.data).mean() > 100
    for bad, code in (("image=../batch.json&plane=axial", 404),
                      ("image=0000009.png&plane=axial", 404),
                      ("image=0000000.png&plane=oblique", 400),
                      ("image=0000000.png&plane=axial&index=x", 400),
                      ("image=0000000.png&plane=axial&centre=1&width=-3", 400)):
        assert client.get(f"/api/slice?token=tok&{bad}").status_code == code, bad
    assert client.get("/api/slice?image=0000000.png&plane=axial").status_code == 403
    far = client.get("/api/slice?token=tok&image=0000000.png&plane=sagittal&index=999")
    assert png(far.data).shape == (6, 8)  # clamped to the last slice


def test_the_human_oracle_writes_volume_batches(tmp_path) -> None:
    src = tmp_path / "data"
    ct = volume(7, (8, 8, 8)) - 400.0  # HU-like
    write_nifti(src / "unlabeled_pool_images" / "case.nii.gz", ct.transpose(2, 1, 0))
    pool = torch.from_numpy(np.random.default_rng(0).random((3, 1, 4, 4, 4), np.float32))
    dataset = SimpleNamespace(
        pool_x=pool, pool_y=np.array([0, -1, -1]), class_names=CLASSES, multilabel=False,
        initial_labeled=np.array([0]), pool_ids=["a", "b", "unlabeled_pool_images/case.nii.gz"])
    oracle = HumanOracle(tmp_path / "run", dataset, 64, src)  # type: ignore[arg-type]
    batch = oracle._write(batch_dir(tmp_path / "run", 1), np.array([1, 2]), 1, None)
    first = read_volume(volume_path(batch.dir, batch.items[0].image))
    np.testing.assert_allclose(first, pool[1, 0].numpy())  # in memory: the model's view
    original = read_volume(volume_path(batch.dir, batch.items[1].image))
    np.testing.assert_allclose(original, ct, atol=1e-4)  # a folder's file: its own units
    assert png((batch.dir / "images" / batch.items[1].image).read_bytes()).shape == (64, 192)


def test_2d_dicom_images_get_window_level_on_the_page(tmp_path) -> None:
    from tests.test_dicom import write_dicom

    src = tmp_path / "data" / "unlabeled_pool_images"
    src.mkdir(parents=True)
    hu = np.tile(np.arange(0, 4000, 500, dtype=np.int32), (8, 1))  # stored values, 8 x 8
    write_dicom(src / "ct.dcm", hu, intercept=-1024.0, window=(40, 400))
    write_dicom(src / "cr.dcm", hu, photometric="MONOCHROME1")
    pool = torch.zeros((3, 1, 8, 8), dtype=torch.uint8)
    dataset = SimpleNamespace(
        pool_x=pool, pool_y=np.array([0, -1, -1]), class_names=CLASSES, multilabel=False,
        initial_labeled=np.array([0]), pool_ids=["x", "unlabeled_pool_images/ct.dcm",
                                                 "unlabeled_pool_images/cr.dcm"])
    oracle = HumanOracle(tmp_path / "run", dataset, 64, tmp_path / "data")  # type: ignore[arg-type]
    batch = oracle._write(batch_dir(tmp_path / "run", 1), np.array([1, 2]), 1, None)
    values = read_volume(volume_path(batch.dir, batch.items[0].image))
    np.testing.assert_allclose(values[0], hu - 1024.0)  # Hounsfield units, one slice
    assert not volume_path(batch.dir, batch.items[1].image).exists()  # MONOCHROME1: as PNG
    client = create_app(Batch.load(batch.dir), tmp_path / "run", {"e": "t"}).test_client()
    entries = client.get("/api/batch?token=t").get_json()["images"]
    assert entries[0]["volume"] == [1, 8, 8] and entries[0]["window"] == [40.0, 400.0]
    assert "volume" not in entries[1]
    lung = client.get(f"/api/slice?token=t&image={batch.items[0].image}&plane=axial&index=0"
                      "&centre=-600&width=1500")
    assert png(lung.data).shape == (8, 8)
