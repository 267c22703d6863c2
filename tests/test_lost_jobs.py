"""A lost sweep job never loses the sweep (``al_sim.app.lost_jobs``, ``al_sim.app.launchers``).

A job killed mid-run under the submitit launcher: one ``lost:`` line naming it and its run,
that run KILLED, the other job FINISHED, the parent FAILED with the list, exit 3 and no
traceback; re-running the same command resumes only the lost job, into the same run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.app.launchers.orphans import submitted_jobs
from tests import fork_server
from tests.conftest import (
    FAST_CLI,
    QUICK_POLL,
    all_experiments,
    run_cli,
    start_cli,
    submitit_tasks,
)

pytestmark = pytest.mark.slow
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')

STEPS = [20, 30, 40, 50, 60, 70]


def sweep_args(cwd: Path) -> list[str]:
    return ["-m", "hydra/launcher=al_submitit_local", "seed=0,1", "budget=tiny",
            "budget.rounds=5", *FAST_CLI, QUICK_POLL, f"hydra.sweep.dir={cwd / 'sweep'}"]


def launch(cwd: Path) -> fork_server.Process:
    return start_cli(sweep_args(cwd), cwd)


def runs(cwd: Path) -> tuple[object, dict[str, object]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    found = client.search_runs(all_experiments(client))
    [parent] = [r for r in found if r.data.tags.get("al_sim.role") == "sweep"]
    jobs = {r.data.tags["seed"]: r for r in found if r.data.tags.get("al_sim.role") is None}
    return parent, jobs


def test_a_killed_job_is_reported_lost_and_resumed_alone(tmp_path: Path) -> None:
    first = launch(tmp_path)
    try:
        deadline = time.monotonic() + 300
        while len(list((tmp_path / "sweep").glob("*/checkpoint.pt"))) < 2:  # both past round 0
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        victim = submitit_tasks(tmp_path / "sweep")[0]
        os.kill(victim, signal.SIGKILL)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 3, err[-3000:]
    assert "Traceback" not in err
    lost = [line for line in err.splitlines() if line.startswith("lost: job")]
    assert len(lost) == 1 and "marked KILLED" in lost[0], err[-3000:]
    [error] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "1 sweep job(s) lost" in error and "run the same command again" in error
    parent, jobs = runs(tmp_path)
    lost_seed = next(seed for seed, run in jobs.items() if run.info.run_id in lost[0])
    other = "1" if lost_seed == "0" else "0"
    assert jobs[lost_seed].info.status == "KILLED"
    assert jobs[other].info.status == "FINISHED"  # the other job ran to its end
    assert parent.info.status == "FAILED"
    assert f"seed={lost_seed}" in parent.data.tags["al_sim.lost_jobs"]

    again = run_cli(sweep_args(tmp_path), tmp_path, timeout=600)  # the store is there
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skipped: job {other} " in again.stderr  # not submitted again: 2 jobs, then 1
    assert len(submitted_jobs(str(tmp_path / "sweep" / ".submitit/%j"))) == 3
    parent2, jobs2 = runs(tmp_path)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert "al_sim.lost_jobs" not in parent2.data.tags
    assert {s: r.info.run_id for s, r in jobs2.items()} == {
        s: r.info.run_id for s, r in jobs.items()}  # resumed into the same runs
    assert jobs2[other].info.end_time == jobs[other].info.end_time  # skipped, not re-run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert jobs2[lost_seed].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(jobs2[lost_seed].info.run_id, "round")]
    assert sorted(steps) == STEPS
