"""Stacked sweep vs one job per task: the same study with ``hydra/launcher=al_stack`` (members
in lock-step, and one after another) and with ``hydra/launcher=al_joblib
hydra.launcher.n_jobs=2``, interleaved in fresh temp dirs, each with its own sqlite store.
Prints each launcher's median wall time, its spread (min-max), seconds per run, the ratios,
and lock-step's paired AULC difference to the same runs alone; checks every run FINISHED.

The study is ``experiment=screening`` (6 strategies x 5 seeds, default budget: about an hour a
repeat on 2 cores); ``--seeds``/``--reps`` and overrides make it smaller:

    python benchmarks/stack_sweep.py --reps 3
    python benchmarks/stack_sweep.py --seeds 0,1 --reps 2 budget=tiny    # a reduced study
    python benchmarks/stack_sweep.py --smoke           # 2 tiny runs, once, on 1 worker
    python benchmarks/stack_sweep.py --launchers lock-step,stacked --seeds 0,1,2,3,4 --reps 1 \
        budget=tiny     # lock-step's paired AULC against the same runs alone, per strategy
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

from al_sim.tracking.contract import FINAL_AULC, ROLE_TAG

SMOKE = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
         "trainer.epochs=1", "trainer.min_steps=2", "progress=false", "strategy=random", "seed=0,1"]
LAUNCHERS = {
    "lock-step": ["hydra/launcher=al_stack", "hydra.launcher.n_jobs=2",
                  "hydra.launcher.lockstep=true"],
    "stacked": ["hydra/launcher=al_stack", "hydra.launcher.n_jobs=2"],
    "joblib n_jobs=2": ["hydra/launcher=al_joblib", "hydra.launcher.n_jobs=2"],
}


def sweep(launcher: list[str], study: list[str]
          ) -> tuple[float, int, int, dict[tuple[str, str], float]]:
    """Wall time, job runs, FINISHED job runs and each run's AULC by (strategy, seed)."""
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
        aulcs = {(r.data.tags.get("strategy", "?"), r.data.tags.get("seed", "?")):
                 r.data.metrics[FINAL_AULC] for r in runs if FINAL_AULC in r.data.metrics}
        return wall, len(runs), sum(r.info.status == "FINISHED" for r in runs), aulcs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seeds", default=None, help="e.g. 0,1 (default: the experiment's)")
    parser.add_argument("--launchers", default=None,
                        help=f"which of {', '.join(LAUNCHERS)} (comma-separated; default all, "
                        "--smoke: all but lock-step, whose stacks of one member run as "
                        "stacked's do)")
    args, overrides = parser.parse_known_args()
    names = args.launchers.split(",") if args.launchers else [
        n for n in LAUNCHERS if not (args.smoke and n == "lock-step")]
    # --smoke: one worker, so each sweep runs its jobs in the launcher's own process (the
    # benchmark's path end to end without starting worker interpreters)
    chosen = {n: [a.replace("n_jobs=2", "n_jobs=1") if args.smoke else a for a in LAUNCHERS[n]]
              for n in names}
    study = [*SMOKE, *overrides] if args.smoke else list(overrides)
    if args.seeds and not args.smoke:
        study.append(f"seed={args.seeds}")
    reps = 1 if args.smoke else args.reps
    walls: dict[str, list[float]] = {name: [] for name in chosen}
    aulcs: dict[str, dict[tuple[str, str], float]] = {}
    runs = 0
    for rep in range(reps):
        for name, launcher in chosen.items():  # interleaved: drift hits all alike
            wall, runs, finished, aulcs[name] = sweep(launcher, study)
            if finished != runs:
                sys.exit(f"error: {name}: {finished} of {runs} runs FINISHED")
            walls[name].append(wall)
            # an hour-long study shows its progress, and a stopped one what it measured
            print(f"repeat {rep + 1}/{reps} {name}: {wall:.1f} s", file=sys.stderr, flush=True)
    cores = len(os.sched_getaffinity(0))
    print(f"{runs}-run study on {cores} cores, {reps} interleaved repeat(s): "
          f"experiment=screening {' '.join(study)}")
    for name, times in walls.items():
        med = statistics.median(times)
        print(f"  {name:<16} median {med:7.1f} s  (min {min(times):.1f}, max {max(times):.1f})"
              f"  {med / max(runs, 1):.2f} s per run  [{', '.join(f'{t:.1f}' for t in times)}]")
    if "joblib n_jobs=2" in walls:
        joblib = statistics.median(walls["joblib n_jobs=2"])
        for name in (n for n in walls if n != "joblib n_jobs=2"):
            print(f"ratio joblib / {name} wall time: {joblib / statistics.median(walls[name]):.2f}x"
                  " (>= 1: no slower)")
    if "lock-step" in aulcs and "stacked" in aulcs:
        paired(aulcs["lock-step"], aulcs["stacked"])


def paired(lockstep: dict[tuple[str, str], float], alone: dict[tuple[str, str], float]) -> None:
    """Per strategy: the mean paired AULC difference lock-step - alone (``stacked`` gives the
    bits of the runs unstacked) against the seed-to-seed spread of the runs alone."""
    for strategy in sorted({s for s, _seed in alone}):
        seeds = sorted(seed for s, seed in alone if s == strategy and (s, seed) in lockstep)
        diffs = [lockstep[(strategy, x)] - alone[(strategy, x)] for x in seeds]
        noise = statistics.stdev([alone[(strategy, x)] for x in seeds]) if len(seeds) > 1 else 0
        mean = statistics.mean(diffs) if diffs else float("nan")
        print(f"  {strategy:<12} {len(seeds)} seed(s): paired AULC lock-step - alone "
              f"{mean:+.4f} (max |d| {max(map(abs, diffs), default=0):.4f}); seed sd {noise:.4f}"
              f" -> {'within' if abs(mean) <= noise else 'beyond'} seed noise")


if __name__ == "__main__":
    main()
