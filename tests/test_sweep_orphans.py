"""A sweep launched again beside its own SLURM jobs that are still out is refused: the
decision on canned ``squeue`` output in-process, the refusal through the CLI with a
stand-in ``squeue`` / ``sbatch`` (the real cluster: tests/test_cluster_real.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from al_sim.app.launchers.orphans import (
    parse_squeue,
    refuse_beside_orphans,
    still_out,
    submitted_jobs,
    wait_for_workers,
)
from al_sim.runtime.errors import ConfigError
from al_sim.runtime.launcher_watch import RUNNING_DIR
from tests.conftest import FAST_CLI, run_cli

SLURM = "hydra_plugins.al_sim_launchers.AlSlurmLauncher"
SQUEUE = """\
101_1 RUNNING
101_3 PENDING
250 RUNNING
101_0 COMPLETING
"""


def submitted(folder: Path, *ids: str) -> None:
    """What submitit leaves in ``submitit_folder`` for each job it submitted."""
    for job in ids:
        (folder / job).mkdir(parents=True, exist_ok=True)
        (folder / job / f"{job}_submitted.pkl").write_bytes(b"")


def fake_tools(bin_dir: Path, squeue_out: str) -> Path:
    """``squeue`` printing ``squeue_out``; ``sbatch`` that leaves a mark if ever called."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue_out").write_text(squeue_out)
    tools = {"squeue": f'cat "{bin_dir}/squeue_out"\n',
             "sbatch": f'touch "{bin_dir}/sbatch_called"; echo "Submitted batch job 900"\n'}
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_the_sweep_jobs_squeue_still_lists_are_its_orphans() -> None:
    states = parse_squeue(SQUEUE)
    assert states["250"] == "RUNNING" and states["101_3"] == "PENDING"
    mine = {"101_0", "101_1", "101_2", "101_3", "99_0"}  # 101_2 and 99_0 ended
    assert still_out(mine, states) == [("101_0", "COMPLETING"), ("101_1", "RUNNING"),
                                       ("101_3", "PENDING")]
    assert still_out({"101_2"}, states) == [] and still_out(mine, {}) == []


def test_submitted_jobs_are_read_from_the_sweeps_submitit_folder(tmp_path: Path,
                                                                 monkeypatch) -> None:
    submitted(tmp_path / "sweep" / ".submitit", "101_0", "101_1", "57")
    (tmp_path / "sweep" / ".submitit" / "101_0" / "101_0_0_log.out").write_text("")
    assert submitted_jobs(f"{tmp_path}/sweep/.submitit/%j") == {"101_0", "101_1", "57"}
    monkeypatch.chdir(tmp_path)  # hydra.sweep.dir relative to the launch dir
    assert submitted_jobs("sweep/.submitit/%j") == {"101_0", "101_1", "57"}
    assert submitted_jobs(f"{tmp_path}/other/.submitit/%j") == set()


def test_the_refusal_names_the_jobs_and_how_to_wait_or_cancel(tmp_path: Path,
                                                              monkeypatch) -> None:
    folder = tmp_path / "sweep" / ".submitit"
    submitted(folder, "101_0", "101_1", "101_2")
    bin_dir = fake_tools(tmp_path / "bin", SQUEUE)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    launcher = {"_target_": SLURM, "submitit_folder": f"{folder}/%j"}
    with pytest.raises(ConfigError) as err:
        refuse_beside_orphans(launcher, "sweep")
    message = str(err.value)
    assert "2 SLURM job(s) of this sweep (sweep)" in message
    assert "101_0 COMPLETING, 101_1 RUNNING" in message and "101_2" not in message
    assert "squeue -j 101" in message and "scancel 101" in message
    refuse_beside_orphans({**launcher, "_target_": "x.AlRayLauncher"}, "sweep")  # not SLURM
    (bin_dir / "squeue_out").write_text("250 RUNNING\n")
    refuse_beside_orphans(launcher, "sweep")  # every earlier job ended
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    refuse_beside_orphans(launcher, "sweep")  # no squeue: sbatch will say what is wrong


def test_a_launch_beside_running_jobs_submits_nothing_and_touches_no_run(
        tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    submitted(sweep / ".submitit", "101_0", "101_1")
    bin_dir = fake_tools(tmp_path / "bin", "101_1 RUNNING\n")
    proc = run_cli(["-m", "hydra/launcher=al_submitit_slurm", "strategy=random,entropy",
                    "budget=tiny", f"hydra.sweep.dir={sweep}", *FAST_CLI], tmp_path,
                   env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "101_1 RUNNING" in errors[0] and "Traceback" not in proc.stderr
    assert not (bin_dir / "sbatch_called").exists()
    assert not (tmp_path / "mlflow.db").exists() and not (sweep / "al_sim_sweep.json").exists()


def marker(sweep: Path, pid: int) -> Path:
    """What a watched worker leaves while its job is in progress."""
    path = sweep / RUNNING_DIR / str(pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def test_a_local_launch_waits_for_an_earlier_launchs_workers_then_refuses(
        tmp_path: Path, capsys) -> None:
    stays = subprocess.Popen(["sleep", "60"])
    ends = subprocess.Popen(["sleep", "0.5"])
    try:
        marker(tmp_path, ends.pid)
        wait_for_workers(tmp_path, grace_s=30)  # it ends within the grace: the launch goes on
        assert f"processes {ends.pid}" in capsys.readouterr().err
        marker(tmp_path, stays.pid)
        with pytest.raises(ConfigError) as err:
            wait_for_workers(tmp_path, grace_s=0.3)
        assert f"processes {stays.pid}" in str(err.value) and f"kill {stays.pid}" in str(err.value)
    finally:
        stays.kill()
        stays.wait()
        ends.wait()
    reused = marker(tmp_path, os.getpid())  # a killed worker's marker, its pid reused since
    os.utime(reused, (time.time() - 3600, time.time() - 3600))
    wait_for_workers(tmp_path, grace_s=0.3)
