"""A run whose data files change while it runs fails, naming the file (issue 27)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from al_sim.app.source_watch import SourceWatch
from al_sim.core.events import QueryRecord, RunCallback
from al_sim.data.base import ALDataset
from al_sim.data.medmnist import load_medmnist
from al_sim.data.sources import SourceFile, check_unchanged
from al_sim.runtime.errors import DataError
from tests.conftest import assert_failed_runs_only, refusal
from tests.test_bad_input import folder_layout
from tests.test_hardening_data import FOLDER_ARGS
from tests.test_medmnist import write_npz


def _cp_p(src_bytes: bytes, dest: Path) -> None:
    """Overwrite ``dest`` as ``cp -p`` would with a copy whose mtime is the old one's."""
    old = dest.stat()
    dest.write_bytes(src_bytes)
    os.utime(dest, ns=(old.st_atime_ns, old.st_mtime_ns))


def test_only_a_content_change_counts(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"first")
    source = SourceFile.of(path)
    os.utime(path, ns=(10**9, 10**9))  # touch and chmod move the stat, not the content
    path.chmod(0o600)
    assert source.changed() is None
    _cp_p(b"other", path)  # same size, same mtime: only the content (and ctime) differ
    assert source.changed() == "its content is not what the run read"
    path.unlink()
    assert source.changed() == "it was deleted or moved away"
    with pytest.raises(DataError, match=rf"^{path} changed while the run was using it \(it was "
                                        r"deleted.*noticed after round 3\).*resume=false"):
        check_unchanged([source], "after round 3")


def test_a_replaced_medmnist_archive_is_named_after_the_round(tmp_path: Path) -> None:
    archive = write_npz(tmp_path)
    dataset = load_medmnist(name="breastmnist", root=str(tmp_path))
    assert [s.path for s in dataset.sources] == [archive]
    watch = SourceWatch()
    watch.on_run_start(dataset, 2)
    watch.on_round_end(_round(0))  # unchanged: nothing said
    corrected = tmp_path / "corrected.npz"
    np.savez(corrected, **{k: v + (k == "train_images") for k, v in np.load(archive).items()})
    shutil.copystat(archive, corrected)  # rsync -a: the old mtime, a new inode
    os.replace(corrected, archive)
    with pytest.raises(DataError, match=rf"{archive} changed while the run was using it \(its "
                                        r"content.*after round 1"):
        watch.on_round_end(_round(1))


def _round(r: int):
    from al_sim.core.events import FitReport, RoundResult

    return RoundResult(round=r, n_labeled=1, metrics={}, train_s=0, query_s=0,
                       fit=FitReport(epochs=1, steps=1, train_loss=0.0))


class ChangeAPoolImage(RunCallback):
    """Rewrites one pool image once the first round's batch is labelled (a user's edit)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        if record.round == 1:
            _cp_p(self.path.read_bytes()[::-1], self.path)


def test_a_folder_run_fails_when_an_image_changes_under_it(tmp_path: Path) -> None:
    root = folder_layout(tmp_path / "data")
    image = root / "unlabeled_pool_images" / "p3.png"
    line = refusal([*FOLDER_ARGS, f"dataset.root={root}",
                    "+callbacks.change._target_=tests.test_source_watch.ChangeAPoolImage",
                    f"+callbacks.change.path={image}"], tmp_path)
    assert line.startswith(f"error: {image} changed while the run was using it"), line
    assert "after round 1" in line
    assert_failed_runs_only(tmp_path)
