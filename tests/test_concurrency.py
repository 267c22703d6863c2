"""Parallel jobs share one store without losing anything: sqlite file and a local mlflow server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.tracking.mlflow_server import free_port
from tests.conftest import FAST_CLI, all_experiments, run_cli, start_cli

pytestmark = pytest.mark.slow

SWEEP = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
         "strategy=random,entropy", "seed=0,1", "budget=tiny",
         *[a for a in FAST_CLI if a != "trainer.num_threads=1"]]
METRICS = ("test/accuracy", "test/f1_macro", "test/balanced_accuracy", "test/auroc",
           "test/loss", "round", "n_labeled", "time/train_s", "time/query_s")


def count_everything(uri: str) -> None:
    """Every job FINISHED under one parent, with every metric at every step."""
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(all_experiments(client))  # a sweep: its own experiment
    parents = [r for r in runs if r.data.tags.get("al_sim.role") == "sweep"]
    summaries = [r for r in runs if r.data.tags.get("al_sim.role") == "summary"]
    children = [r for r in runs if r not in parents and r not in summaries]
    assert len(parents) == 1 and len(children) == 4
    assert len(summaries) == len({r.data.tags["strategy"] for r in children})
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for name in METRICS:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, name))
            assert steps == [20, 30, 40], (run.info.run_name, name, steps)
        assert "final/aulc" in run.data.metrics


def test_four_parallel_jobs_on_one_sqlite_store(tmp_path: Path) -> None:
    proc = run_cli(SWEEP, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr
    count_everything(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_four_parallel_jobs_against_a_local_mlflow_server(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", (tmp_path / "server_artifacts").as_uri(), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))  # no GenAI job runner
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        proc = run_cli([*SWEEP, f"tracking.uri={uri}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        count_everything(uri)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_runs_started_together_in_a_fresh_folder_share_one_new_store(tmp_path: Path) -> None:
    """Separate ``python -m al_sim.run`` processes (no sweep) started at once in a new folder:
    the new ``mlflow.db`` schema is built once, each run gets its own default run dir (they
    start within the same second), and every run lands FINISHED."""
    procs = [start_cli(["budget=tiny", "budget.rounds=1", f"seed={seed}", *FAST_CLI], tmp_path)
             for seed in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    run_dirs = {p.parent for p in tmp_path.glob("outputs/*/*/metrics.csv")}
    assert len(run_dirs) == 3  # no two runs wrote into one dir
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
