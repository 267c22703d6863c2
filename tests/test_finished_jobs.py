"""A sweep run again starts no job whose run finished with the same settings
(:mod:`al_sim.app.finished_jobs`); anything else is still the job's to run or refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST_CLI, run_cli

pytestmark = pytest.mark.slow


def test_a_rerun_starts_only_the_jobs_whose_run_did_not_finish(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # n_jobs=1: joblib runs the jobs in the launcher's process (in-process here)
    base = ["-m", "hydra/launcher=al_joblib", "hydra.launcher.n_jobs=1", "strategy=random",
            "seed=0,1", "budget=tiny", "budget.rounds=1", *FAST_CLI, f"hydra.sweep.dir={sweep}"]

    def sweep_again(*extra: str):
        return run_cli([*base, *extra], tmp_path, process=False)

    first = sweep_again()
    assert first.returncode == 0, first.stderr[-2000:]
    written = {p: p.stat().st_mtime_ns for p in sweep.glob("*/*.csv")}
    assert len(written) == 6  # 2 jobs x metrics, queries, labeled_set

    again = sweep_again()
    assert again.returncode == 0, again.stderr[-2000:]
    skipped = [line for line in again.stderr.splitlines() if line.startswith("skipped: ")]
    assert [line.split("[")[0] for line in skipped] == ["skipped: job 0 ", "skipped: job 1 "]
    assert all("already finished" in line and "resume=false" in line for line in skipped)
    assert "\t#" not in again.stdout  # no job launched
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing rewritten

    # other settings, a damaged checkpoint: started, and the job says what it found
    changed = sweep_again("budget.rounds=2")
    assert changed.returncode == 1 and "different config (budget.rounds: 1 -> 2)" in changed.stderr
    assert "skipped: " not in changed.stderr
    (sweep / "0" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    damaged = sweep_again()
    assert damaged.returncode == 1 and "cannot read the checkpoint" in damaged.stderr
    assert [line[:15] for line in damaged.stderr.splitlines()
            if line.startswith("skipped: ")] == ["skipped: job 1 "]

    fresh = sweep_again("resume=false")  # told to run them again: they run
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "skipped: " not in fresh.stderr
    assert all(p.stat().st_mtime_ns > written[p] for p in written)
