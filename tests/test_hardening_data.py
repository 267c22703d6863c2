"""Hardening: data that lies or is odd, and resumes on changed data (issue 15, first class).

Bad data, run in-process as the CLI runs it: one ``error:`` line naming the file and
the fix, the MLflow run FAILED (never FINISHED); tests/test_bad_input.py takes a data
error through the real CLI. Faults: a resume on other data is refused with the
difference named.
"""

from __future__ import annotations

import csv
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from al_sim.core.events import LoopState, RunInfo
from al_sim.data.base import ALDataset
from al_sim.maths.metrics import classification_metrics
from al_sim.runtime.errors import DataError
from al_sim.runtime.run_lock import RunDirLock
from al_sim.sinks.checkpoint import Checkpointer, data_fingerprint
from tests.conftest import FAST_CLI, assert_failed_runs_only, assert_refused, refusal, run_cli
from tests.test_bad_input import folder_layout
from tests.test_resume import start_and_stop_after

FAST = [a for a in FAST_CLI if not a.startswith("dataset.")]
FOLDER_ARGS = ["dataset=folder", "budget.query_size=5", "budget.rounds=1", *FAST]


def _latin1_csv(root: Path) -> list[str]:
    (root / "unlabeled_pool_images" / "p0.png").rename(root / "unlabeled_pool_images" / "é.png")
    rows = (root / "pool_labels.csv").read_text().replace("p0.png", "é.png")
    (root / "pool_labels.csv").write_bytes(rows.encode("latin-1"))
    return []


def _non_utf8_name(root: Path) -> list[str]:
    pool = os.fsencode(root / "unlabeled_pool_images")
    os.rename(os.path.join(pool, b"p0.png"), os.path.join(pool, b"p\xe9.png"))
    return []


def _link(root: Path, rel: str, target: Path) -> list[str]:
    (root / rel).symlink_to(target)
    return []


def _outside(root: Path) -> list[str]:
    outside = root.parent / "elsewhere.png"
    (root / "unlabeled_pool_images" / "p1.png").rename(outside)
    return _link(root, "unlabeled_pool_images/p1.png", outside)


# name -> (alter the valid folder, words of the error line)
CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "empty class folder": (lambda r: (r / "initial_labeled_images" / "c").mkdir() or [],
                           ["c", "no images", "remove the empty folder"]),
    "latin-1 labels csv": (_latin1_csv, ["pool_labels.csv", "not UTF-8", "iconv"]),
    "non-UTF-8 file name": (_non_utf8_name, ["p0.png", "no row"]),
    "image size too small for the model": (lambda r: ["dataset.image_size=2"],
                                           ["2x2", "dataset.image_size"]),
    "pool image linked from outside the root": (_outside, ["p1.png", "outside dataset.root"]),
    "dangling link in the initial set": (
        lambda r: _link(r, "initial_labeled_images/a/gone.png", r / "nowhere.png"),
        ["initial_labeled_images/a", "gone.png", "missing"]),
    "dangling link in the test set": (
        lambda r: _link(r, "test_images/b/gone.png", r / "nowhere.png"),
        ["test_images/b", "gone.png", "missing"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_odd_folder_data_is_refused_clearly(case: str, tmp_path: Path) -> None:
    alter, words = CASES[case]
    root = folder_layout(tmp_path / "data")
    extra = alter(root)
    line = refusal([*FOLDER_ARGS, f"dataset.root={root}", *extra], tmp_path)
    for word in words:
        assert word in line, f"{word!r} not in: {line}"
    assert_failed_runs_only(tmp_path)


@pytest.mark.slow
def test_folder_full_budget_labels_every_image(tmp_path: Path) -> None:
    root = folder_layout(tmp_path / "data")  # 8 initial + 30 pool images
    proc = run_cli(["dataset=folder", f"dataset.root={root}", "budget=full", *FAST,
                    "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["n_labeled"] for r in rows] == ["38"]


@pytest.mark.slow
def test_resume_on_a_changed_pool_is_refused(tmp_path: Path) -> None:
    root = folder_layout(tmp_path / "data")
    run_dir = tmp_path / "run"
    args = ["dataset=folder", f"dataset.root={root}", "budget.query_size=2", "budget.rounds=10",
            *FAST, "trainer.min_steps=30", f"hydra.run.dir={run_dir}"]
    proc = start_and_stop_after(args, tmp_path, run_dir, rounds=1, sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    rows = [("file", "label")] + [(f"p{i}.png", "ab"[i % 2]) for i in range(35)]
    folder_layout(root, pool_labels=rows[1:])  # five images added to the pool
    again = run_cli(args, tmp_path)
    message = assert_refused(again, tmp_path, ["other data", "added", "p30.png", "resume=false"])
    assert "the pool had 38 images, now 43" in message


def _dataset(n: int, ids: list[str] | None = None, shift: int = 0) -> ALDataset:
    x = torch.arange(n * 16, dtype=torch.int64).reshape(n, 1, 4, 4).add(shift).remainder(256)
    return ALDataset("t", x.to(torch.uint8), np.arange(n) % 2, x[:4].to(torch.uint8),
                     np.arange(4) % 2, ["a", "b"], pool_ids=ids)


def _resumed_checkpointer(tmp_path: Path, saved: ALDataset) -> Checkpointer:
    state = LoopState(round=0, pool=None, oracle={}, result=None, model_state={},
                      callbacks={"checkpoint": {"data": data_fingerprint(saved)}})
    sink = Checkpointer()
    sink.setup(RunInfo(tmp_path, tmp_path, "t", {}, {}, resume=state))
    return sink


@pytest.mark.parametrize(("now", "words"), [
    (_dataset(6, [f"i{k}" for k in range(6)]), ["removed: i6, i7"]),
    (_dataset(8, [f"i{k}" for k in range(8)], shift=1), ["content hash"]),
    (_dataset(8, [f"i{k}" for k in (1, 0, 2, 3, 4, 5, 6, 7)]), ["another order"]),
])
def test_checkpoint_refuses_other_data(tmp_path: Path, now: ALDataset,
                                       words: list[str]) -> None:
    sink = _resumed_checkpointer(tmp_path, _dataset(8, [f"i{k}" for k in range(8)]))
    with pytest.raises(DataError) as err:
        sink.on_run_start(now, 3)
    for word in words:
        assert word in str(err.value)


def test_checkpoint_accepts_the_same_data(tmp_path: Path) -> None:
    sink = _resumed_checkpointer(tmp_path, _dataset(8))
    sink.on_run_start(_dataset(8), 3)
    assert sink.state_dict()["data"] == data_fingerprint(_dataset(8))


def test_auroc_with_a_class_absent_from_the_test_labels() -> None:
    y = np.array([0, 0, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
    assert classification_metrics(y, probs)["auroc"] == 1.0


def test_a_second_run_into_a_run_dir_in_use_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    lock = RunDirLock(run_dir).acquire()  # a live run owns the dir
    try:
        line = refusal(["budget=tiny", *FAST_CLI, f"hydra.run.dir={run_dir}"], tmp_path)
    finally:
        lock.release()
    for word in (str(run_dir), "in use", f"pid {os.getpid()}", "hydra.run.dir"):
        assert word in line, f"{word!r} not in: {line}"
    assert not (run_dir / "queries.csv").exists()


class _Payload:
    """Pickled, it would touch a file when loaded (what a hostile checkpoint carries)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["garbage", "empty", "hostile", "other_torch_file"])
def test_an_unreadable_checkpoint_is_one_line_and_runs_nothing(tmp_path: Path,
                                                              content: str) -> None:
    """torch's own text for a refused pickle spans lines and advises weights_only=False: the
    user reads one line that says start over, and nothing in the file is run."""
    from al_sim.run import error_line
    from al_sim.runtime.errors import ALSimError
    from al_sim.sinks import checkpoint

    path, marker = tmp_path / "checkpoint.pt", tmp_path / "payload_ran"
    if content == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(20_000))
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "hostile":
        torch.save({"version": 3, "x": _Payload(marker)}, path)
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ALSimError) as refused:
        checkpoint.load(path)
    line = error_line(refused.value)
    assert line is not None and "\n" not in line, line
    assert "\n" not in str(refused.value)  # as compare, label and the sweep checks print it
    assert str(ALSimError("torch said:\n  two lines\n")) == "torch said: two lines"
    assert line.startswith(f"error: cannot read the checkpoint {path}") and "resume=false" in line
    assert "weights_only" not in line and not marker.exists()
