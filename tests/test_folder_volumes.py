"""``dataset=folder dataset.volumes=true``: class folders of NIfTI files and DICOM series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

from al_sim.data import folder_volumes  # noqa: E402
from al_sim.data.folder import load_folder  # noqa: E402
from al_sim.runtime.errors import DataError  # noqa: E402
from tests.volume_files import write_nifti, write_series  # noqa: E402


def blob(n: int, bright: bool, seed: int) -> np.ndarray:
    """A (slice, row, column) HU volume: soft tissue, with a bright lesion for ``bright``."""
    vol = np.random.default_rng(seed).normal(40, 20, (n, n, n)).astype(np.float32)
    if bright:
        vol[n // 3: 2 * n // 3, n // 3: 2 * n // 3, n // 3: 2 * n // 3] = 200.0
    return vol


def volume_folder(root: Path, n: int = 8) -> Path:
    """Two classes; NIfTI files and DICOM series (shuffled names) in every part."""
    k = 0
    for part in ("initial_labeled_images", "test_images"):
        for label in ("lesion", "normal"):
            write_nifti(root / part / label / f"v{k}.nii.gz",
                        blob(n, label == "lesion", k).transpose(2, 1, 0))
            write_series(root / part / label / f"s{k}", blob(n, label == "lesion", k + 1),
                         seed=k)
            k += 2
    rows = ["file,label"]
    for i in range(4):
        bright = i % 2 == 0
        if i < 2:
            write_nifti(root / "unlabeled_pool_images" / f"p{i}.nii",
                        blob(n, bright, 50 + i).transpose(2, 1, 0))
            rows.append(f"p{i}.nii,{'lesion' if bright else 'normal'}")
        else:
            write_series(root / "unlabeled_pool_images" / f"case{i}", blob(n, bright, 50 + i),
                         seed=i)
            rows.append(f"case{i},{'lesion' if bright else 'normal'}")
    (root / "pool_labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def captured(monkeypatch) -> dict[str, Any]:
    """The arguments load_volume_folder builds its ALDataset from (any ALDataset version)."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(folder_volumes, "ALDataset", lambda **kw: seen.update(kw) or kw)
    return seen


def test_a_folder_of_nifti_and_series_loads(tmp_path, captured) -> None:
    load_folder(root=str(volume_folder(tmp_path)), image_size=12, volumes=True,
                window="ct_soft_tissue")
    pool_x, test_x = captured["pool_x"], captured["test_x"]
    assert tuple(pool_x.shape) == (8, 1, 12, 12, 12) and pool_x.dtype == torch.uint8
    assert tuple(test_x.shape) == (4, 1, 12, 12, 12)
    pool_x = pool_x.float() / 255  # the window mapped to 0-255, as 2D images
    assert captured["class_names"] == ["lesion", "normal"]
    assert captured["pool_ids"][4:] == ["unlabeled_pool_images/case2",
                                        "unlabeled_pool_images/case3",
                                        "unlabeled_pool_images/p0.nii",
                                        "unlabeled_pool_images/p1.nii"]
    np.testing.assert_array_equal(captured["pool_y"], [0, 0, 1, 1, 0, 1, 0, 1])
    centre = pool_x[:, 0, 5:7, 5:7, 5:7].mean(dim=(1, 2, 3))  # the lesion shows, windowed
    assert bool((centre[captured["pool_y"] == 0] > 0.8).all())
    assert bool((centre[captured["pool_y"] == 1] < 0.6).all())
    names = {Path(s.path).name for s in captured["sources"]}
    assert "p0.nii" in names and "pool_labels.csv" in names and any(
        n.startswith("IM") for n in names)


def test_bad_volumes_are_named_together(tmp_path, captured) -> None:
    root = volume_folder(tmp_path)
    pool = root / "unlabeled_pool_images"
    (pool / "case2" / sorted(p.name for p in (pool / "case2").iterdir())[0]).unlink()
    (pool / "p1.nii").write_bytes(b"garbage")
    with pytest.raises(DataError) as info:
        load_folder(root=str(root), image_size=8, volumes=True)
    text = str(info.value)
    assert text.startswith("2 volume(s) cannot be read")
    assert "unlabeled_pool_images/case2" in text and "unlabeled_pool_images/p1.nii" in text
    assert "\n" not in text


def test_layout_problems_are_named(tmp_path, captured) -> None:
    root = volume_folder(tmp_path)
    write_nifti(root / "initial_labeled_images" / "loose.nii.gz", np.zeros((4, 4, 4)))
    with pytest.raises(DataError, match="outside class folders .*loose.nii.gz"):
        load_folder(root=str(root), image_size=8, volumes=True)
    (root / "initial_labeled_images" / "loose.nii.gz").unlink()
    (root / "unlabeled_pool_images" / "study" / "series1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"folder\(s\) without DICOM slices \(study\)"):
        load_folder(root=str(root), image_size=8, volumes=True)
    (root / "unlabeled_pool_images" / "study" / "series1").rmdir()
    (root / "unlabeled_pool_images" / "study").rmdir()
    (root / "pool_labels.csv").write_text("file,label\np0.nii,lesion\n")
    with pytest.raises(DataError, match="no row for 3 pool image"):
        load_folder(root=str(root), image_size=8, volumes=True)


def test_a_volume_folder_trains_end_to_end(tmp_path) -> None:
    from tests.conftest import run_cli

    root = volume_folder(tmp_path / "data")
    data = load_folder(root=str(root), image_size=16, volumes=True)
    assert data.n_pool == 8 and tuple(data.pool_x.shape[1:]) == (1, 16, 16, 16)
    assert data.pool_x.dtype == torch.uint8 and data.volumes and int(data.pool_x.max()) > 200
    done = run_cli(["dataset=folder", f"dataset.root={root}", "dataset.volumes=true",
                    "dataset.image_size=16", "model=cnn3d", "budget.query_size=2",
                    "budget.rounds=1", "trainer.epochs=1", "trainer.min_steps=2",
                    "tracking.enabled=false", "progress=false",
                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = (tmp_path / "run" / "queries.csv").read_text().splitlines()
    assert len(rows) == 1 + len(data.initial_labeled) + 2


def test_a_missing_slice_is_one_error_line_from_the_cli(tmp_path) -> None:
    from tests.conftest import run_cli

    root = volume_folder(tmp_path / "data")
    series = root / "unlabeled_pool_images" / "case3"
    slices = sorted(series.iterdir(), key=lambda p: float(
        __import__("pydicom").dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    slices[3].unlink()  # a slice from the middle of the series
    done = run_cli(["dataset=folder", f"dataset.root={root}", "dataset.volumes=true",
                    "dataset.image_size=8", "tracking.enabled=false", "progress=false",
                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "unlabeled_pool_images/case3" in errors[0] and "a slice is missing" in errors[0]
    assert "export the complete series" in errors[0]
