"""A sweep's cost of composing its jobs' configs: al_sim's sweeper against Hydra's basic one.

The same sweep of tiny jobs (``budget=tiny``, one round, no tracking) runs as one stack in the
launcher's own process (``hydra/launcher=al_stack``), with ``hydra/sweeper=basic`` (Hydra
composes each job at every use: the batch check, the finished-job check, the stack plan, the
run) and with al_sim's default ``hydra/sweeper=al_basic`` (each job composed once), the two
interleaved, each in a fresh temp dir. Prints each sweeper's median wall and CPU seconds per
job with their spread (min-max), the saving per job and the ratio; checks every job wrote its
metrics.

    python benchmarks/sweep_composition.py [--jobs 16] [--reps 3] [overrides ...]
    python benchmarks/sweep_composition.py --smoke     # 1 job, once
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
        "trainer.epochs=1", "trainer.min_steps=1", "trainer.num_threads=1", "progress=false",
        "tracking.enabled=false", "tracking.query_grids=false", "strategy=random"]
SWEEPERS = {"basic (Hydra's)": "hydra/sweeper=basic",
            "al_basic (al_sim's)": "hydra/sweeper=al_basic"}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sweep(sweeper: str, jobs: int, extra: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of the sweep (its process and what it started)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        seeds = ",".join(str(s) for s in range(jobs))
        cpu, start = children_cpu(), time.perf_counter()
        subprocess.run([sys.executable, "-m", "al_sim.run", "-m", f"seed={seeds}", *TINY,
                        sweeper, "hydra/launcher=al_stack", f"hydra.launcher.stack_size={jobs}",
                        f"hydra.sweep.dir={Path(tmp) / 'sweep'}", *extra],
                       cwd=tmp, env=env, check=True, capture_output=True)
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
        done = len(list((Path(tmp) / "sweep").glob("*/metrics.csv")))
        if done != jobs:
            raise SystemExit(f"{sweeper}: {done} of {jobs} jobs wrote metrics.csv")
        return wall, cpu


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args, extra = parser.parse_known_args()
    jobs, reps = (1, 1) if args.smoke else (args.jobs, args.reps)
    got: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in SWEEPERS}
    for _ in range(reps):
        for name, sweeper in SWEEPERS.items():  # interleaved: a drift in load hits both
            wall, cpu = sweep(sweeper, jobs, extra)
            got[name][0].append(wall / jobs)
            got[name][1].append(cpu / jobs)
    print(f"{jobs} tiny job(s) as one al_stack stack, {reps} repeat(s); per job, median "
          "(min-max):")
    for name, (walls, cpus) in got.items():
        print(f"  {name:22s} wall {spread(walls)} s   CPU {spread(cpus)} s")
    (base_wall, base_cpu), (new_wall, new_cpu) = (
        [statistics.median(v) for v in got[name]] for name in SWEEPERS)
    print(f"saved per job: wall {base_wall - new_wall:.3f} s, CPU {base_cpu - new_cpu:.3f} s; "
          f"al_basic / basic: wall {new_wall / base_wall:.2f}x, CPU {new_cpu / base_cpu:.2f}x")


if __name__ == "__main__":
    main()
