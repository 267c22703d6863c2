"""Per-job overhead of the cluster launchers (Ray, submitit) vs joblib, on 8 tiny jobs.

The same 8-job sweep (4 strategies x 2 seeds, ``budget=tiny``, 400-image pool,
2 epochs, tracking off so only the launcher differs) with: Hydra's basic
launcher (in-process, one after another: the jobs' own cost), joblib
(``n_jobs=2``), Ray (``hydra/launcher=al_ray`` against a 2-CPU head this script
starts on 127.0.0.1 and stops; ``num_cpus=1`` per job) and submitit's local
executor (``al_submitit_local``, every job at once). Per-job overhead =
(wall - wall of joblib) / 8: what the launcher adds to each job on top of
joblib's process pool.

    python benchmarks/launcher_overhead.py
    python benchmarks/launcher_overhead.py --smoke   # 1 tiny job, basic and joblib
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = 8
SWEEP = ["-m", "strategy=random,entropy,margin,least_confidence", "seed=0,1", "budget=tiny",
         "dataset.n_pool=400", "dataset.n_test=200", "trainer.epochs=2", "trainer.min_steps=4",
         "progress=false", "tracking.enabled=false"]
# --smoke: the smallest run that still goes through every round (tests/test_benchmarks.py).
TINY = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
        "trainer.epochs=1", "trainer.min_steps=1", "trainer.num_threads=1", "progress=false"]
# --smoke: 1 tiny job, the launchers that need no Ray head.
SMOKE_SWEEP = ["-m", "strategy=random", "seed=0", *TINY, "tracking.enabled=false"]
SMOKE_LAUNCHERS = ("basic (sequential)", "joblib n_jobs=2")
LAUNCHERS = {
    "basic (sequential)": [],
    "joblib n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "ray (2 CPUs, num_cpus=1)": ["hydra/launcher=al_ray"],
    "submitit_local (all at once)": ["hydra/launcher=al_submitit_local"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(launcher: list[str], env: dict[str, str], jobs: list[str] = SWEEP) -> float:
    """Wall seconds of the 8-job sweep in a fresh temp dir (fails loudly if a job fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "al_sim.run", *jobs, *launcher], cwd=tmp,
                       env=env, check=True, capture_output=True, timeout=1800)
        return time.perf_counter() - start


def main() -> None:
    """Start a Ray head, time every launcher, print a markdown table, stop the head."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    if "--smoke" in sys.argv[1:]:
        report({name: run_sweep(LAUNCHERS[name], env, SMOKE_SWEEP) for name in SMOKE_LAUNCHERS},
               1)
        return
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="al_ray_")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head",
                             "--block", "--num-cpus", "2", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--include-dashboard=false",
                             "--disable-usage-stats", "--temp-dir", ray_tmp], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    try:
        time.sleep(15)  # the head's processes come up
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"{os.cpu_count()} cores", flush=True)
        walls = {name: run_sweep(args, env) for name, args in LAUNCHERS.items()}
    finally:
        head.terminate()
        head.wait(timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    report(walls, JOBS)


def report(walls: dict[str, float], jobs: int) -> None:
    """The markdown table: wall, per job and overhead per job vs joblib."""
    base = walls["joblib n_jobs=2"]
    print(f"| launcher | wall s ({jobs} jobs) | s per job | overhead per job vs joblib, s |\n"
          "| --- | --- | --- | --- |")
    for name, wall in walls.items():
        print(f"| {name} | {wall:.1f} | {wall / jobs:.1f} | {(wall - base) / jobs:+.1f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
