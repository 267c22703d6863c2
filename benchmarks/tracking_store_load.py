"""The tracking store under load: N concurrent simulated AL writers, SQLite vs the PG server.

Each writer does what one al_sim job does with the default budget: creates a
run under the sweep's parent, logs ~40 params, then for each of 9 rounds one
``log_batch`` of the round's 9 metrics (step = labelled images) and the
run-dir files as artifacts (queries.csv, metrics.csv growing per round; a
64 KB query-grid PNG), through al_sim's own retry policy
(``call_with_retries``). Writers are threads spread over up to 8 processes
(like jobs on several nodes). Afterwards every metric is read back: metrics
lost must be 0. Prints, per store and N: lost metrics, failed writers, p50 /
p99 latency of a round's ``log_batch`` call, wall time.

    python benchmarks/tracking_store_load.py [--n 4 16 64] [--stores sqlite server] [--smoke]

``server`` starts ``python -m al_sim.server`` in a temp dir (PostgreSQL +
mlflow server --serve-artifacts, 2 workers) and stops it after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROUNDS, METRICS_PER_ROUND, PARAMS, MAX_PROCS = 9, 9, 40, 8
METRIC_NAMES = ["test/accuracy", "test/f1_macro", "test/balanced_accuracy", "test/auroc",
                "test/loss", "round", "n_labeled", "time/train_s", "time/query_s"]


def writer(uri: str, exp_id: str, parent: str, index: int, tmp: str) -> tuple[list[float], str]:
    """One simulated job; the latencies of its 9 round log calls, and its error ('' if none)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from al_sim.runtime.errors import TrackingError
    from al_sim.tracking.store import call_with_retries as retried

    client = MlflowClient(tracking_uri=uri)

    def call_with_retries(what, fn):  # al_sim's policy, as a job's writer uses it
        return retried(what, fn, uri)

    run_dir = Path(tmp) / f"w{index}"
    run_dir.mkdir(parents=True, exist_ok=True)
    latencies: list[float] = []
    try:
        run_id = call_with_retries("create", lambda: client.create_run(
            exp_id, run_name=f"writer{index}",
            tags={"mlflow.parentRunId": parent})).info.run_id
        params = [Param(f"p{i}", str(i)) for i in range(PARAMS)]
        call_with_retries("params", lambda: client.log_batch(run_id, params=params))
        png = run_dir / "round.png"
        png.write_bytes(os.urandom(64 * 1024))
        for r in range(ROUNDS):
            step, now = 100 + 100 * r, int(time.time() * 1000)
            metrics = [Metric(name, 0.5 + 0.01 * r, now, step) for name in METRIC_NAMES]
            start = time.perf_counter()
            call_with_retries("metrics", lambda m=metrics: client.log_batch(run_id, metrics=m))
            latencies.append(time.perf_counter() - start)
            for name in ("queries.csv", "metrics.csv"):
                with (run_dir / name).open("a") as f:
                    f.write(f"{r},{step},0.5\n" * 100)
                call_with_retries("artifact", lambda n=name: client.log_artifact(
                    run_id, str(run_dir / n)))
            call_with_retries("grid", lambda: client.log_artifact(run_id, str(png), "grids"))
        call_with_retries("end", lambda: client.set_terminated(run_id, "FINISHED"))
        return latencies, ""
    except TrackingError as exc:
        return latencies, str(exc)[:200]


def process_batch(uri: str, exp_id: str, parent: str, indices: list[int],
                  tmp: str) -> list[tuple[list[float], str]]:
    """Run ``indices`` writers as threads in this process."""
    with ThreadPoolExecutor(len(indices)) as pool:
        return list(pool.map(lambda i: writer(uri, exp_id, parent, i, tmp), indices))


def load(uri: str, n: int, tmp: str, artifact_location: str | None) -> dict:
    """N writers against ``uri``: lost metrics, failures, p50/p99 round latency, wall time."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(f"load{n}-{time.time_ns()}",
                                      artifact_location=artifact_location)
    parent = client.create_run(exp_id, run_name="sweep").info.run_id
    procs = min(n, MAX_PROCS)
    groups = [list(range(i, n, procs)) for i in range(procs)]
    start = time.perf_counter()
    with ProcessPoolExecutor(procs) as pool:
        results = [r for batch in pool.map(process_batch, [uri] * procs, [exp_id] * procs,
                                           [parent] * procs, groups, [tmp] * procs)
                   for r in batch]
    wall = time.perf_counter() - start
    runs = client.search_runs([exp_id], max_results=1000)
    logged = sum(len(client.get_metric_history(r.info.run_id, name))
                 for r in runs for name in METRIC_NAMES)
    latencies = sorted(x for lat, _ in results for x in lat)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0
    return {"lost": n * ROUNDS * METRICS_PER_ROUND - logged,
            "failed": sum(bool(err) for _, err in results),
            "errors": sorted({err for _, err in results if err})[:2],
            "p50_ms": 1000 * statistics.median(latencies) if latencies else 0,
            "p99_ms": 1000 * p99, "wall_s": wall}


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """``python -m al_sim.server`` in ``root``; its process and URI once it answers."""
    from al_sim.tracking.mlflow_server import free_port, wait_for_port

    port = free_port()
    root.chmod(0o755)  # as root, PostgreSQL runs as another user that must reach its dir
    proc = subprocess.Popen([sys.executable, "-m", "al_sim.server", "--dir", str(root / "srv"),
                             "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 300, proc, "al_sim.server")
    # every request carries the server's token; the writers' processes inherit it
    token = subprocess.run([sys.executable, "-m", "al_sim.server", "--dir", str(root / "srv"),
                            "--token"], capture_output=True, text=True, check=True).stdout
    os.environ["MLFLOW_TRACKING_TOKEN"] = token.strip()
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    """Parse arguments, run every (store, N), print a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "server"])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat, CPU: seconds (tests/test_benchmarks.py)")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.stores = [2], ["sqlite"]
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}; {os.cpu_count()} cores", flush=True)
    print("| store | N | metrics lost | failed writers | p50 round log ms | p99 round log ms "
          "| wall s |\n| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory(prefix="al_load_") as tmp:
        root = Path(tmp)
        server = None
        try:
            for store in args.stores:
                if store == "server":
                    server, uri = start_server(root)
                    location = None
                else:
                    uri = f"sqlite:///{root / 'mlflow.db'}"
                    location = (root / "mlartifacts").as_uri()
                for n in args.n:
                    r = load(uri, n, str(root / f"{store}{n}"), location)
                    print(f"| {store} | {n} | {r['lost']} | {r['failed']} | {r['p50_ms']:.0f} "
                          f"| {r['p99_ms']:.0f} | {r['wall_s']:.1f} |", flush=True)
                    for err in r["errors"]:
                        print(f"  error: {err}", flush=True)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=120)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
