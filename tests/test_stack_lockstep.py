"""A stack whose members train in lock-step (``hydra.launcher.lockstep=true``): the mixed stack
gives the files and the MLflow contract of an unstacked run, and its failing member fails alone;
a killed stack resumes each member into its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.test_stack import ENV, TINY, client, job_runs

LOCKSTEP = ["hydra/launcher=al_stack", "hydra.launcher.lockstep=true"]


def _form(run_dir: Path) -> tuple[list[str], str]:
    """A run dir's file names and its metrics.csv header."""
    names = sorted(p.name for p in run_dir.iterdir())
    return names, (run_dir / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_a_mixed_lockstep_stack_has_the_form_of_runs_alone_and_a_failing_member_fails_alone(
        tmp_path: Path) -> None:
    sweep = ["-m", "strategy=random,bald,badge,raising", "seed=0", *TINY, "budget.rounds=1",
             f"hydra.searchpath=[file://{REPO / 'tests/conf'}]"]
    out = run_cli([*sweep, *LOCKSTEP, "hydra.launcher.stack_size=4"], tmp_path, timeout=600,
                  env=ENV, process=False)  # one worker: the stack runs in the launcher's process
    assert out.returncode == 1, out.stderr[-3000:]  # a sweep with a failed job exits 1
    assert "4 job(s) ran as 1 stack(s)" in out.stderr
    assert "raising strategy: this member fails on purpose" in out.stderr
    # round 0 trains all four together; the raising member fails at its first query and the
    # other three go on together in round 1
    assert out.stderr.count("lock-step: 4 member(s) trained together") == 1, out.stderr[-3000:]
    assert out.stderr.count("lock-step: 3 member(s) trained together") == 1, out.stderr[-3000:]
    alone = run_cli(["strategy=badge", "seed=0", *TINY[:-2], TINY[-1], "budget.rounds=1",
                     "hydra.run.dir=single"], tmp_path, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    want = _form(tmp_path / "single")
    dirs = {("raising" in (d / "config.yaml").read_text()): d
            for d in (tmp_path / "sweep").glob("[0-9]*")}
    finished = [d for d in (tmp_path / "sweep").glob("[0-9]*") if d != dirs[True]]
    assert len(finished) == 3 and all(_form(d) == want for d in finished)
    assert "error" in (dirs[True] / "run.log").read_text().lower()
    for d in finished:  # each member's own log, with its own lines only
        text = (d / "run.log").read_text()
        assert text.count(": started in ") == 1 and f"started in {d}" in text
    runs = job_runs(tmp_path)
    statuses = {r.data.tags["strategy"]: r.info.status for r in runs.values()}
    assert statuses == {"random": "FINISHED", "bald": "FINISHED", "badge": "FINISHED",
                        "raising": "FAILED"}, statuses
    mlflow = client(tmp_path)
    single = [r for r in mlflow.search_runs([mlflow.get_experiment_by_name("al_sim")
                                             .experiment_id])
              if r.data.tags.get("al_sim.sweep") is None and r.data.tags.get("al_sim.role")
              is None]
    keys = set(single[0].data.metrics) if single else None
    for run in runs.values():
        if run.info.status != "FINISHED":
            continue
        assert keys is None or set(run.data.metrics) == keys
        steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "test/accuracy")]
        assert steps == sorted(set(steps)) and len(steps) == 2  # step = labelled, once each


@pytest.mark.slow
def test_a_killed_lockstep_stack_resumes_each_member_into_its_run(tmp_path: Path) -> None:
    args = ["-m", "strategy=random,entropy", "seed=0", *TINY, "budget.rounds=2", *LOCKSTEP,
            "hydra.launcher.stack_size=2"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "al_sim.run", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(list((tmp_path / "sweep").glob("*/checkpoint.pt"))) < 2:  # both past round 0
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = job_runs(tmp_path)
    assert len(killed) == 2

    again = run_cli(args, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    finished = job_runs(tmp_path)
    assert {r.info.status for r in finished.values()} == {"FINISHED"}
    assert {n: r.info.run_id for n, r in finished.items()} == {
        n: r.info.run_id for n, r in killed.items()}  # the same runs, resumed
    for run in finished.values():
        steps = [m.step for m in client(tmp_path).get_metric_history(run.info.run_id,
                                                                      "test/accuracy")]
        assert sorted(steps) == sorted(set(steps)) and len(steps) == 3  # 2 rounds + initial
