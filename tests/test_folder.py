"""Image-folder datasets: layout, image conversion, every error by file name, MedMNIST export."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from al_sim.data.export_folder import class_folder_names, export, main
from al_sim.data.folder import load_folder
from al_sim.data.medmnist import load_medmnist
from al_sim.runtime.errors import ConfigError, DataError
from tests.conftest import SHARED_MEDMNIST, run_cli

needs_shared = pytest.mark.skipif(not (SHARED_MEDMNIST / "breastmnist.npz").is_file(),
                                  reason=f"real MedMNIST files not found in {SHARED_MEDMNIST}")
CLASSES = ("benign", "malignant")


def _png(path: Path, value: int = 128, size: tuple[int, int] = (28, 28), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def make_folder(root: Path, n_initial: int = 2, n_pool: int = 6, n_test: int = 2,
                test: bool = True) -> Path:
    """A tiny layout: class c images have grey value 60 + 100 c, so labels are checkable."""
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(n_initial):
            _png(root / "initial_labeled_images" / name / f"i{c}{i}.png", 60 + 100 * c)
        for i in range(n_test if test else 0):
            _png(root / "test_images" / name / f"t{c}{i}.png", 60 + 100 * c)
    for i in range(n_pool):
        _png(root / "unlabeled_pool_images" / f"p{i:02d}.png", 60 + 100 * (i % 2))
        rows.append((f"p{i:02d}.png", CLASSES[i % 2]))
    write_csv(root, rows)
    return root


def write_csv(root: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("file", "label")
              ) -> None:
    with (root / "pool_labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_layout_becomes_pool_initial_set_and_test(tmp_path: Path) -> None:
    ds = load_folder(root=str(make_folder(tmp_path)))
    assert ds.class_names == list(CLASSES)
    assert ds.pool_x.shape == (10, 1, 28, 28) and ds.pool_x.dtype == torch.uint8
    assert ds.initial_labeled.tolist() == [0, 1, 2, 3]
    assert ds.pool_ids[0] == "initial_labeled_images/benign/i00.png"
    assert ds.pool_ids[4] == "unlabeled_pool_images/p00.png"
    assert ds.pool_y.tolist() == [0, 0, 1, 1, 0, 1, 0, 1, 0, 1]
    assert (ds.pool_x[:, 0, 0, 0].numpy() == 60 + 100 * ds.pool_y).all()  # labels match images
    assert ds.test_y.tolist() == [0, 0, 1, 1] and ds.test_x.shape == (4, 1, 28, 28)


def test_mixed_sizes_and_modes_are_resized_and_converted(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_pool=0)
    pool = root / "unlabeled_pool_images"
    _png(pool / "big.jpg", 200, size=(64, 40))
    _png(pool / "red.png", (255, 0, 0), size=(20, 20), mode="RGB")
    _png(pool / "blue.bmp", (0, 0, 255), size=(28, 28), mode="RGB")
    _png(pool / "alpha.png", (0, 255, 0, 128), size=(28, 28), mode="RGBA")
    Image.fromarray(np.full((30, 30), 65535, np.uint16)).save(pool / "deep.tif")
    Image.new("P", (28, 28), 0).save(pool / "palette.png")
    names = ("big.jpg", "red.png", "blue.bmp", "alpha.png", "deep.tif", "palette.png")
    write_csv(root, [(n, "benign") for n in names])
    grey = load_folder(root=str(root), image_size=32)
    by_id = {i.split("/")[-1]: x for i, x in zip(grey.pool_ids, grey.pool_x, strict=True)}
    assert grey.pool_x.shape == (10, 1, 32, 32) and grey.test_x.shape[1:] == (1, 32, 32)
    assert abs(int(by_id["big.jpg"][0, 16, 16]) - 200) <= 2
    assert int(by_id["red.png"][0, 5, 5]) == 76  # ITU-R 601 luma of pure red
    assert int(by_id["deep.tif"][0, 5, 5]) == 255  # 16-bit full scale -> 255
    rgb = load_folder(root=str(root), channels=3)
    by_id = {i.split("/")[-1]: x for i, x in zip(rgb.pool_ids, rgb.pool_x, strict=True)}
    assert rgb.image_shape == (3, 28, 28)
    assert by_id["red.png"][:, 3, 3].tolist() == [255, 0, 0]
    assert by_id["blue.bmp"][:, 3, 3].tolist() == [0, 0, 255]
    assert by_id["alpha.png"][:, 3, 3].tolist() == [0, 255, 0]


@pytest.mark.parametrize("size", [128, 224])
def test_large_photos_and_scans_are_resized_to_128_and_224_px(tmp_path: Path, size: int) -> None:
    root = make_folder(tmp_path, n_pool=0)
    pool = root / "unlabeled_pool_images"
    pool.mkdir()
    ramp = np.tile(np.linspace(0, 255, 2048).astype(np.uint8), (1536, 1))  # dark left, bright right
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(pool / "photo.jpg", quality=95)
    scan = np.tile(np.linspace(0, 65535, 1200).astype(np.uint16)[:, None], (1, 900))  # rows ramp
    Image.fromarray(scan).save(pool / "scan.tif")
    _png(pool / "thumb.png", 90, size=(12, 12))
    names = ("photo.jpg", "scan.tif", "thumb.png")
    write_csv(root, [(n, "benign") for n in names])
    for channels in (1, 3):
        ds = load_folder(root=str(root), image_size=size, channels=channels)
        assert ds.image_shape == (channels, size, size) and ds.test_x.shape[1:] == ds.image_shape
        by_id = {i.split("/")[-1]: x.int() for i, x in zip(ds.pool_ids, ds.pool_x, strict=True)}
        photo, scan_x, thumb = by_id["photo.jpg"], by_id["scan.tif"], by_id["thumb.png"]
        assert photo[:, size // 2, 2].max() < 10 and photo[:, size // 2, -3].min() > 245
        assert abs(int(photo[0, size // 2, size // 2]) - 128) <= 4
        assert scan_x[0, 2, size // 2] < 10 and scan_x[0, -3, size // 2] > 245  # 16 bit -> 8 bit
        assert (thumb == 90).all()  # upscaled from 12 px


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    (root / "unlabeled_pool_images" / "p03.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1 image\(s\) cannot be read: unlabeled_pool_images/p03"):
        load_folder(root=str(root))


def test_pool_image_without_a_label_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    _png(root / "unlabeled_pool_images" / "extra.png")
    with pytest.raises(DataError, match="no row for 1 pool image.*unlabeled_pool_images/extra.png"):
        load_folder(root=str(root))


def test_csv_row_for_an_unknown_file_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_pool=2)
    write_csv(root, [("p00.png", "benign"), ("p01.png", "malignant"), ("ghost.png", "benign")])
    with pytest.raises(DataError, match=r"pool_labels.csv: .*not in unlabeled_pool_images.*ghost"):
        load_folder(root=str(root))


def test_unknown_class_label_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_pool=2)
    write_csv(root, [("p00.png", "benign"), ("p01.png", "cyst")])
    with pytest.raises(DataError, match=r"not a class \(benign, malignant\).*p01.png: 'cyst'"):
        load_folder(root=str(root))


def test_csv_may_list_initial_images_but_not_contradict_them(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_pool=2)
    rows = [("p00.png", "benign"), ("p01.png", "malignant")]
    write_csv(root, [*rows, ("initial_labeled_images/benign/i00.png", "benign")])
    assert load_folder(root=str(root)).n_pool == 6
    write_csv(root, [*rows, ("initial_labeled_images/benign/i00.png", "malignant")])
    with pytest.raises(DataError, match="conflicting labels.*i00.png"):
        load_folder(root=str(root))


def test_csv_needs_its_header(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_pool=2)
    write_csv(root, [("p00.png", "benign")], header=("image", "class"))
    with pytest.raises(DataError, match="header `file,label`"):
        load_folder(root=str(root))


@pytest.mark.parametrize(
    ("damage", "match"),
    [("no_root", "does not exist: set dataset.root"),
     ("no_csv", "pool_labels.csv not found"),
     ("no_pool_dir", "unlabeled_pool_images does not exist"),
     ("empty_initial", "initial_labeled_images has no class folders with images"),
     ("empty_pool", "unlabeled_pool_images has no images"),
     ("loose_initial", "outside class folders.*loose.png"),
     ("no_test", "test_images does not exist.*test_fraction"),
     ("empty_test", "test_images/ has no images"),
     ("strange_test_class", "class folder.*cyst")],
)
def test_layout_problems_are_clear_errors(tmp_path: Path, damage: str, match: str) -> None:
    root = make_folder(tmp_path / "data")
    if damage == "no_root":
        root = tmp_path / "nowhere"
    elif damage == "no_csv":
        (root / "pool_labels.csv").unlink()
    elif damage == "no_pool_dir":
        root = make_folder(tmp_path / "d2", n_pool=0)  # writes no pool folder
    elif damage in ("empty_initial", "empty_pool", "empty_test"):
        sub = {"empty_initial": "initial_labeled_images", "empty_pool": "unlabeled_pool_images",
               "empty_test": "test_images"}[damage]
        for path in (root / sub).rglob("*.png"):
            path.unlink()
    elif damage == "loose_initial":
        _png(root / "initial_labeled_images" / "loose.png")
    elif damage == "no_test":
        root = make_folder(tmp_path / "d2", test=False)
    elif damage == "strange_test_class":
        _png(root / "test_images" / "cyst" / "c.png")
    with pytest.raises(DataError, match=match):
        load_folder(root=str(root))


def test_test_fraction_holds_out_part_of_the_unlabelled_pool(tmp_path: Path) -> None:
    root = make_folder(tmp_path, n_pool=20, test=False)
    ds = load_folder(root=str(root), test_fraction=0.2)
    assert len(ds.test_y) == 4 and sorted(ds.test_y.tolist()) == [0, 0, 1, 1]
    assert ds.n_pool == 4 + 16 and ds.initial_labeled.tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="test_fraction"):
        load_folder(root=str(make_folder(tmp_path / "both")), test_fraction=0.2)


def test_root_is_required() -> None:
    with pytest.raises(ConfigError, match="dataset.root is not set"):
        load_folder()


# ----------------------------------------------------------------------------- export
def test_class_folder_names_are_safe_and_keep_label_order() -> None:
    assert class_folder_names(["malignant", "normal, benign"]) == ["malignant", "normal_benign"]
    assert class_folder_names(["b/c", "a"]) == ["0_b_c", "1_a"]


@needs_shared
def test_export_writes_the_same_images_as_the_npz_pool(tmp_path: Path) -> None:
    counts = export("breastmnist", tmp_path / "out", SHARED_MEDMNIST, initial=10, max_pool=60,
                    max_test=30)
    assert counts["initial"] == 10 and counts["unlabeled"] == 50 and counts["test"] == 30
    folder = load_folder(root=str(tmp_path / "out"))
    npz = load_medmnist(name="breastmnist", root=str(SHARED_MEDMNIST), max_pool=60)
    assert folder.class_names == ["malignant", "normal_benign"]
    assert len(folder.initial_labeled) == 10 and set(folder.pool_y[:10]) == {0, 1}
    order = np.argsort([p.split("/")[-1] for p in folder.pool_ids])  # train_<index>.png
    assert [folder.pool_ids[i].split("/")[-1][:-4] for i in order] == npz.pool_ids
    assert torch.equal(folder.pool_x[torch.from_numpy(order)], npz.pool_x)
    assert (folder.pool_y[order] == npz.pool_y).all()


@needs_shared
def test_export_refuses_a_non_empty_folder_and_reports_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["--name", "breastmnist", "--root", str(SHARED_MEDMNIST),
                 "--out", str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err and (tmp_path / "out" / "keep.txt").exists()
    assert main(["--name", "breastmnist", "--root", str(tmp_path), "--out",
                 str(tmp_path / "o2")]) == 2
    assert "breastmnist.npz not found" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")  # --out under a file: was a traceback, exit 1
    assert main(["--name", "breastmnist", "--root", str(SHARED_MEDMNIST),
                 "--out", str(tmp_path / "a_file" / "out")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: Not a directory: {tmp_path / 'a_file' / 'out'}")
    assert line.endswith("; check that the path exists and is writable, or give --out a folder "
                         "elsewhere")


@needs_shared
@pytest.mark.slow
def test_cli_runs_an_exported_folder_with_the_npz_labelled_counts(tmp_path: Path) -> None:
    proc = run_cli(["--name", "breastmnist", "--root", str(SHARED_MEDMNIST), "--out", "images",
                    "--initial", "20", "--max-pool", "120", "--max-test", "60"], tmp_path,
                   module="al_sim.data.export_folder")
    assert proc.returncode == 0, proc.stderr
    assert "dataset=folder dataset.root=images" in proc.stdout
    proc = run_cli(["dataset=folder", "dataset.root=images", "budget=tiny", "trainer.epochs=1",
                    "trainer.min_steps=2", "trainer.num_threads=1", "progress=false",
                    "tracking.enabled=false", "hydra.run.dir=run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "run" / "metrics.csv").open() as f:
        # the npz path (dataset.max_pool=120, budget=tiny) labels 20, 30, 40 as well
        assert [int(r["n_labeled"]) for r in csv.DictReader(f)] == [20, 30, 40]
    with (tmp_path / "run" / "labeled_set.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sum(r["round"] == "0" for r in rows) == 20
    assert all(r["id"].startswith("initial_labeled_images/") for r in rows if r["round"] == "0")
