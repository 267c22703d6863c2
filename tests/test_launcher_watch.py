"""A killed or interrupted joblib launcher: its workers stop at once and nothing is duplicated."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests import fork_server
from tests.conftest import FAST_CLI, all_experiments, children, run_cli, start_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")]

# Two jobs on two workers, long enough (12 rounds) to be stopped in the middle.
SWEEP = ["-m", "strategy=random,entropy", "seed=0", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "budget=tiny", "budget.rounds=12", "hydra.sweep.dir=sweep",
         "tracking.query_grids=false", *FAST_CLI]

# One round whose training steps come from the environment: the first launch's round 0
# trains until it is stopped (so the signal cannot arrive after it), and the re-run, with
# the same overrides (the same jobs), trains the usual few steps.
ROUND_0_STEPS = "AL_SIM_TEST_ROUND_0_STEPS"
ROUND_0 = [*SWEEP, "budget.rounds=1", f"trainer.min_steps=${{oc.env:{ROUND_0_STEPS},4}}"]
ENDLESS_ROUND_0 = {ROUND_0_STEPS: str(10**12)}


def in_process(args: list[str]) -> list[str]:
    """The same sweep on one joblib worker, which runs its jobs in the launcher's process: a
    re-run checks what the store holds, not the workers (hydra.* keys are not the jobs')."""
    return [*args, "hydra.launcher.n_jobs=1"]


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists()
            and not Path(f"/proc/{p}/status").read_text().count("State:\tZ")]


def gone_soon(pids: list[int], seconds: float = 30) -> bool:
    """Whether every process in ``pids`` ended within ``seconds``."""
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not alive(pids)


def rounds_logged(cwd: Path) -> list[int]:
    """Rounds in each job's metrics.csv (0 before the first), for the jobs that started."""
    return [max(0, len(p.read_text().splitlines()) - 1) if p.exists() else 0
            for p in (d.parent / "metrics.csv" for d in (cwd / "sweep").glob("*/.mlflow_run_id"))]


def start_then_signal(cwd: Path, sig: int, args: list[str] = SWEEP, in_round_0: bool = False,
                      env: dict[str, str] | None = None) -> tuple[fork_server.Process, list[int]]:
    """Start the sweep; once both jobs logged a round (or, ``in_round_0``, once both have an
    MLflow run and no round yet), send ``sig`` to the launcher only."""
    proc = start_cli(args, cwd, env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        done = rounds_logged(cwd)
        if len(done) == 2 and (max(done) == 0 if in_round_0 else min(done) >= 1):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    workers = children(proc.pid)
    assert workers, "the joblib launcher has no worker processes"
    proc.send_signal(sig)
    return proc, workers


def runs(cwd: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    return client.search_runs(all_experiments(client))


def jobs(found: list) -> dict[str, object]:
    return {r.info.run_name: r for r in found if r.data.tags.get("al_sim.role") is None}


def test_a_sigkilled_launcher_stops_its_workers_and_the_rerun_duplicates_nothing(
        tmp_path: Path) -> None:
    proc, workers = start_then_signal(tmp_path, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert gone_soon(workers), "workers outlived their launcher"  # they poll it every second
    killed = jobs(runs(tmp_path))
    assert len(killed) == 2
    for run in killed.values():
        assert run.info.status == "KILLED"
        assert "the sweep's launcher" in run.data.tags["error"]

    again = run_cli(in_process(SWEEP), tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    after = runs(tmp_path)
    finished = jobs(after)
    assert finished.keys() == killed.keys()  # resumed into the same runs: none twice
    assert [r.info.run_id for r in finished.values()] == [r.info.run_id for r in killed.values()]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in finished.values():
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/accuracy")]
        assert sorted(steps) == sorted(set(steps)) and len(steps) == 13  # 12 rounds + initial
    parents = [r for r in after if r.data.tags.get("al_sim.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_sigterm_in_round_0_closes_every_run_killed_and_the_rerun_starts_each_job_over(
        tmp_path: Path) -> None:
    """SIGTERM to the launcher: its workers stop, every run (jobs and parent) is KILLED
    before it exits, and says so. No checkpoint yet: the re-run starts each job over and
    its empty KILLED run is gone. Round 0 trains until the signal (no race with it)."""
    proc, workers = start_then_signal(tmp_path, signal.SIGTERM, ROUND_0, in_round_0=True,
                                      env=ENDLESS_ROUND_0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[max(0, err.find("Traceback") - 1000):][:5000]
    assert "the sweep's MLflow runs are marked KILLED" in err
    assert gone_soon(workers, 10)  # loky's resource tracker ends just after the launcher
    assert rounds_logged(tmp_path) == [0, 0]
    found = runs(tmp_path)
    assert {r.info.status for r in found} == {"KILLED"} and len(found) == 3  # 2 jobs + parent
    for run in jobs(found).values():
        assert run.data.tags["error"] == "interrupted (SIGTERM)"

    again = run_cli(in_process(ROUND_0), tmp_path, timeout=600)  # the same jobs, round 0 ends
    assert again.returncode == 0, again.stderr[-3000:]
    after = runs(tmp_path)
    assert len(after) == 2 + 1 + 2  # one run per job, the parent, two summary runs
    assert {r.info.status for r in after} == {"FINISHED"}
