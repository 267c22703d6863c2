"""Nothing lost: a SIGKILLed run resumes into the same MLflow run with identical results."""

from __future__ import annotations

import csv
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests import fork_server
from tests.conftest import FAST_CLI, all_experiments, run_cli, start_cli

pytestmark = pytest.mark.slow

ARGS = ["budget.initial=20", "budget.query_size=10", "budget.rounds=6", "strategy=entropy",
        "seed=1", *FAST_CLI]


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")}
                for r in csv.DictReader(f)]


def start_and_stop_after(args: list[str], cwd: Path, run_dir: Path, rounds: int,
                         sig: int) -> fork_server.Process:
    """Start the CLI, then send ``sig`` once ``rounds`` rounds are in metrics.csv."""
    proc = start_cli(args, cwd)
    deadline = time.monotonic() + 240
    metrics = run_dir / "metrics.csv"
    while time.monotonic() < deadline and proc.poll() is None:
        done = metrics.exists() and len(metrics.read_text().splitlines()) > rounds
        if done and (run_dir / "checkpoint.pt").exists():
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    proc.communicate(timeout=120)
    return proc


def only_run(cwd: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("al_sim")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    straight = tmp_path / "straight"
    straight.mkdir()
    ok = run_cli([*ARGS, f"hydra.run.dir={straight / 'run'}"], straight)
    assert ok.returncode == 0, ok.stderr

    killed = tmp_path / "killed"
    killed.mkdir()
    run_dir = killed / "run"
    args = [*ARGS, f"hydra.run.dir={run_dir}"]
    proc = start_and_stop_after(args, killed, run_dir, rounds=2, sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    client, run = only_run(killed)
    assert run.info.status == "RUNNING"  # SIGKILL leaves it to be taken over

    again = run_cli(args, killed)
    assert again.returncode == 0, again.stderr
    client, resumed = only_run(killed)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/accuracy")]
    assert sorted(steps) == [20, 30, 40, 50, 60, 70, 80]  # none twice, none missing
    assert (run_dir / "queries.csv").read_text() == (straight / "run" / "queries.csv").read_text()
    assert metrics_rows(run_dir) == metrics_rows(straight / "run")
    _, reference = only_run(straight)
    assert resumed.data.metrics["final/aulc"] == reference.data.metrics["final/aulc"]
    # the stopping signals continue as if never interrupted (kappa averages over rounds)
    straight_client, _ = only_run(straight)
    for key in ("stop/kappa", "stop/kappa_pair", "stop/class_change", "stop/plateau"):
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        want = sorted((m.step, m.value)
                      for m in straight_client.get_metric_history(reference.info.run_id, key))
        assert np.array_equal(np.array(got), np.array(want), equal_nan=True), key

    # Finished now: the same command refuses to run it again by accident.
    twice = run_cli(args, killed)
    assert twice.returncode == 2 and "already finished" in twice.stderr
    assert "resume=false" in twice.stderr


def test_resume_with_a_different_config_is_refused(tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = start_and_stop_after([*ARGS, f"hydra.run.dir={run_dir}"], tmp_path, run_dir,
                                rounds=1, sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    other = run_cli([*ARGS, "strategy=margin", f"hydra.run.dir={run_dir}"], tmp_path)
    assert other.returncode == 2
    assert "different config" in other.stderr and "strategy.name" in other.stderr
    # the advice of an out-of-memory line (another cap, a pool mapped or read whole) leaves the
    # results as they are: taken, the run resumes
    advised = run_cli([*ARGS, "trainer.memory_limit_fraction=0.8", f"hydra.run.dir={run_dir}"],
                      tmp_path)
    assert advised.returncode == 0 and "resum" in advised.stderr + advised.stdout, advised.stderr
    fresh = run_cli([*ARGS, "strategy=margin", "budget.rounds=1", "resume=false",
                     f"hydra.run.dir={run_dir}"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr


def test_ctrl_c_marks_the_run_killed(tmp_path) -> None:
    run_dir = tmp_path / "run"
    proc = start_and_stop_after([*ARGS, f"hydra.run.dir={run_dir}"], tmp_path, run_dir,
                                rounds=1, sig=signal.SIGINT)
    assert proc.returncode == 130
    _, run = only_run(tmp_path)
    assert run.info.status == "KILLED"
    assert "interrupted" in run.data.tags["error"]


def test_sweep_rerun_skips_finished_jobs_and_keeps_one_parent(tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    base = ["-m", "seed=0", "budget=tiny", *FAST_CLI, f"hydra.sweep.dir={sweep_dir}"]
    first = run_cli([*base, "strategy=random,entropy"], tmp_path, process=False)
    assert first.returncode == 0, first.stderr
    again = run_cli([*base, "strategy=random,entropy,margin"], tmp_path, process=False)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("skipped: ") == 2 and "already finished" in again.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(all_experiments(client))
    parents = [r for r in runs if r.data.tags.get("al_sim.role") == "sweep"]
    summaries = [r for r in runs if r.data.tags.get("al_sim.role") == "summary"]
    children = [r for r in runs if r not in parents and r not in summaries]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["strategy"] for r in children) == ["entropy", "margin", "random"]
    # each sweep end replaced the summary runs: one per strategy now, none left from the first
    assert sorted(r.data.tags["strategy"] for r in summaries) == ["entropy", "margin", "random"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)


def test_the_memory_knobs_an_out_of_memory_line_advises_leave_the_fingerprint_alone() -> None:
    from al_sim.runtime.errors import out_of_memory
    from al_sim.sinks.checkpoint import fingerprint

    advice = out_of_memory(MemoryError("x")) or ""
    base = {"trainer.batch_size": "64", "trainer.memory_limit_fraction": "0.9",
            "dataset.in_memory_max_mb": "None", "dataset.cache_dir": "None"}
    for key, value in (("trainer.memory_limit_fraction", "0.5"),
                       ("dataset.in_memory_max_mb", "0"), ("dataset.cache_dir", "/scratch")):
        assert fingerprint({**base, key: value}) == fingerprint(base), key
        assert key in advice or key == "dataset.cache_dir", key  # cache_dir: where a map lives
    assert fingerprint({**base, "trainer.batch_size": "32"}) != fingerprint(base)
