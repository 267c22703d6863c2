"""Sweep throughput: the same 8-job sweep with Hydra's basic launcher and with joblib.

Runs ``python -m al_sim.run -m strategy=random,entropy,margin,least_confidence
seed=0,1`` (default budget) twice in fresh temp dirs (each with its own sqlite store): once
with the basic launcher (one job after another, all cores each) and once with
``hydra/launcher=joblib hydra.launcher.n_jobs=2`` (each job gets its share of
the cores as torch threads). Prints both wall times and the speed-up, and
checks every child run FINISHED with every step.

    python benchmarks/sweep_throughput.py [extra overrides ...]
    python benchmarks/sweep_throughput.py --smoke   # 1 tiny job per launcher, joblib with 1 worker
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from al_sim.tracking.contract import ROLE_TAG

# --smoke: the smallest run that still goes through every round (tests/test_benchmarks.py).
TINY = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
        "trainer.epochs=1", "trainer.min_steps=1", "trainer.num_threads=1", "progress=false"]
SMOKE_SWEEP = ["-m", "strategy=random", "seed=0", *TINY]
SWEEP = ["-m", "strategy=random,entropy,margin,least_confidence", "seed=0,1", "progress=false"]


def sweep(launcher: list[str], extra: list[str],
          jobs: list[str] = SWEEP) -> tuple[float, int, int]:
    """Wall time, FINISHED child runs and logged accuracy points of one sweep."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "al_sim.run", *jobs, *launcher, *extra],
                       cwd=tmp, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        client = MlflowClient(tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        every = [e.experiment_id for e in client.search_experiments()]  # a study: its own
        runs = [r for r in client.search_runs(every)
                if r.data.tags.get(ROLE_TAG) not in ("sweep", "summary")]  # jobs only
        finished = sum(r.info.status == "FINISHED" for r in runs)
        points = sum(len(client.get_metric_history(r.info.run_id, "test/accuracy"))
                     for r in runs)
        return wall, finished, points


def main() -> None:
    extra = sys.argv[1:]
    smoke = "--smoke" in extra
    jobs = SMOKE_SWEEP if smoke else SWEEP
    extra = [e for e in extra if e != "--smoke"]
    n = 1 if smoke else 8
    workers = 1 if smoke else 2  # --smoke: no worker processes to start for its one job
    basic = sweep([], extra, jobs)
    joblib = sweep(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}"], extra, jobs)
    cores = len(os.sched_getaffinity(0))
    print(f"{n}-job sweep on {cores} cores ({' '.join(jobs[1:] + extra)})")
    for name, (wall, finished, points) in (("basic", basic), (f"joblib n_jobs={workers}", joblib)):
        print(f"  {name:<16} {wall:7.1f} s   {finished}/{n} runs FINISHED, "
              f"{points} accuracy points")
    print(f"speed-up joblib vs basic: {basic[0] / joblib[0]:.2f}x (target >= 1.6x)")
    if (basic[1], joblib[1]) != (n, n):
        sys.exit(f"error: not every job FINISHED ({basic[1]} and {joblib[1]} of {n})")


if __name__ == "__main__":
    main()
