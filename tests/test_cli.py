"""The real CLI end to end: runs in a temp dir, then reads the MLflow store back."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST_CLI, all_experiments, run_cli

pytestmark = pytest.mark.slow


def client_for(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def runs_of(cwd: Path, experiment: str | None = None):
    """The runs of ``experiment`` (None: of every experiment: a sweep logs into its own)."""
    client = client_for(cwd)
    if experiment is None:
        return client, client.search_runs(all_experiments(client))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "no MLflow experiment was created"
    return client, client.search_runs([exp.experiment_id])


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tiny")
    proc = run_cli(["budget=tiny", "strategy=margin", "seed=3", *FAST_CLI], cwd, process=True)
    return cwd, proc


def test_tiny_run_logs_the_mlflow_contract(tiny_run) -> None:
    cwd, proc = tiny_run
    assert proc.returncode == 0, proc.stderr
    assert "labelled" in proc.stdout and "accuracy" in proc.stdout and "AULC" in proc.stdout
    client, runs = runs_of(cwd)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "margin-synthetic-seed3"
    assert {k: run.data.tags[k] for k in ("strategy", "dataset", "model", "seed")} == {
        "strategy": "margin", "dataset": "synthetic", "model": "simple_cnn", "seed": "3"}
    assert run.data.params["budget.query_size"] == "10"
    history = client.get_metric_history(run.info.run_id, "test/accuracy")
    assert sorted(m.step for m in history) == [20, 30, 40]
    for name in ("test/f1_macro", "test/balanced_accuracy", "test/auroc", "test/loss",
                 "round", "n_labeled", "time/train_s", "time/query_s"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 3, name
    assert 0.0 <= run.data.metrics["final/aulc"] <= 1.0
    # AULC of every per-round test metric; final/aulc stays the accuracy one
    assert run.data.metrics["final/aulc_accuracy"] == run.data.metrics["final/aulc"]
    bal = [m.value for m in sorted(client.get_metric_history(run.info.run_id,
                                                             "test/balanced_accuracy"),
                                   key=lambda m: m.step)]
    assert math.isclose(run.data.metrics["final/aulc_balanced_accuracy"],
                        (bal[0] / 2 + bal[1] + bal[2] / 2) / 2, rel_tol=1e-9)
    for name in ("stop/mean_uncertainty", "stop/overall_uncertainty", "stop/kappa",
                 "stop/f_change", "stop/class_change", "stop/plateau"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 3, name
    assert "stopped_by" not in run.data.tags
    assert {"config.yaml", "queries.csv", "labeled_set.csv", "learning_curve.png",
            "queries/round_00.png", "queries/round_01.png",
            "queries/round_02.png"} <= artifact_paths(client, run.info.run_id)
    assert "mlartifacts" in client.get_experiment(run.info.experiment_id).artifact_location


def test_tiny_run_writes_results_into_its_run_dir(tiny_run) -> None:
    cwd, _ = tiny_run
    run_dirs = list((cwd / "outputs").glob("*/*"))
    assert len(run_dirs) == 1
    with (run_dirs[0] / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["round"]) for r in rows].count(0) == 20 and len(rows) == 40
    assert set(rows[0]) == {"round", "pool_index", "score", "oracle_label", "true_label"}
    assert rows[0]["score"] == "" and rows[-1]["score"] != ""  # the initial set has no score


def test_same_config_and_seed_give_identical_results(tiny_run, tmp_path) -> None:
    cwd, _ = tiny_run
    # in this interpreter, after other tests' runs: a run's results depend on nothing left over
    proc = run_cli(["budget=tiny", "strategy=margin", "seed=3", *FAST_CLI], tmp_path,
                   process=False)
    assert proc.returncode == 0, proc.stderr
    first = next((cwd / "outputs").glob("*/*"))
    second = next((tmp_path / "outputs").glob("*/*"))
    assert (first / "queries.csv").read_text() == (second / "queries.csv").read_text()

    def metrics(run_dir: Path) -> list[dict[str, str]]:
        with (run_dir / "metrics.csv").open() as f:
            return [{k: v for k, v in r.items() if not k.startswith("time/")}
                    for r in csv.DictReader(f)]

    assert metrics(first) == metrics(second)


def test_budget_larger_than_pool_is_one_clear_error_and_a_failed_run(tmp_path) -> None:
    proc = run_cli(["budget.initial=300", "budget.rounds=20", *FAST_CLI], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pool has only 400" in errors[0] and "budget.rounds" in errors[0]
    assert "Traceback" not in proc.stderr
    _, runs = runs_of(tmp_path)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "pool has only 400" in runs[0].data.tags["error"]


def test_unknown_strategy_is_refused_at_composition(tmp_path) -> None:
    proc = run_cli(["strategy=best_one", *FAST_CLI], tmp_path)
    assert proc.returncode != 0
    assert "strategy/best_one" in proc.stderr and "entropy" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_small_multirun_logs_every_job_under_one_parent(tmp_path) -> None:
    proc = run_cli(["-m", "strategy=random,entropy", "seed=0,1", "budget=tiny", *FAST_CLI],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(tmp_path)
    parents = [r for r in runs if r.data.tags.get("al_sim.role") == "sweep"]
    summaries = [r for r in runs if r.data.tags.get("al_sim.role") == "summary"]
    children = [r for r in runs if r not in parents and r not in summaries]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["strategy"] == "(sweep)"
    assert len(children) == 4
    # the sweep's end logged one mean ± std summary run per strategy under the parent
    assert sorted(r.data.tags["strategy"] for r in summaries) == ["entropy", "random"]
    assert {r.data.tags["mlflow.parentRunId"] for r in summaries} == {parents[0].info.run_id}
    assert "logged 2 summary run(s)" in proc.stdout
    assert {(r.data.tags["strategy"], r.data.tags["seed"]) for r in children} == {
        ("random", "0"), ("random", "1"), ("entropy", "0"), ("entropy", "1")}
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["sweep_id"] == parents[0].data.tags["sweep_id"]
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "test/accuracy")]
        assert sorted(steps) == [20, 30, 40]
    assert len(list((tmp_path / "multirun").glob("*/*/[0-9]*"))) == 4


def test_a_launcher_that_fails_on_a_bug_still_ends_its_sweeps_parent_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hydra's own joblib launcher failing on a bug of its own once the sweep has opened its
    parent run: the bug's traceback stays (it is not a message of ours), and the parent run is
    FAILED, not RUNNING."""
    import joblib

    def launch(*_: object, **__: object) -> None:
        raise RuntimeError("a bug in the launcher")

    # joblib's, not the plugin's: Hydra re-executes its plugin modules when it scans them
    monkeypatch.setattr(joblib.Parallel, "__call__", launch)
    proc = run_cli(["-m", "seed=0,1", "hydra/launcher=joblib", "budget=tiny", *FAST_CLI],
                   tmp_path, process=False)
    assert proc.returncode == 1 and "RuntimeError: a bug in the launcher" in proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(all_experiments(client))
    assert [(r.data.tags.get("al_sim.role"), r.info.status) for r in runs] == [
        ("sweep", "FAILED")]


def test_the_multirun_flag_may_follow_the_overrides() -> None:
    """Hydra's parser refuses ``strategy=entropy -m seed=0,1`` ("unrecognized arguments");
    the entry point hands it over as ``-m strategy=entropy seed=0,1``."""
    from al_sim.runtime.command_line import hydra_argv

    assert hydra_argv(["strategy=entropy", "-m", "seed=0,1"]) == [
        "-m", "strategy=entropy", "seed=0,1"]
    assert hydra_argv(["a=1", "--multirun", "b=2", "-m"]) == ["--multirun", "a=1", "b=2"]
    assert hydra_argv(["-m", "dataset.root=~/data"]) == ["-m", "dataset.root='~/data'"]
    assert hydra_argv(["seed=1"]) == ["seed=1"]


def test_info_before_the_overrides_is_info_all_of_that_config() -> None:
    """Hydra's ``--info`` takes an optional choice: ``--info strategy=bald`` was argparse's
    "invalid choice" instead of the composed config's information."""
    from al_sim.runtime.command_line import hydra_argv

    assert hydra_argv(["--info", "strategy=bald"]) == ["--info", "all", "strategy=bald"]
    assert hydra_argv(["-i", "config", "seed=1"]) == ["-i", "config", "seed=1"]
    assert hydra_argv(["seed=1", "--info"]) == ["seed=1", "--info"]


@pytest.mark.parametrize("argv", [["--cfg", "job", "-m", "seed=0,1"],
                                  ["-m", "seed=0,1", "--info"], ["-c", "job", "--run"]])
def test_two_of_hydras_modes_at_once_are_one_line_not_its_traceback(argv: list[str]) -> None:
    """Hydra raises ``ValueError: Only one of --run, --multirun, --cfg, ...`` past our
    handler (a traceback); the entry point refuses the pair first, naming both."""
    from al_sim.runtime.command_line import hydra_argv
    from al_sim.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--\w+ and --\w+ cannot be given together"):
        hydra_argv(argv)
    assert hydra_argv(["-m", "-m", "seed=0"]) == ["-m", "seed=0"]  # one mode, twice: fine
