"""A 16-job sweep on joblib vs SLURM vs a two-node Ray cluster: time to first job and
per-job overhead, medians of 3.

The sweep: 4 strategies x 4 seeds of tiny jobs (``budget=tiny``, 1 round, 120-image pool,
1 epoch, one torch thread, tracking off so only the launcher differs), 4 job slots on
every launcher:

- ``joblib``: ``hydra/launcher=al_joblib``, ``n_jobs=4`` worker processes here;
- ``slurm``: ``al_submitit_slurm`` on a single-node SLURM with accounting that this script
  starts in a temporary directory (``tests/slurm_cluster.py``: 4 CPUs; ``cpus_per_task=1``,
  ``status_poll_s=2``), one array task per job;
- ``ray``: ``al_ray`` on a Ray head plus a second node on loopback
  (``tests/ray_cluster.py``: 2 CPUs each; ``num_cpus=1``).

Time to first job: from the launch until the first job's dir exists (the job started on
its node). Per-job overhead: (wall - joblib's wall) / 16. Each figure is the median of
``--repeats`` sweeps; a cluster's set-up time (start to taking jobs) is measured once.

    python benchmarks/launcher_overhead.py                  # joblib, slurm, ray; 3 repeats
    python benchmarks/launcher_overhead.py --kinds joblib,ray --repeats 1
    python benchmarks/launcher_overhead.py --smoke          # 1 tiny job on joblib
    python benchmarks/launcher_overhead.py --smoke --kinds joblib,slurm,ray

``--smoke`` starts no cluster unless ``--kinds`` names it (SLURM takes a minute or two to
come up; ``pytest -m cluster tests/test_cluster_real.py`` covers those launchers); a kind
whose software is missing is skipped with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the clusters the tests start: tests/slurm_cluster.py, ...

SLOTS = 4  # job slots on every launcher
STRATEGIES = ["random", "entropy", "margin", "least_confidence"]
TINY = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
        "trainer.epochs=1", "trainer.min_steps=1", "trainer.num_threads=1", "progress=false",
        "tracking.enabled=false"]
LAUNCHERS = {
    "joblib": ["hydra/launcher=al_joblib", f"hydra.launcher.n_jobs={SLOTS}"],
    "slurm": ["hydra/launcher=al_submitit_slurm", "hydra.launcher.cpus_per_task=1",
              "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
              "hydra.callbacks.sweep.status_poll_s=2"],
    "ray": ["hydra/launcher=al_ray", "hydra.launcher.ray.remote.num_cpus=1"],
}
SWEEP_TIMEOUT_S = 1800
FIRST_JOB_POLL_S = 0.05


def sweep_args(jobs: int) -> list[str]:
    """``jobs`` tiny jobs: strategies x seeds (a multiple of 4, or 1)."""
    if jobs == 1:
        return ["-m", "strategy=random", "seed=0", *TINY]
    seeds = ",".join(str(s) for s in range(jobs // len(STRATEGIES)))
    return ["-m", f"strategy={','.join(STRATEGIES)}", f"seed={seeds}", *TINY]


def run_sweep(launcher: list[str], env: dict[str, str], jobs: int, scratch: Path
              ) -> tuple[float, float]:
    """(wall s, s until the first job's dir appeared) of one sweep in a fresh dir."""
    cwd = Path(tempfile.mkdtemp(dir=scratch))
    first: list[float] = []
    done = threading.Event()

    def watch(start: float) -> None:
        while not done.is_set() and not first:
            if any((cwd / "sweep").glob("[0-9]*")):
                first.append(time.perf_counter() - start)
            time.sleep(FIRST_JOB_POLL_S)

    start = time.perf_counter()
    watcher = threading.Thread(target=watch, args=(start,), daemon=True)
    watcher.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "al_sim.run", *sweep_args(jobs),
                               *launcher, "hydra.sweep.dir=sweep"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S,
                              check=False)
        wall = time.perf_counter() - start
    finally:
        done.set()
        watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    shutil.rmtree(cwd, ignore_errors=True)
    return wall, first[0] if first else float("nan")


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or None."""
    if kind == "slurm":
        from tests.slurm_cluster import missing as slurm_missing

        tool = slurm_missing()
        return None if tool is None else f"no {tool} (apt-get install slurm-wlm munge " \
                                         "slurmdbd mariadb-server)"
    if kind == "ray" and shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        return 'no ray (pip install -e ".[ray]")'
    return None


@contextlib.contextmanager
def cluster(kind: str, root: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The environment a sweep on ``kind`` needs, with its cluster up meanwhile."""
    if kind == "slurm":
        from tests.slurm_cluster import SlurmCluster

        (root / "slurm").mkdir()
        slurm = SlurmCluster(root / "slurm")
        try:
            slurm.start()
            yield {**env, **slurm.env}
        finally:
            slurm.stop()
    elif kind == "ray":
        from tests.ray_cluster import two_nodes

        with two_nodes(root, env) as (address, _):
            yield {**env, "RAY_ADDRESS": address}
    else:
        yield env


def measure(kinds: list[str], jobs: int, repeats: int, env: dict[str, str]
            ) -> dict[str, dict[str, float]]:
    """Per kind: set-up s, median wall s, median s to the first job, min/max wall."""
    figures = {}
    for kind in kinds:
        if (why := missing(kind)) is not None:
            print(f"{kind}: skipped, {why}", flush=True)
            continue
        root = Path(tempfile.mkdtemp(prefix=f"al_bench_{kind}_"))  # short: Ray's sockets
        root.chmod(0o755)
        try:
            started = time.perf_counter()
            with cluster(kind, root, env) as kind_env:
                setup = time.perf_counter() - started
                runs = [run_sweep(LAUNCHERS[kind], kind_env, jobs, root)
                        for _ in range(repeats)]
        finally:
            shutil.rmtree(root, ignore_errors=True)
        walls = [w for w, _ in runs]
        figures[kind] = {"setup": setup, "wall": statistics.median(walls),
                         "first": statistics.median(f for _, f in runs),
                         "min": min(walls), "max": max(walls)}
        print(f"{kind}: walls {' '.join(f'{w:.1f}' for w in walls)} s, first job "
              f"{' '.join(f'{f:.1f}' for _, f in runs)} s", flush=True)
    return figures


def report(figures: dict[str, dict[str, float]], jobs: int, repeats: int) -> None:
    """The markdown table; overhead per job against joblib's wall."""
    base = figures.get("joblib", {}).get("wall")
    print(f"| launcher | set-up s | wall s ({jobs} jobs, median of {repeats}) [min-max] | "
          "time to first job s | s per job | overhead per job vs joblib, s |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for kind, f in figures.items():
        over = "n/a" if base is None else f"{(f['wall'] - base) / jobs:+.2f}"
        print(f"| {kind} | {f['setup']:.1f} | {f['wall']:.1f} [{f['min']:.1f}-{f['max']:.1f}] "
              f"| {f['first']:.1f} | {f['wall'] / jobs:.2f} | {over} |")


def main() -> None:
    """Parse the options, time each launcher, print the table and the load around it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=None, help="comma-separated: joblib,slurm,ray")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=16, help="a multiple of 4")
    parser.add_argument("--smoke", action="store_true", help="1 job, 1 repeat")
    args = parser.parse_args()
    kinds = (args.kinds or ("joblib" if args.smoke else ",".join(LAUNCHERS))).split(",")
    unknown = [k for k in kinds if k not in LAUNCHERS]
    if unknown or args.jobs % len(STRATEGIES):
        parser.error(f"--kinds from {','.join(LAUNCHERS)}; --jobs a multiple of 4")
    jobs, repeats = (1, 1) if args.smoke else (args.jobs, args.repeats)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    if args.smoke and args.kinds is None:
        for kind in ("slurm", "ray"):
            print(f"{kind}: skipped in --smoke ({missing(kind) or 'pass --kinds to try it'})")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores", flush=True)
    report(measure(kinds, jobs, repeats, env), jobs, repeats)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
