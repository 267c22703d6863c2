"""Stacked sweep vs one job per task: the same study with ``hydra/launcher=al_stack`` and with
``hydra/launcher=al_joblib hydra.launcher.n_jobs=2``, interleaved (stack, joblib, stack, ...)
in fresh temp dirs, each with its own sqlite store. Prints each launcher's median wall time,
its spread (min-max), seconds per run, and the ratio; checks every run FINISHED.

The study is ``experiment=screening`` (6 strategies x 5 seeds, default budget: about an hour a
repeat on 2 cores); ``--seeds``/``--reps`` and overrides make it smaller:

    python benchmarks/stack_sweep.py --reps 3
    python benchmarks/stack_sweep.py --seeds 0,1 --reps 2 budget=tiny    # a reduced study
    python benchmarks/stack_sweep.py --smoke                             # 2 tiny runs, once
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from al_sim.tracking.contract import ROLE_TAG

SMOKE = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
         "trainer.epochs=1", "trainer.min_steps=2", "progress=false", "strategy=random", "seed=0,1"]
LAUNCHERS = {
    "stacked": ["hydra/launcher=al_stack", "hydra.launcher.n_jobs=2"],
    "joblib n_jobs=2": ["hydra/launcher=al_joblib", "hydra.launcher.n_jobs=2"],
}


def sweep(launcher: list[str], study: list[str]) -> tuple[float, int, int]:
    """Wall time, job runs and FINISHED job runs of one sweep."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "al_sim.run", "-m", "experiment=screening",
                        "progress=false", *launcher, *study], cwd=tmp, env=env, check=True,
                       capture_output=True)
        wall = time.perf_counter() - start
        client = MlflowClient(tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        exp = client.get_experiment_by_name("screening")
        runs = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get(ROLE_TAG) not in ("sweep", "summary")]
        return wall, len(runs), sum(r.info.status == "FINISHED" for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seeds", default=None, help="e.g. 0,1 (default: the experiment's)")
    args, overrides = parser.parse_known_args()
    study = [*SMOKE, *overrides] if args.smoke else list(overrides)
    if args.seeds and not args.smoke:
        study.append(f"seed={args.seeds}")
    reps = 1 if args.smoke else args.reps
    walls: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    runs = 0
    for _ in range(reps):
        for name, launcher in LAUNCHERS.items():  # interleaved: drift hits both alike
            wall, runs, finished = sweep(launcher, study)
            if finished != runs:
                sys.exit(f"error: {name}: {finished} of {runs} runs FINISHED")
            walls[name].append(wall)
    cores = len(os.sched_getaffinity(0))
    print(f"{runs}-run study on {cores} cores, {reps} interleaved repeat(s): "
          f"experiment=screening {' '.join(study)}")
    for name, times in walls.items():
        med = statistics.median(times)
        print(f"  {name:<16} median {med:7.1f} s  (min {min(times):.1f}, max {max(times):.1f})"
              f"  {med / max(runs, 1):.2f} s per run")
    stacked, joblib = (statistics.median(walls[n]) for n in LAUNCHERS)
    print(f"ratio joblib / stacked wall time: {joblib / stacked:.2f}x (>= 1: stacked no slower)")


if __name__ == "__main__":
    main()
