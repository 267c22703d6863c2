"""Files that are not what they claim (issue 27): every reader answers with one clear error.

A generated hostile file per reader kind: images (a decompression bomb, truncated data,
NaN pixels), ``.npz`` members (a header claiming more than the file holds, a wrong
dtype), the pool's label CSV, and the MLflow store (a text file, a half-built store).
In-process for most; through the CLI once per kind.
"""

from __future__ import annotations

import csv
import re
import sqlite3
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from al_sim.data.folder import load_folder
from al_sim.data.medmnist import file_name, read_medmnist
from al_sim.runtime.errors import DataError, TrackingError
from al_sim.runtime.reading import Unreadable, reading
from tests.conftest import FAST_CLI, run_cli

CLASSES = ("a", "b")
SPLITS = {"train": 40, "val": 10, "test": 20}


# ----------------------------------------------------------------------------- hostile files
def bomb_png(path: Path, side: int = 30_000) -> None:
    """A valid PNG header claiming ``side x side`` pixels (far above Pillow's limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def truncated_png(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])


def nan_tiff(path: Path) -> None:
    pixels = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    pixels[3, 4] = np.nan
    pixels[5, 6] = np.inf
    Image.fromarray(pixels, mode="F").save(path)


def dicom_without_pixels(path: Path) -> None:
    """pydicom's own RT plan: a valid DICOM file that holds no image."""
    from pydicom.data import get_testdata_file

    path.write_bytes(Path(str(get_testdata_file("rtplan.dcm"))).read_bytes())


HOSTILE_IMAGES = {
    "decompression bomb": ("p03.png", bomb_png, "DecompressionBombError"),
    "truncated": ("p03.png", truncated_png, "truncated"),
    "NaN pixels": ("p03.tif", nan_tiff, "2 NaN or infinite pixel(s)"),
    # the reason in full, after the path (not the path again, clipped)
    "DICOM without pixels": ("p03.dcm", dicom_without_pixels,
                             "(the DICOM file has no pixel data (modality RTPLAN); "
                             "remove it from the images)"),
}


def folder(root: Path, hostile: str | None = None) -> Path:
    """A tiny image folder; with ``hostile``, one pool image replaced by that kind of file."""
    for c, name in enumerate(CLASSES):
        for i, part in ((0, "initial_labeled_images"), (1, "initial_labeled_images"),
                        (2, "test_images")):
            path = root / part / name / f"i{c}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (28, 28), 60 + 100 * c).save(path)
    pool = root / "unlabeled_pool_images"
    pool.mkdir(parents=True)
    names = [f"p{i:02d}.png" for i in range(8)]
    for name in names:
        Image.new("L", (28, 28), 90).save(pool / name)
    if hostile is not None:
        bad, make, _ = HOSTILE_IMAGES[hostile]
        (pool / "p03.png").unlink()
        make(pool / bad)
        names[3] = bad
    with (root / "pool_labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *((n, CLASSES[i % 2])
                                                      for i, n in enumerate(names))])
    return root


def npy_bytes(shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    """An ``.npy`` file whose header says ``shape`` / ``dtype`` and whose data is ``data``."""
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    return out.getvalue() + data


def archive(root: Path, compression: int = zipfile.ZIP_STORED, **members: bytes) -> Path:
    """A breastmnist-named archive of valid small splits, some members replaced by raw bytes."""
    rng = np.random.default_rng(0)
    path = root / file_name("breastmnist", 28)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for split, n in SPLITS.items():
            images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            labels = (np.arange(n) % 2).astype(np.uint8)[:, None]
            for key, array in ((f"{split}_images", images), (f"{split}_labels", labels)):
                raw = members.get(key, npy_bytes(array.shape, array.dtype.str, array.tobytes()))
                zf.writestr(f"{key}.npy", raw)
    return path


# ----------------------------------------------------------------------------- the mechanism
def test_reading_turns_any_failure_into_one_named_error() -> None:
    header = r"^f.bin: cannot read the header \(KeyError: 'x'\); fix it$"
    with pytest.raises(DataError, match=header), reading("f.bin", "the header", "fix it"):
        {}["x"]  # noqa: B018 - any library failure
    with pytest.raises(TrackingError, match="f.db: cannot read"), reading(
            "f.db", "the store", error=TrackingError):
        raise OSError("boom")
    with pytest.raises(DataError, match=r"this user can read it$"), reading("f.bin", "it"):
        raise FileNotFoundError(2, "No such file or directory", "f.bin")
    with pytest.raises(DataError, match=r"; fix it$"), reading("f.png", "it", "fix it"):
        raise OSError("cannot identify image file")  # Pillow's: the content, not the path
    with pytest.raises(MemoryError), reading("f.bin", "it"):  # keeps its own message and knobs
        raise MemoryError
    unreadable = Unreadable("replace them")
    for name in ("x.png", "y.png"):
        with unreadable.reading(name):
            raise ValueError(f"bad {name}")
    with pytest.raises(DataError, match=r"2 images cannot be read: x.png \(ValueError: bad x.png"
                                        r"\), y.png .*; replace them"):
        unreadable.check("images")


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("kind", list(HOSTILE_IMAGES))
def test_a_hostile_image_is_named(tmp_path: Path, kind: str) -> None:
    name, _, words = HOSTILE_IMAGES[kind]
    with pytest.raises(DataError, match=r"1 image\(s\) cannot be read: unlabeled_pool_images/"
                                        f"{name}.*{re.escape(words)}.*replace or remove"):
        load_folder(root=str(folder(tmp_path, kind)))


def test_a_finite_float_tiff_is_still_read(tmp_path: Path) -> None:
    root = folder(tmp_path)
    (root / "unlabeled_pool_images" / "p03.png").unlink()
    pixels = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    Image.fromarray(pixels, mode="F").save(root / "unlabeled_pool_images" / "p03.tif")
    rows = (root / "pool_labels.csv").read_text().replace("p03.png", "p03.tif")
    (root / "pool_labels.csv").write_text(rows)
    ds = load_folder(root=str(root))
    image = ds.pool_x[ds.pool_ids.index("unlabeled_pool_images/p03.tif"), 0].numpy()
    assert image.min() == 0 and image.max() == 255


def test_an_unreadable_labels_file_is_named(tmp_path: Path, monkeypatch) -> None:
    root = folder(tmp_path)
    real = Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "pool_labels.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)  # root reads through permission bits
    with pytest.raises(DataError, match=r"pool_labels.csv: cannot read the pool labels "
                                        r"\(PermissionError.*\); check that the file is there "
                                        r"and that this user can read it$"):
        load_folder(root=str(root))  # not "save it as UTF-8": the file never opened


# ----------------------------------------------------------------------------- npz members
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
@pytest.mark.parametrize("in_memory_max_mb", [None, 0.0], ids=["auto", "mapped"])
def test_a_header_claiming_more_than_the_file_holds(tmp_path: Path, compression: int,
                                                    in_memory_max_mb: float | None) -> None:
    lying = npy_bytes((40_000, 28, 28), "|u1", bytes(40 * 28 * 28))
    path = archive(tmp_path, compression, train_images=lying)
    with pytest.raises(DataError, match=r"breastmnist.npz: array 'train_images' claims 40000 x "
                                        r"28 x 28 uint8 \(31360000 bytes\) but the archive holds "
                                        r"31360 bytes of it; the file is truncated"):
        read_medmnist("breastmnist", root=tmp_path, in_memory_max_mb=in_memory_max_mb,
                      cache_dir=tmp_path / "cache")
    assert path.exists()


@pytest.mark.parametrize("member", [
    npy_bytes((40, 28, 28), "<f4", np.full(40 * 28 * 28, np.nan, np.float32).tobytes()),
    npy_bytes((40, 28, 28), "<U3", bytes(40 * 28 * 28 * 12)),
    b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage}\n",
], ids=["float NaN", "strings", "garbled header"])
def test_a_member_of_the_wrong_kind_is_named(tmp_path: Path, member: bytes) -> None:
    archive(tmp_path, train_images=member)
    with pytest.raises(DataError, match="breastmnist.npz.*'train_images'"):
        read_medmnist("breastmnist", root=tmp_path, in_memory_max_mb=0.0)


# ----------------------------------------------------------------------------- the MLflow store
def half_built_store(path: Path) -> None:
    """What a run killed in the middle of creating ``path`` left: initial tables, a migration
    applied, the schema version never stamped."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE metrics ADD COLUMN step BIGINT DEFAULT 0 NOT NULL")
    engine.dispose()


def test_a_store_that_is_a_text_file_is_refused(tmp_path: Path) -> None:
    from al_sim.report.reader import RunReader
    from al_sim.tracking.store import open_store

    db = tmp_path / "mlflow.db"
    db.write_text("these are my notes, not a database\n" * 20)
    for open_ in (open_store, RunReader):
        with pytest.raises(TrackingError, match=rf"{db}: cannot read the MLflow store "
                                                r"\(DatabaseError: file is not a database\); "
                                                f"it is not an SQLite database: move {db} away"):
            open_(f"sqlite:///{db}")


def test_a_half_built_store_says_delete_it(tmp_path: Path) -> None:
    from al_sim.tracking.store import open_store

    db = tmp_path / "mlflow.db"
    half_built_store(db)
    with pytest.raises(TrackingError, match=r"half-built MLflow store holding no runs .*"
                                            r"duplicate column name: step.*delete it") as err:
        open_store(f"sqlite:///{db}")
    assert "server" not in str(err.value)


def test_a_store_creation_cut_short_leaves_no_store(tmp_path: Path, monkeypatch) -> None:
    import mlflow.store.db.utils as db_utils

    from al_sim.tracking.store import open_store

    def killed(engine: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    db = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("AL_SIM_CACHE_DIR", str(tmp_path / "cache"))  # no empty store to copy
    with monkeypatch.context() as patch:
        patch.setattr(db_utils, "_upgrade_db", killed)
        with pytest.raises(KeyboardInterrupt):
            open_store(f"sqlite:///{db}")
    assert list(db.parent.iterdir()) == []  # neither a half-built store nor its temporary
    client = open_store(f"sqlite:///{db}")  # the next run builds it whole
    assert client.get_experiment_by_name("Default") is not None
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


# ----------------------------------------------------------------------------- through the CLI
def one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2 and exactly one ``error:`` line holding ``words``, no traceback."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def failed_runs(db: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("al_sim")
    return [r.info.status for r in client.search_runs([exp.experiment_id])]


@pytest.mark.slow
def test_cli_a_decompression_bomb_in_the_folder(tmp_path: Path) -> None:
    root = folder(tmp_path / "data", "decompression bomb")
    fast = [a for a in FAST_CLI if not a.startswith("dataset.")]
    proc = run_cli(["dataset=folder", f"dataset.root={root}", *fast], tmp_path, process=True)
    one_error_line(proc, "unlabeled_pool_images/p03.png", "DecompressionBombError")
    assert failed_runs(tmp_path / "mlflow.db") == ["FAILED"]


@pytest.mark.slow
def test_cli_an_npz_header_that_lies(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    archive(tmp_path / "data", train_images=npy_bytes((40_000, 28, 28), "|u1", bytes(100)))
    fast = [a for a in FAST_CLI if not a.startswith("dataset.")]
    proc = run_cli(["dataset=medmnist", "dataset.name=breastmnist",
                    f"dataset.root={tmp_path / 'data'}", "dataset.in_memory_max_mb=0", *fast],
                   tmp_path, process=True)
    one_error_line(proc, "breastmnist.npz", "'train_images' claims 40000 x 28 x 28")
    assert failed_runs(tmp_path / "mlflow.db") == ["FAILED"]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["al_sim.run", "al_sim.compare"])
def test_cli_a_store_that_is_a_text_file(tmp_path: Path, module: str) -> None:
    db = tmp_path / "mlflow.db"
    db.write_text("not a database\n")
    proc = run_cli([*FAST_CLI, "budget=tiny"] if module == "al_sim.run" else [], tmp_path,
                   module=module, process=True)
    one_error_line(proc, str(db), "file is not a database", "move")
    assert db.read_text() == "not a database\n"  # never overwritten
