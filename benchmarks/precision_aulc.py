"""Mixed precision vs fp32: AULC per seed, paired, and the time each precision takes.

Runs ``python -m al_sim.run`` once per (precision, seed), several at a time on one
device, each with its share of the cores, then compares the AULC of each precision
with fp32's on the same seeds (paired t-test) against the seed-to-seed spread.
``trainer.precision`` can become the default only where the AULC stays within seed
noise (issue 11).

    python benchmarks/precision_aulc.py --seeds 0,1,2,3,4 --precisions fp32,bf16 \\
        --parallel 5 -- model=resnet18 dataset.image_size=128 trainer.device=cuda
    python benchmarks/precision_aulc.py --smoke   # one tiny fp32 run on the CPU
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from al_sim.maths.aulc import aulc
from al_sim.report.stats import paired_test

# --smoke: the smallest run that still goes through every round (tests/test_benchmarks.py).
TINY = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
        "trainer.epochs=1", "trainer.min_steps=1", "trainer.num_threads=1", "progress=false"]
METRICS = ("test/balanced_accuracy", "test/accuracy", "test/auroc")


def one_run(work: Path, precision: str, seed: int, threads: int,
            overrides: list[str]) -> tuple[subprocess.Popen, Path, float]:
    """Start one run in the background; its process, run dir and start time."""
    run_dir = work / f"{precision}-seed{seed}"
    track = [] if _has_mlflow() else ["tracking.enabled=false"]
    cmd = [sys.executable, "-m", "al_sim.run", f"seed={seed}", f"trainer.precision={precision}",
           f"trainer.num_threads={threads}", "progress=false", f"hydra.run.dir={run_dir}",
           *track, *overrides]
    log = (work / f"{precision}-seed{seed}.log").open("w")
    return subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT), run_dir, \
        time.perf_counter()


def _has_mlflow() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def curve(run_dir: Path) -> dict[str, float]:
    """AULC of each metric and the summed training time of one finished run."""
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["n_labeled"]) for r in rows])
    out = {m: aulc(steps, np.array([float(r[m]) for r in rows])) for m in METRICS}
    out["train_s"] = sum(float(r["time/train_s"]) for r in rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--parallel", type=int, default=4, help="runs at once")
    parser.add_argument("overrides", nargs="*", help="al_sim overrides for every run")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat, CPU: seconds (tests/test_benchmarks.py)")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.precisions, args.parallel = "0", "fp32", 1
        args.overrides = [*TINY, "trainer.device=cpu", "tracking.enabled=false",
                          *args.overrides]
    seeds = [int(s) for s in args.seeds.split(",")]
    precisions = args.precisions.split(",")
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // args.parallel)
    jobs = [(p, s) for s in seeds for p in precisions]  # interleaved: both see the same load
    results: dict[str, dict[int, dict[str, float]]] = {p: {} for p in precisions}
    walls: dict[str, list[float]] = {p: [] for p in precisions}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        running: list[tuple[str, int, subprocess.Popen, Path, float]] = []
        failed = 0
        while jobs or running:
            while jobs and len(running) < args.parallel:
                p, s = jobs.pop(0)
                running.append((p, s, *one_run(work, p, s, threads, args.overrides)))
            time.sleep(0.2)
            for item in [r for r in running if r[2].poll() is not None]:
                running.remove(item)
                p, s, proc, run_dir, start = item
                if proc.returncode != 0:
                    failed += 1
                    log = (work / f"{p}-seed{s}.log").read_text().splitlines()
                    print(f"{p} seed {s} failed (exit {proc.returncode}):", *log[-5:], sep="\n  ")
                    continue
                walls[p].append(time.perf_counter() - start)
                results[p][s] = curve(run_dir)
    print(f"{len(seeds)} seeds x {precisions}, {args.parallel} runs at once, {threads} threads "
          f"each, {time.perf_counter() - began:.0f} s in all; overrides: "
          f"{' '.join(args.overrides)}")
    base = precisions[0]
    for metric in METRICS:
        print(f"\nAULC of {metric} (normalised), per seed:")
        print(f"  {'precision':<10}" + "".join(f"{s:>9}" for s in seeds) + "     mean      std")
        for p in precisions:
            vals = [results[p].get(s, {}).get(metric, float("nan")) for s in seeds]
            print(f"  {p:<10}" + "".join(f"{v:9.4f}" for v in vals)
                  + f"  {np.nanmean(vals):7.4f}  {np.nanstd(vals, ddof=1):7.4f}")
        for p in precisions[1:]:
            test = paired_test({str(s): r[metric] for s, r in results[p].items()},
                               {str(s): r[metric] for s, r in results[base].items()})
            spread = np.std([r[metric] for r in results[base].values()], ddof=1)
            print(f"  {p} - {base}: mean difference {test.mean_diff:+.4f} over {test.n_pairs} "
                  f"seeds (paired t p = {test.t_p:.3g}); {base}'s seed-to-seed std {spread:.4f}")
    print("\ntime per run:")
    for p in precisions:
        train = [r["train_s"] for r in results[p].values()]
        print(f"  {p:<10} training {np.mean(train):6.1f} s (mean of the runs' time/train_s), "
              f"process {np.mean(walls[p]) if walls[p] else float('nan'):6.1f} s wall")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
