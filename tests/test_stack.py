"""Stacked sweeps (``hydra/launcher=al_stack``): grouping and the memory split on plain lists;
one stack against the same runs unstacked, a failing member, a killed stack resumed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from al_sim.app.launchers.stacking import (
    auto_stack_size,
    parse_stack_size,
    stack_groups,
    stack_key,
)
from al_sim.core.footprint import free_bytes, member_bytes
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.runtime.errors import ConfigError
from tests.conftest import FAST_CLI, REPO, all_experiments, run_cli, start_cli

ENV = {"PYTHONPATH": str(REPO)}  # the workers import tests.stack_faults
TINY = ["budget=tiny", *FAST_CLI, "hydra.sweep.dir=sweep", "tracking.query_grids=false"]


def test_jobs_that_agree_share_stacks_of_at_most_the_size_dealt_round_robin() -> None:
    keys = ["a", "a", "b", "a", "a", "c", "b"]
    assert stack_groups(keys, 3) == [[0, 3], [1, 4], [2, 6], [5]]
    assert stack_groups(keys, 4) == [[0, 1, 3, 4], [2, 6], [5]]
    assert stack_groups(keys, 1) == [[i] for i in (0, 1, 3, 4, 2, 6, 5)]
    with pytest.raises(ValueError):
        stack_groups(keys, 0)


def test_the_stack_key_ignores_strategy_and_seed_but_not_the_trainer() -> None:
    base = {"dataset": {"n": 1}, "model": {"name": "m"}, "budget": {"r": 2},
            "trainer": {"lr": 0.1}, "strategy": {"name": "bald"}, "seed": 0}
    other = {**base, "strategy": {"name": "badge"}, "seed": 3}
    faster = {**base, "trainer": {"lr": 0.2}}
    key = stack_key(OmegaConf.create(base))
    assert key == stack_key(OmegaConf.create(other))
    assert key != stack_key(OmegaConf.create(faster))


def test_auto_stack_size_fills_the_memory_share_and_never_drops_to_zero() -> None:
    mib = 2**20
    assert auto_stack_size(100 * mib, 1000 * mib, 0.8, 30) == 8
    assert auto_stack_size(100 * mib, 1000 * mib, 0.8, 5) == 5  # no more than the group
    assert auto_stack_size(100 * mib, 50 * mib, 0.8, 30) == 1  # too big: members run alone
    assert auto_stack_size(mib, 1000 * mib, 0.8, 30, workers=2) == 15  # no worker idles
    assert auto_stack_size(mib, 1000 * mib, 0.8, 5, workers=2) == 3
    with pytest.raises(ValueError):
        auto_stack_size(0, 1000, 0.8, 3)


def test_stack_size_is_a_positive_integer_or_auto() -> None:
    assert parse_stack_size("auto") is None and parse_stack_size(4) == 4
    for bad in (0, "-2", "many"):
        with pytest.raises(ConfigError, match="hydra.launcher.stack_size"):
            parse_stack_size(bad)


def test_a_members_footprint_is_measured_and_grows_with_the_batch() -> None:
    model = SimpleCNN(1, 3, widths=[8, 16], hidden=32, dropout=0.2)
    params = sum(p.numel() for p in model.parameters()) * 4
    small = member_bytes(model, torch.zeros(8, 1, 28, 28))
    large = member_bytes(model, torch.zeros(64, 1, 28, 28))
    assert params * 4 < small < large
    assert free_bytes(torch.device("cpu")) > 0


def client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def job_runs(cwd: Path) -> dict[str, object]:
    mlflow = client(cwd)
    found = mlflow.search_runs(all_experiments(mlflow))
    return {r.info.run_name: r for r in found if r.data.tags.get("al_sim.role") is None}


def results(sweep: Path) -> dict[str, tuple[str, str]]:
    """Each job's queries.csv and metrics.csv (timing columns dropped), by run name."""
    out = {}
    for cfg in sweep.glob("*/config.yaml"):
        conf = OmegaConf.load(cfg)
        name = f"{conf.strategy.name}-seed{conf.seed}"
        rows = [line.split(",") for line in (cfg.parent / "metrics.csv").read_text().splitlines()]
        kept = [i for i, column in enumerate(rows[0]) if not column.startswith("time/")]
        metrics = "\n".join(",".join(row[i] for i in kept) for row in rows)
        out[name] = ((cfg.parent / "queries.csv").read_text(), metrics)
    return out


@pytest.mark.slow
def test_a_mixed_stack_gives_the_bits_of_the_same_runs_unstacked(tmp_path: Path) -> None:
    sweep = ["-m", "strategy=random,bald,badge", "seed=0,1", *TINY, "budget.rounds=1"]
    stacked_dir, alone_dir = tmp_path / "stacked", tmp_path / "alone"
    stacked_dir.mkdir(), alone_dir.mkdir()
    # both sweeps in this interpreter (a stack runs in the launcher's process with n_jobs=1)
    stacked = run_cli([*sweep, "hydra/launcher=al_stack", "hydra.launcher.stack_size=6"],
                      stacked_dir, timeout=600, process=False)
    assert stacked.returncode == 0, stacked.stderr[-3000:]
    assert "6 job(s) ran as 1 stack(s)" in stacked.stderr
    joblib = run_cli([*sweep, "hydra/launcher=al_joblib", "hydra.launcher.n_jobs=1"], alone_dir,
                     timeout=600, process=False)
    assert joblib.returncode == 0, joblib.stderr[-3000:]
    single = run_cli(["strategy=badge", "seed=1", *TINY[:-2], "budget.rounds=1",
                      "hydra.run.dir=single",
                      "tracking.enabled=false"], alone_dir, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    got, want = results(stacked_dir / "sweep"), results(alone_dir / "sweep")
    assert len(got) == 6 and got == want  # the same bits as today's one-job-per-task sweep
    last = ((alone_dir / "single/queries.csv").read_text(), got["badge-seed1"][1])
    assert got["badge-seed1"][0] == last[0]  # and as the run alone in its own process
    runs = job_runs(stacked_dir)
    assert len(runs) == 6 and {r.info.status for r in runs.values()} == {"FINISHED"}


@pytest.mark.slow
def test_a_failing_member_fails_alone_and_the_stack_goes_on(tmp_path: Path) -> None:
    out = run_cli(["-m", "strategy=raising,random", "seed=0", *TINY,
                   f"hydra.searchpath=[file://{REPO / 'tests/conf'}]",
                   "hydra/launcher=al_stack", "hydra.launcher.stack_size=2"], tmp_path,
                  timeout=300, env=ENV, process=False)
    assert out.returncode == 1, out.stderr[-3000:]  # a sweep with a failed job exits 1
    # the raising member ran first, the other went on after it
    assert "raising strategy: this member fails on purpose" in out.stderr
    assert "2 job(s) ran as 1 stack(s)" in out.stderr
    statuses = {r.data.tags["strategy"]: r.info.status for r in job_runs(tmp_path).values()}
    assert statuses == {"random": "FINISHED", "raising": "FAILED"}, statuses


@pytest.mark.slow
def test_a_killed_stack_resumes_each_member_into_its_run(tmp_path: Path) -> None:
    args = ["-m", "strategy=random,entropy", "seed=0", *TINY, "budget.rounds=2",
            "hydra/launcher=al_stack", "hydra.launcher.stack_size=2"]
    proc = start_cli(args, tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "sweep").glob("*/checkpoint.pt")):  # member 1 past round 0
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # n_jobs=1: the stack runs in the sweep's process
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = job_runs(tmp_path)
    assert len(killed) == 1  # member 2 had not started; member 1 died with no word

    again = run_cli(args, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in (tmp_path / "sweep/0/run.log").read_text()
    finished = job_runs(tmp_path)
    assert len(finished) == 2 and {r.info.status for r in finished.values()} == {"FINISHED"}
    [(name, first)] = killed.items()
    assert finished[name].info.run_id == first.info.run_id  # the same run, resumed
    steps = [m.step for m in client(tmp_path).get_metric_history(first.info.run_id,
                                                                  "test/accuracy")]
    assert sorted(steps) == sorted(set(steps)) and len(steps) == 3  # 2 rounds + initial


def test_a_stacks_members_share_one_dataset_and_runs_outside_a_stack_do_not() -> None:
    from al_sim.app.components import build_dataset, shared_datasets

    cfg = OmegaConf.create({"oracle": {"name": "simulated"}, "dataset": {
        "_target_": "al_sim.data.synthetic.load_synthetic", "n_pool": 60, "n_test": 30}})
    other = OmegaConf.create({**OmegaConf.to_container(cfg), "dataset": {
        "_target_": "al_sim.data.synthetic.load_synthetic", "n_pool": 61, "n_test": 30}})
    with shared_datasets():
        first = build_dataset(cfg)
        assert build_dataset(cfg) is first
        assert build_dataset(other) is not first  # another config: its own copy
    assert build_dataset(cfg) is not first


def test_a_one_member_lockstep_stack_runs_its_job_plainly_under_the_stacks_omp_policy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No member thread for a stack of one (nothing to train with), and the trainer's OpenMP
    wait policy set before the worker's first torch import, as a run alone sets it."""
    import threading

    import hydra_plugins.hydra_joblib_launcher._core as joblib_core

    from al_sim.app.launchers import lockstep_workers, stack_workers

    ran: list[tuple[int, str]] = []

    def execute_job(num: int, overrides: list[str], *_args: object) -> str:
        ran.append((num, threading.current_thread().name))
        return f"job {num}"

    def no_threads(*_args: object) -> None:
        raise AssertionError("a one-member stack started member threads")

    monkeypatch.setattr(joblib_core, "execute_job", execute_job)
    monkeypatch.setattr(lockstep_workers, "run_lockstep", no_threads)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    out = stack_workers._run_stack([(3, 7, ["seed=0"])], True, "passive")
    assert out == [(3, "job 7")] and ran == [(7, threading.current_thread().name)]
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
