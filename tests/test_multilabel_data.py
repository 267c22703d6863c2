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


def test_chestmnist_exports_to_a_manifest_folder_that_reads_back(tmp_path) -> None:
    from al_sim.data.folder import load_folder

    write_chestmnist(tmp_path)
    counts = export("chestmnist", tmp_path / "out", root=tmp_path, initial=10, max_test=20)
    assert counts["manifest"] and (counts["initial"], counts["test"]) == (10, 20)
    data = load_folder(root=str(tmp_path / "out"), manifest="manifest.csv", image_size=28)
    archive = load_medmnist(name="chestmnist", root=str(tmp_path))
    assert data.class_names == archive.class_names and len(data.pool_y) == 60
    index = {f"images/train_{i:06d}.png": i for i in range(60)}
    rows = [index[p] for p in data.pool_ids]
    assert data.pool_y.tolist() == archive.pool_y[rows].tolist()
    assert data.pool_x.numpy().tolist() == archive.pool_x[rows].numpy().tolist()
    assert data.initial_labeled.tolist() == list(range(10))


# ------------------------------------------------------------------ manifest folders
def _images(root: Path, names: list[str], folder: str = "images") -> None:
    from PIL import Image

    (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / folder / name)


XRAY14_ROWS = [
    ("a.png", "Effusion|Cardiomegaly", "initial"), ("b.png", "No Finding", "initial"),
    ("c.png", "Nodule", ""), ("d.png", "No Finding", ""), ("e.png", "Effusion", ""),
    ("f.png", "Cardiomegaly|Nodule", "test"), ("g.png", "No Finding", "test"),
]


def _xray14(root: Path, rows=XRAY14_ROWS) -> None:
    _images(root, [r[0] for r in rows])
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,split"]
    lines += [f"{f},{labels},0,{i},{split}" for i, (f, labels, split) in enumerate(rows)]
    (root / "Data_Entry.csv").write_text("\n".join(lines) + "\n")


def test_chestxray14_manifest_loads_findings_splits_and_initial_set(tmp_path) -> None:
    from al_sim.data.folder import load_folder

    _xray14(tmp_path)
    data = load_folder(root=str(tmp_path), manifest="Data_Entry.csv", image_size=16)
    assert data.multilabel and data.class_names == ["Cardiomegaly", "Effusion", "Nodule"]
    assert data.pool_ids == [f"images/{c}.png" for c in "abcde"]
    assert data.pool_y.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert data.test_y.tolist() == [[1, 0, 1], [0, 0, 0]]
    assert data.initial_labeled.tolist() == [0, 1]


def test_plain_manifest_with_a_held_out_fraction(tmp_path) -> None:
    from al_sim.data.folder import load_folder

    names = [f"{i}.png" for i in range(10)]
    _images(tmp_path, names, "xr")
    lines = ["file,effusion,nodule,No Finding"]
    lines += [f"xr/{n},{i % 2},{int(i % 3 == 0)},{int(i % 2 == 0 and i % 3 != 0)}"
              for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    data = load_folder(root=str(tmp_path), manifest="labels.csv", test_fraction=0.3,
                       image_size=16)
    assert data.class_names == ["effusion", "nodule"] and len(data.test_y) == 3
    assert data.initial_labeled is None and len(data.pool_y) == 7


@pytest.mark.parametrize("rows, findings, match", [
    ([("a.png", "Effusion|Mass", "test"), ("b.png", "No Finding", "")], ["Effusion"],
     r"unknown finding\(s\).*line 2: 'Mass'"),
    ([("a.png", "No Finding|Effusion", "test"), ("b.png", "Effusion", "")], None,
     r"both 'No Finding' and a finding: line 2"),
])
def test_manifest_rows_that_lie_are_named(tmp_path, rows, findings, match) -> None:
    from al_sim.data.folder import load_folder

    _xray14(tmp_path, rows)
    with pytest.raises(DataError, match=match):
        load_folder(root=str(tmp_path), manifest="Data_Entry.csv", findings=findings)


def test_plain_manifest_problems_are_named(tmp_path) -> None:
    from al_sim.data.folder import load_folder

    _images(tmp_path, ["a.png"])
    (tmp_path / "m.csv").write_text("file,effusion,No Finding,age\na.png,1,1,63\nzz.png,0,0,1\n")
    with pytest.raises(DataError) as err:
        load_folder(root=str(tmp_path), manifest="m.csv", findings=["effusion"])
    text = str(err.value)
    assert "unknown finding column(s) age" in text and "both 'No Finding'=1" in text
    assert "images/zz.png" in text and text.startswith("m.csv: ")


def test_manifest_without_a_test_split_asks_for_one(tmp_path) -> None:
    from al_sim.data.folder import load_folder

    _xray14(tmp_path, [(f, labels, "") for f, labels, _ in XRAY14_ROWS])
    with pytest.raises(DataError, match="split column.*test_fraction"):
        load_folder(root=str(tmp_path), manifest="Data_Entry.csv")


def test_pool_rows_without_findings_wait_for_an_expert(tmp_path) -> None:
    from omegaconf import OmegaConf

    from al_sim.app.components import build_oracle
    from al_sim.data.folder import load_folder

    rows = [*XRAY14_ROWS[:3], ("d.png", "", ""), ("e.png", "", "")]
    _xray14(tmp_path, [*rows, *XRAY14_ROWS[5:]])
    data = load_folder(root=str(tmp_path), manifest="Data_Entry.csv")
    assert data.pool_y[3:].tolist() == [[-1, -1, -1]] * 2
    cfg = OmegaConf.create({"oracle": {"name": "simulated", "noise_rate": 0.0},
                            "dataset": {"_target_": "x"}, "seed": 0})
    with pytest.raises(DataError, match="2 pool image.*dataset.manifest.*oracle=human"):
        build_oracle(cfg, data, tmp_path)
    _xray14(tmp_path, [*XRAY14_ROWS[:5], ("f.png", "", "test")])
    with pytest.raises(DataError, match="1 test or initial row.*line 7.*'No Finding'"):
        load_folder(root=str(tmp_path), manifest="Data_Entry.csv")
