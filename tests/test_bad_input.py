"""Bad input: one clear message naming the field or file and the fix, no run passed off as done.

Every case is composed and executed in-process exactly as ``python -m al_sim.run``
composes and executes it, and mapped to its ``error:`` line by the CLI's own
``error_line``; the MLflow run is FAILED or never created. One case per kind of
failure (composition, data file, output dir, training) also runs through the real
CLI: exit status 2, exactly one ``error:`` line, no traceback.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FAST_CLI, assert_failed_runs_only, assert_refused, refusal, run_cli


def medmnist_npz(path: Path, train=None, test=None, n_classes: int = 2, **extra) -> None:
    """A small archive in the official layout (pneumoniamnist-like), optionally altered."""
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)

    def labels(n: int) -> np.ndarray:
        return (np.arange(n) % n_classes).astype(np.uint8).reshape(-1, 1)

    arrays = {"train_images": images(60), "train_labels": labels(60),
              "val_images": images(20), "val_labels": labels(20),
              "test_images": images(30), "test_labels": labels(30)}
    arrays.update(train or {})
    arrays.update(test or {})
    arrays.update(extra)
    np.savez(path, **arrays)


def folder_layout(root: Path, pool_labels: list[tuple[str, str]] | None = None,
                  broken: str | None = None) -> Path:
    """A valid folder dataset (classes a/b) unless told otherwise."""
    rng = np.random.default_rng(0)

    def save(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)

    for cls in ("a", "b"):
        for i in range(4):
            save(root / "initial_labeled_images" / cls / f"{cls}{i}.png")
            save(root / "test_images" / cls / f"t{cls}{i}.png")
    rows = pool_labels or [(f"p{i}.png", "ab"[i % 2]) for i in range(30)]
    for name, _ in rows:
        if not name.startswith("ghost"):  # a CSV row whose image does not exist
            save(root / "unlabeled_pool_images" / name)
    if broken:
        (root / "unlabeled_pool_images" / broken).write_bytes(b"not an image")
    with (root / "pool_labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows])
    return root


def _pickled(tmp: Path) -> list[str]:
    path = tmp / "pneumoniamnist.npz"
    medmnist_npz(path)
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}] * 60, dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as zf:  # replace train_labels by a pickled object array
        data = {n: zf.read(n) for n in zf.namelist() if n != "train_labels.npy"}
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in data.items():
            zf.writestr(name, blob)
        zf.writestr("train_labels.npy", buf.getvalue())
    return _medmnist_args(tmp)


def _medmnist_args(tmp: Path) -> list[str]:
    return ["dataset=medmnist", f"dataset.root={tmp}", "budget=tiny"]


def _corrupt(tmp: Path) -> list[str]:
    (tmp / "pneumoniamnist.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    return _medmnist_args(tmp)


def _wrong_keys(tmp: Path) -> list[str]:
    np.savez(tmp / "pneumoniamnist.npz", x=np.zeros((3, 28, 28), np.uint8))
    return _medmnist_args(tmp)


def _empty_pool(tmp: Path) -> list[str]:
    medmnist_npz(tmp / "pneumoniamnist.npz", train={
        "train_images": np.zeros((0, 28, 28), np.uint8),
        "train_labels": np.zeros((0, 1), np.uint8)})
    return _medmnist_args(tmp)


def _root_is_a_file(tmp: Path) -> list[str]:
    (tmp / "pneumoniamnist.npz").write_bytes(b"")
    return ["dataset=medmnist", f"dataset.root={tmp / 'pneumoniamnist.npz'}", "budget=tiny"]


def _mixed_channels(tmp: Path) -> list[str]:
    rgb = np.zeros((30, 28, 28, 3), dtype=np.uint8)
    medmnist_npz(tmp / "pneumoniamnist.npz", test={"test_images": rgb})
    return _medmnist_args(tmp)


def _test_class_missing(tmp: Path) -> list[str]:
    medmnist_npz(tmp / "pneumoniamnist.npz",
                 train={"train_labels": np.zeros((60, 1), np.uint8)})
    return _medmnist_args(tmp)


def _folder(tmp: Path, **kwargs) -> list[str]:
    return ["dataset=folder", f"dataset.root={folder_layout(tmp / 'data', **kwargs)}",
            "budget.query_size=5", "budget.rounds=1"]


def _unwritable(tmp: Path) -> list[str]:
    (tmp / "a_file").write_text("x")
    return ["budget=tiny", f"hydra.run.dir={tmp / 'a_file' / 'run'}"]


# name -> (build args in tmp, words the error line must contain, whether a run may exist)
CASES: dict[str, tuple[Callable[[Path], list[str]], list[str], bool]] = {
    "unknown strategy": (lambda t: ["strategy=smartest"], ["strategy/smartest", "entropy"],
                         False),
    "unknown dataset": (lambda t: ["dataset=imagenet"], ["dataset/imagenet", "synthetic"],
                        False),
    "unknown model": (lambda t: ["model=vit"], ["model/vit", "simple_cnn"], False),
    "budget larger than pool": (lambda t: ["budget.initial=390", "budget.rounds=3"],
                                ["pool has only 400", "budget.rounds"], True),
    "zero query size": (lambda t: ["budget.query_size=0"], ["budget.query_size", "> 0"], False),
    "negative initial": (lambda t: ["budget.initial=-3"], ["budget.initial", "> 0"], False),
    "ill-typed value": (lambda t: ["budget.rounds=ten"], ["budget.rounds", "ten"], False),
    "missing dataset file": (_medmnist_args, ["pneumoniamnist.npz", "dataset.root"], True),
    "corrupt npz": (_corrupt, ["pneumoniamnist.npz", "re-download"], True),
    "npz with wrong keys": (_wrong_keys, ["train_images"], True),
    "pickled npz": (_pickled, ["train_labels"], True),
    "archive with an empty pool": (_empty_pool, ["pneumoniamnist.npz", "'train_images' holds no "
                                                 "images", "re-download"], True),
    "dataset file is a folder": (
        lambda t: (t / "pneumoniamnist.npz").mkdir() or _medmnist_args(t),
        ["pneumoniamnist.npz is not a file", "dataset.root="], True),
    "root names a file": (_root_is_a_file, ["pneumoniamnist.npz is not a folder",
                                            "dataset.root="], True),
    "mixed channel counts": (_mixed_channels, ["test"], True),
    "test class missing from training": (_test_class_missing, ["never occur in the pool"],
                                         True),
    "unreadable image": (lambda t: _folder(t, broken="p3.png"), ["p3.png"], True),
    "labels csv with unknown file": (
        lambda t: _folder(t, pool_labels=[*[(f"p{i}.png", "ab"[i % 2]) for i in range(20)],
                                          ("ghost.png", "a")]), ["ghost.png"], True),
    "labels csv with unknown class": (
        lambda t: _folder(t, pool_labels=[*[(f"p{i}.png", "ab"[i % 2]) for i in range(20)],
                                          ("p20.png", "zebra")]), ["zebra"], True),
    "unwritable output dir": (_unwritable, ["a_file", "hydra.run.dir"], False),
    "unreachable tracking server": (lambda t: ["tracking.uri=http://127.0.0.1:9",
                                               "tracking.connect_wait_s=2"],
                                    ["127.0.0.1:9", "tracking.uri"], False),
    "unreachable tracking database": (
        lambda t: ["tracking.uri=postgresql+psycopg2://al:s3cret@127.0.0.1:9/mlflow",
                   "tracking.connect_wait_s=0"],
        ["database server", "127.0.0.1:9", "al:***@", "tracking.uri"], False),
    "tracking uri MLflow cannot open": (
        lambda t: ["tracking.uri=ftp://files.example/mlflow"],
        ["tracking.uri=ftp://files.example/mlflow is not a store MLflow can open", "sqlite://",
         "set tracking.uri=sqlite:///<dir>/mlflow.db"], False),
    "empty experiment name": (lambda t: ["tracking.experiment="],
                              ["tracking.experiment must be a name", "tracking.experiment=al_sim"],
                              False),
    "cuda without a GPU": (lambda t: ["trainer.device=cuda"], ["trainer.device"], True),
    "bad resume mode": (lambda t: ["resume=maybe"], ["resume", "set resume=auto"], False),
    "misspelt key": (lambda t: ["budget.round=3"],
                     ["budget.round is not a setting", "did you mean budget.rounds?",
                      "conf/budget/"], False),
    "misspelt key appended": (lambda t: ["+trainer.epoch=3"],
                              ["trainer.epoch is not a setting",
                               "did you mean trainer.epochs?"], False),
}


def _fast(args: list[str]) -> list[str]:
    """FAST_CLI, less its synthetic-data sizes when the case picks another dataset."""
    return [a for a in FAST_CLI if not a.startswith("dataset.")
            or not any(x.startswith("dataset=") for x in args)]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_the_fix(case: str, tmp_path: Path) -> None:
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is visible: trainer.device=cuda is valid here (tests/test_device.py)")
    build, words, run_may_exist = CASES[case]
    data = tmp_path / "data_in"
    data.mkdir()
    args = build(data)
    line = refusal([*args, *_fast(args)], tmp_path)
    assert line.startswith("error: ") and "\n" not in line, line
    for word in words:
        assert word in line, f"{word!r} not in: {line}"
    if not run_may_exist:
        assert not (tmp_path / "mlflow.db").exists()
    assert_failed_runs_only(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown strategy", "corrupt npz", "unwritable output dir"])
def test_each_kind_of_bad_input_through_the_cli(case: str, tmp_path: Path) -> None:
    build, words, _ = CASES[case]
    data = tmp_path / "data_in"
    data.mkdir()
    args = build(data)
    proc = run_cli([*args, *_fast(args)], tmp_path, timeout=180, process=True)
    assert_refused(proc, tmp_path, words)
    assert_failed_runs_only(tmp_path)
