"""One cluster job per stack on real cluster software (``-m cluster``): the single-node SLURM
and the two-node Ray cluster of ``tests/test_cluster_real.py``, into the PostgreSQL-backed
MLflow server. A 4-job sweep runs as 2 stack jobs; a SLURM requeue (what preemption does:
SIGTERM, then the job queued again) resumes each member from its checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from al_sim.app.launchers.orphans import submitted_jobs
from tests.slurm_cluster import SlurmCluster
from tests.test_cluster_real import (  # noqa: F401 - the module's fixtures, shared
    GRID,
    STEPS,
    Server,
    env_for,
    finish,
    launch,
    ray2,
    root,
    server,
    slurm,
    sweep_runs,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
STACKED = ["hydra.launcher.stack_size=2", *GRID, "hydra.callbacks.sweep.status_poll_s=2"]


def rounds_once(uri: str, runs: list) -> None:
    from mlflow.tracking import MlflowClient

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
