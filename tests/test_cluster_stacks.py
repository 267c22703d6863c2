"""One cluster job per stack on real cluster software (``-m cluster``): the single-node SLURM
and the two-node Ray cluster of ``tests/test_cluster_real.py``, into the PostgreSQL-backed
MLflow server. A 4-job sweep runs as 2 stack jobs; a SLURM requeue (what preemption does:
SIGTERM, then the job queued again) resumes each member from its checkpoint, and so does
submitit's requeue at the time limit (USR2), members one after another or in lock-step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.app.launchers.orphans import submitted_jobs
from tests.slurm_cluster import SlurmCluster
from tests.test_cluster_real import (  # noqa: F401 - the module's fixtures, shared
    GRID,
    ONE_JOB,
    STEPS,
    Server,
    env_for,
    finish,
    launch,
    ray2,
    root,
    server,
    slurm,
    slurm_args,
    sweep_runs,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
STACKED = ["hydra.launcher.stack_size=2", *GRID, "hydra.callbacks.sweep.status_poll_s=2"]


def rounds_once(uri: str, runs: list) -> None:
    client = MlflowClient(tracking_uri=uri)
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "round")]
        assert sorted(steps) == STEPS, (run.info.run_name, steps)  # every round logged once


def test_slurm_four_jobs_run_as_two_stack_jobs_and_a_requeue_resumes_their_members(
        slurm: SlurmCluster, server: Server, root: Path) -> None:  # noqa: F811
    cwd = root / "slurm_stacks"
    cwd.mkdir()
    args = ["hydra/launcher=al_stack_slurm", *STACKED, f"tracking.uri={server.uri}",
            "tracking.experiment=slurm_stacks", f"hydra.sweep.dir={cwd / 'sweep'}",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10"]
    first = launch(args, cwd, slurm.env)
    folder = f"{cwd}/sweep/.submitit/%j"
    wait_for(lambda: len(list((cwd / "sweep").glob("*/checkpoint.pt"))) >= 2, first,
             "both stack jobs past a member's round 0")
    [array] = {job.split("_")[0] for job in submitted_jobs(folder)}
    _, before = sweep_runs(server.uri, "slurm_stacks")
    slurm.run(["scontrol", "requeue", array])  # as preemption: SIGTERM, then queued again
    out, err = finish(first)
    assert first.returncode == 0, err[-3000:]
    assert "4 job(s) ran as 2 stack job(s)" in err and "lost:" not in err
    assert len(submitted_jobs(folder)) == 2
    logs = "".join(p.read_text() for p in (cwd / "sweep" / ".submitit").rglob("*_log.*"))
    assert "SIGTERM from SLURM" in logs and "resuming" in logs
    assert not (cwd / "sweep" / "lost_jobs").exists()
    parent, children = sweep_runs(server.uri, "slurm_stacks")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {r.info.run_id for r in before} <= {r.info.run_id for r in children}  # resumed
    assert len({r.data.tags["al_sim.slurm_array"] for r in children}) == 2  # 2 array tasks
    rounds_once(server.uri, children)


@pytest.mark.parametrize(("lockstep", "rounds"), [(False, 12), (True, 6)])
def test_slurm_time_limit_requeue_of_a_stack_resumes_each_member(
        slurm: SlurmCluster, server: Server, root: Path,  # noqa: F811
        lockstep: bool, rounds: int) -> None:
    """One stack job of two members under a 2-minute limit with USR2 80 s before it: each
    USR2 requeues the whole stack job (its running members' runs KILLED meanwhile); on every
    attempt a FINISHED member is skipped, an interrupted one resumes from its checkpoint and
    the next starts; no failure, every round logged once.

    Rounds of 100 steps (~3.5 s a member here): one after another, the first member outlasts
    the attempt and the second starts on a later one; in lock-step both are cut mid-run. Up
    to 10 requeues (a slow machine needs more attempts), each waiting in SLURM's queue (the
    test cluster's 30 s, tests/slurm_cluster.py)."""
    experiment = f"slurm_stack_requeue_{'lockstep' if lockstep else 'sequential'}"
    cwd = root / experiment
    cwd.mkdir()
    args = slurm_args(cwd, server, experiment, "hydra.launcher.timeout_min=2",
                      "hydra.launcher.signal_delay_s=80", f"budget.rounds={rounds}",
                      "trainer.min_steps=100", "hydra.launcher.stack_size=2",
                      f"hydra.launcher.lockstep={str(lockstep).lower()}",
                      "hydra.launcher.max_num_timeout=10", grid=ONE_JOB, launcher="al_stack_slurm")
    proc = subprocess.run([sys.executable, "-m", "al_sim.run", "-m", *args, "seed=0,1"],
                          cwd=cwd, env=env_for(slurm.env), capture_output=True, text=True,
                          timeout=2400, check=False)  # requeues wait in SLURM's queue
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 job(s) ran as 1 stack job(s)" in proc.stderr and "lost:" not in proc.stderr
    assert len(submitted_jobs(f"{cwd}/sweep/.submitit/%j")) == 1
    logs = "".join(p.read_text() for p in (cwd / "sweep" / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs and "requeued by SLURM" in logs and "resuming" in logs
    assert not (cwd / "sweep" / "failed_jobs").exists()
    assert not (cwd / "sweep" / "lost_jobs").exists()
    parent, runs = sweep_runs(server.uri, experiment)
    assert parent.info.status == "FINISHED" and len(runs) == 2
    client = MlflowClient(tracking_uri=server.uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "round")]
        assert sorted(steps) == list(range(20, 30 + 10 * rounds, 10)), run.info.run_name


def test_ray_four_jobs_run_as_two_stack_tasks(ray2, server: Server,  # noqa: F811
                                              root: Path) -> None:  # noqa: F811
    address, _worker = ray2
    cwd = root / "ray_stacks"
    cwd.mkdir()
    args = ["hydra/launcher=al_stack_ray", *STACKED, f"tracking.uri={server.uri}",
            "tracking.experiment=ray_stacks", "hydra.sweep.dir=sweep"]
    proc = subprocess.run([sys.executable, "-m", "al_sim.run", "-m", *args], cwd=cwd,
                          env=env_for({"RAY_ADDRESS": address}), capture_output=True,
                          text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 job(s) run as 2 stack task(s)" in proc.stderr
    parent, children = sweep_runs(server.uri, "ray_stacks")
    assert parent.info.status == "FINISHED" and len(children) == 4
    rounds_once(server.uri, children)
