"""``python -m al_sim.compare`` end to end: a real small sweep, then the report read back."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from al_sim.compare import cli as compare_cli
from al_sim.config.schema import CompareConf, TrackingConf
from al_sim.maths.aulc import aulc
from al_sim.report.build import (
    ReportError,
    build_report,
    check_budgets,
    group_settings,
)
from al_sim.report.publish import run_compare
from al_sim.report.reader import StoredRun, SweepRef
from tests.conftest import FAST_CLI, all_experiments, compose_config, run_cli

pytestmark = pytest.mark.slow

# A little more training than FAST_CLI so strategies differ and the statistics are not all NaN.
FAST = [a for a in FAST_CLI if not a.startswith("trainer.min_steps")] + ["trainer.min_steps=12"]
TINY = ["budget=tiny", "tracking.query_grids=false", *FAST]
Completed = subprocess.CompletedProcess[str]
REPORT_FILES = {"learning_curves.png", "penalty_matrix.png", "summary.csv", "summary.md",
                "curves.csv", "penalty_matrix.csv", "compare.yaml", "stopping.csv"}
BAL = "test/balanced_accuracy"  # the report's default metric


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def num(text: str) -> float:
    return float(text) if text else math.nan


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def run_on_store(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    """``run_cli`` on the store ``<cwd>/mlflow.db`` named by a sqlite URI with a query part
    (run, sweep callback, compare and the store checks must find the file without it)."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}?timeout=30"}
    return run_cli(args, cwd, env=env, **kwargs)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep of mismatched budgets (margin, seed 0), then the main sweep (the latest).

    The main sweep also holds the full-data baselines (budget=full: tag strategy=full).
    """
    cwd = tmp_path_factory.mktemp("study")
    for args in (["-m", "strategy=margin", "seed=0", "budget.rounds=0,1",
                  "hydra.sweep.dir=multirun/extra", *TINY],
                 ["-m", "strategy=random,entropy", "seed=0,1", "budget=tiny,full",
                  "hydra.sweep.dir=multirun/main", *TINY[1:]]):
        proc = run_on_store(args, cwd, process=False)  # the basic launcher: jobs in-process
        assert proc.returncode == 0, proc.stderr[-2000:]
    return cwd


@pytest.fixture(scope="module")
def report(study: Path) -> subprocess.CompletedProcess[str]:
    """The default report (the latest sweep) through the real CLI."""
    return run_on_store([], study, module="al_sim.compare")


def mlflow_runs(cwd: Path, sweep_id: str | None) -> tuple[MlflowClient, dict, list]:
    """Child runs of ``sweep_id``: strategy -> seed -> (history dict, balanced-accuracy AULC).

    Also the full-data runs. Parent and summary runs (tag al_sim.role) are left out.
    """
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs(all_experiments(client))
    out: dict[str, dict[str, tuple[dict, float]]] = {}
    for run in runs:
        tags = run.data.tags
        if tags.get("strategy") in (None, "full") or run.info.status != "FINISHED" \
                or "al_sim.role" in tags:
            continue
        if sweep_id is not None and tags.get("sweep_id") != sweep_id:
            continue
        hist = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
                for k in ("test/accuracy", BAL)}
        area = run.data.metrics["final/aulc_balanced_accuracy"]
        out.setdefault(tags["strategy"], {})[tags["seed"]] = (hist, area)
    full = [r for r in runs if r.data.tags.get("strategy") == "full"]
    return client, out, full


def test_report_files_exist_and_nothing_litters(study: Path, report: Completed) -> None:
    assert report.returncode == 0, report.stderr
    assert "error" not in report.stderr
    assert "| random |" in report.stdout and "| entropy |" in report.stdout
    assert "| margin |" not in report.stdout  # another sweep: not the latest
    assert "compare: open http://127.0.0.1:" in report.stdout  # MLflow's compare-runs page
    assert "/#/compare-runs?runs=" in report.stdout
    folder = study / "multirun" / "main" / "compare"
    assert {p.name for p in folder.iterdir()} == REPORT_FILES
    assert all((folder / name).stat().st_size > 0 for name in REPORT_FILES)
    assert sorted(p.name for p in study.iterdir()) == ["mlartifacts", "mlflow.db", "multirun"]


def test_report_is_logged_to_the_parent_run(study: Path, report: Completed) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    parent = client.search_runs(all_experiments(client),
                                "tags.sweep_id = 'multirun/main' and tags.`al_sim.role` = 'sweep'")
    assert len(parent) == 1
    # each sweep logs into its own experiment, named after its dir (compare found it there)
    assert client.get_experiment(parent[0].info.experiment_id).name == "multirun/main"
    logged = {Path(a.path).name for a in client.list_artifacts(parent[0].info.run_id, "compare")}
    assert logged == REPORT_FILES


def test_table_equals_numbers_recomputed_from_mlflow(study: Path, report: Completed) -> None:
    assert report.returncode == 0, report.stderr
    client, runs, full = mlflow_runs(study, "multirun/main")
    assert set(runs) == {"random", "entropy"} and len(full) == 4
    baseline = float(np.mean([client.get_metric_history(r.info.run_id, BAL)[-1].value
                              for r in full]))
    rows = {r["strategy"]: r for r in read_csv(study / "multirun/main/compare/summary.csv")}
    assert {r["metric"] for r in rows.values()} == {BAL}
    assert set(rows) == {"random", "entropy"}
    for name, seeds in runs.items():
        row = rows[name]
        assert row["n_seeds"] == "2" and row["seeds"] == "0;1"
        for key, column in (("test/accuracy", "accuracy"),
                            ("test/balanced_accuracy", "balanced_accuracy")):
            finals = [hist[key][-1][1] for hist, _ in seeds.values()]
            assert close(num(row[f"final_{column}_mean"]), float(np.mean(finals)))
            assert close(num(row[f"final_{column}_std"]), float(np.std(finals, ddof=1)))
        areas = [area for _, area in seeds.values()]
        assert close(num(row["aulc_mean"]), float(np.mean(areas)))
        assert close(num(row["aulc_std"]), float(np.std(areas, ddof=1)))
        assert close(num(row["baseline"]), baseline)
        assert close(num(row["target"]), 0.95 * baseline)
        curves = [[v for _, v in h[BAL]] for h, _ in seeds.values()]
        steps = [s for s, _ in next(iter(seeds.values()))[0][BAL]]
        assert steps == [20, 30, 40]
        hit = [s for s, v in zip(steps, np.mean(curves, 0), strict=True) if v >= 0.95 * baseline]
        assert row["labels_to_target"] == (str(hit[0]) if hit else "")
    entropy = [runs["entropy"][s][1] for s in ("0", "1")]
    random_ = [runs["random"][s][1] for s in ("0", "1")]
    assert rows["entropy"]["n_pairs"] == "2"
    with np.errstate(all="ignore"):
        t_p, w_p = stats.ttest_rel(entropy, random_).pvalue, stats.wilcoxon(entropy, random_).pvalue
    assert close(num(rows["entropy"]["ttest_p"]), float(t_p))
    assert close(num(rows["entropy"]["wilcoxon_p"]), float(w_p))
    assert rows["random"]["ttest_p"] == ""  # the reference is not tested against itself


def test_curves_and_penalty_equal_mlflow(study: Path, report: Completed) -> None:
    _, runs, _ = mlflow_runs(study, "multirun/main")
    folder = study / "multirun/main/compare"
    for row in read_csv(folder / "curves.csv"):
        values = [dict(h[BAL])[int(row["n_labeled"])]
                  for h, _ in runs[row["strategy"]].values()]
        assert close(num(row["balanced_accuracy_mean"]), float(np.mean(values)))
        assert close(num(row["balanced_accuracy_std"]), float(np.std(values, ddof=1)))
    matrix = {r["wins \\ loses"]: r for r in read_csv(folder / "penalty_matrix.csv")}
    for i, j in (("entropy", "random"), ("random", "entropy")):
        a, b = ([[v for _, v in runs[n][s][0][BAL]] for s in ("0", "1")]
                for n in (i, j))
        a, b = np.array(a), np.array(b)
        with np.errstate(all="ignore"):
            wins = [stats.ttest_rel(a[:, k], b[:, k]).pvalue < 0.05
                    and (a[:, k] - b[:, k]).mean() > 0 for k in range(a.shape[1])]
        assert close(num(matrix[i][j]), float(np.mean(wins)))
    assert matrix["random"]["random"] == ""


def test_a_sweep_by_run_id_with_another_metric(study: Path, tmp_path: Path) -> None:
    client, runs, _ = mlflow_runs(study, "multirun/main")
    parent = client.search_runs(all_experiments(client), "tags.sweep_id = 'multirun/main'",
                                order_by=["attributes.start_time ASC"])[0]
    assert parent.data.tags["al_sim.role"] == "sweep"
    tracking = TrackingConf(uri=f"sqlite:///{study / 'mlflow.db'}")
    conf = CompareConf(tracking=tracking, sweep_id=parent.info.run_id, output_dir=str(tmp_path),
                       metric="test/accuracy", target_value=0.3, log_artifacts=False)
    run_compare(conf, study)
    rows = {r["strategy"]: r for r in read_csv(tmp_path / "summary.csv")}
    for name, seeds in runs.items():
        areas = [aulc(np.array([s for s, _ in h["test/accuracy"]]),
                      np.array([v for _, v in h["test/accuracy"]]))
                 for h, _ in seeds.values()]
        assert close(num(rows[name]["aulc_mean"]), float(np.mean(areas)))
        assert rows[name]["target"] == "0.3" and rows[name]["metric"] == "test/accuracy"


def test_summary_runs_hold_mean_and_std_of_the_seed_runs(study: Path, report: Completed) -> None:
    """One summary run per strategy under the parent; its points recomputed from the seeds."""
    assert report.returncode == 0, report.stderr
    client, runs, full = mlflow_runs(study, "multirun/main")
    parent = client.search_runs(all_experiments(client), "tags.sweep_id = 'multirun/main' and "
                                "tags.`al_sim.role` = 'sweep'")[0]
    assert parent.data.tags["strategy"] == "(sweep)"  # no "Unassigned" group by strategy
    summaries = client.search_runs(
        all_experiments(client), f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
        "tags.`al_sim.role` = 'summary'")
    # the sweep logged them when it ended, the report replaced them: one per strategy
    assert sorted(r.data.tags["strategy"] for r in summaries) == ["entropy", "random"]
    baseline = float(np.mean([client.get_metric_history(r.info.run_id, BAL)[-1].value
                              for r in full]))
    for run in summaries:
        assert run.info.status == "FINISHED"
        seeds = runs[run.data.tags["strategy"]]
        for key in ("test/accuracy", BAL):
            def logged(stat: str, rid: str = run.info.run_id, key: str = key) -> dict[int, float]:
                return {m.step: m.value
                        for m in client.get_metric_history(rid, f"summary/{key}/{stat}")}
            mean, lower, upper, n = (logged(s) for s in ("mean", "lower", "upper", "n_seeds"))
            assert sorted(mean) == [20, 30, 40]
            for step in mean:
                values = [dict(h[key])[step] for h, _ in seeds.values()]
                m, sd = float(np.mean(values)), float(np.std(values, ddof=1))
                assert close(mean[step], m) and n[step] == len(values) == 2
                assert math.isclose(lower[step], m - sd, abs_tol=1e-12)
                assert math.isclose(upper[step], m + sd, abs_tol=1e-12)
        history = client.get_metric_history(run.info.run_id, f"summary/{BAL}/full_data")
        full_data = {m.step: m.value for m in history}
        assert sorted(full_data) == [20, 30, 40]  # at the sweep's counts: no stretched x-axis
        assert all(close(v, baseline) for v in full_data.values())
        assert close(float(run.data.params[f"baseline/{BAL}"]), baseline)


def test_stopping_table_replays_the_logged_signals(study: Path, report: Completed) -> None:
    client, runs, _ = mlflow_runs(study, "multirun/main")
    rows = read_csv(study / "multirun/main/compare/stopping.csv")
    assert {(r["strategy"], r["rule"]) for r in rows} >= {("random", "kappa>=0.99"),
                                                          ("entropy", "plateau<0.005")}
    assert "## When to stop labelling" in report.stdout
    for row in rows:
        assert 0 <= int(row["n_stopped"]) <= int(row["n_seeds"]) == 2
        assert 20 <= float(row["mean_n_labeled"]) <= int(row["budget"]) == 40


def test_cli_error_is_one_line_and_exit_2(study: Path) -> None:
    proc = run_on_store(["sweep_id=multirun/extra"], study, module="al_sim.compare")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: runs of synthetic / simple_cnn differ in budget")
    assert "[20, 30]" in last and "[20]" in last
    assert "Traceback" not in proc.stderr


def test_a_misspelt_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Hydra refuses the override before the report starts: our line, not Hydra's print."""
    proc = run_cli(["tracking.urii=x"], tmp_path, module="al_sim.compare")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: tracking.urii is not a setting: tracking has no key 'urii' (conf/tracking/); "
        "did you mean tracking.uri? its keys: artifact_location, backoff_max_s, connect_wait_s, "
        "enabled, experiment, http_timeout, max_grid_images, query_grids, retries, "
        "retry_timeout_s, ui_port, uri; fix or drop the override"]


@pytest.mark.parametrize(("args", "message"), [
    (["tracking.experiment=nope"], "error: experiment 'nope' not found"),
    (["sweep_id=multirun/nope"], "error: unknown sweep_id 'multirun/nope'"),
    (["alpha=1.5"], "error: compare.alpha must be in (0, 1)"),
    (["target_value=nan"], "error: compare.target_value must be a finite number, got nan"),
    (["+metrics=test/auroc"], "error: metrics is not a setting: the config has no key "
                              "'metrics' (conf/compare.yaml); did you mean metric?"),
])
def test_nothing_matches_exits_2(study: Path, args: list[str], message: str,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    # in process, on the composed conf/compare.yaml (the subprocess path is covered above)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config(args, config_name="compare")
    assert compare_cli(cfg, study) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def _stored(strategy: str, seed: str, steps: list[int], dataset: str = "synthetic",
            **params: str) -> StoredRun:
    values = [0.5 + 0.01 * len(strategy) + 0.003 * int(seed) * k for k in range(len(steps))]
    return StoredRun(f"{strategy}{seed}{len(steps)}", f"{strategy}-seed{seed}", "FINISHED", 0,
                     {"strategy": strategy, "seed": seed, "dataset": dataset,
                      "model": "simple_cnn", "budget": f"b{len(steps)}"},
                     {"seed": seed, "strategy.name": strategy, **params},
                     {"test/accuracy": values[-1]},
                     {"test/accuracy": list(zip(steps, values, strict=True))})


class FakeReader:
    """Stands in for RunReader: fixed runs, no MLflow."""

    def __init__(self, runs: list[StoredRun], statuses: dict[str, int]) -> None:
        self._runs, self._statuses = runs, statuses

    def select(self, experiment: str, sweep_id: str, anywhere: bool = False) -> SweepRef:
        return SweepRef(experiment, "1", "multirun/x", "parent")

    def runs(self, ref: SweepRef, keys: list[str]) -> tuple[list[StoredRun], dict[str, int]]:
        return self._runs, self._statuses

    def baselines(self, ref: SweepRef, keys: list[str]) -> list[StoredRun]:
        return []


def test_missing_seeds_are_a_note_and_unfinished_runs_are_left_out() -> None:
    runs = [_stored("random", s, [10, 20]) for s in "012"] + \
        [_stored("margin", s, [10, 20]) for s in "02"]
    conf = CompareConf(tracking=TrackingConf(), metric="test/accuracy")
    report = build_report(conf, FakeReader(runs, {"FINISHED": 5, "FAILED": 1}))
    assert any(n.startswith("margin lacks seed(s) 1 in synthetic / simple_cnn")
               for n in report.notes)
    assert any(n.startswith("1 run(s) not FINISHED") for n in report.notes)
    assert any(n.startswith("no full-data baseline") for n in report.notes)
    margin = next(r for r in report.rows if r.strategy == "margin")
    assert margin.seeds == ("0", "2") and margin.test is not None and margin.test.n_pairs == 2
    with pytest.raises(ReportError, match=r"no FINISHED active-learning runs .*found: 2 FAILED"):
        build_report(conf, FakeReader([], {"FAILED": 2}))


def _loss_run(strategy: str, seed: str, values: list[float]) -> StoredRun:
    points = list(zip([10, 20, 30], values, strict=True))
    tags = {"strategy": strategy, "seed": seed, "dataset": "synthetic", "model": "simple_cnn",
            "budget": "b"}
    return StoredRun(f"{strategy}{seed}", f"{strategy}-seed{seed}", "FINISHED", 0, tags,
                     {"seed": seed, "strategy.name": strategy}, {"test/loss": values[-1]},
                     {"test/loss": points})


class LossReader(FakeReader):
    def baselines(self, ref: SweepRef, keys: list[str]) -> list[StoredRun]:
        return [_loss_run("full", "0", [0.40, 0.40, 0.40])]


def test_a_lower_is_better_metric_is_ranked_the_right_way() -> None:
    """test/loss: the strategy with the lower curve wins and reaches the target first."""
    runs = [_loss_run("random", s, [0.90 + d, 0.70 + d, 0.55 + d]) for s, d in
            (("0", 0.0), ("1", 0.01), ("2", -0.01))]
    runs += [_loss_run("margin", s, [0.90 + d, 0.50 + d, 0.41 + d]) for s, d in
             (("0", 0.0), ("1", 0.015), ("2", -0.005))]
    conf = CompareConf(tracking=TrackingConf(), metric="test/loss", log_artifacts=False)
    report = build_report(conf, LossReader(runs, {"FINISHED": 6}))
    rows = {r.strategy: r for r in report.rows}
    assert rows["margin"].target == pytest.approx(0.40 / 0.95)  # within 5% above the baseline
    assert rows["margin"].labels_to_target == 30 and rows["random"].labels_to_target is None
    assert rows["margin"].test is not None and rows["margin"].test.mean_diff < 0
    margin, random_ = report.names.index("margin"), report.names.index("random")
    assert report.penalty[margin, random_] > 0 and report.penalty[random_, margin] == 0


def test_settings_split_on_swept_params_but_not_on_budget() -> None:
    runs = [_stored(s, seed, [10, 20], **{"oracle.noise_rate": noise, "budget.rounds": "1"})
            for s in ("random", "margin") for seed in "01" for noise in ("0.0", "0.1")]
    runs.append(_stored("random", "0", [10, 20, 30], dataset="other", **{"budget.rounds": "2"}))
    notes: list[str] = []
    settings = group_settings(runs, notes)
    assert [s.label for s in settings] == ["other / simple_cnn",
                                           "synthetic / simple_cnn, oracle.noise_rate=0.0",
                                           "synthetic / simple_cnn, oracle.noise_rate=0.1"]
    assert not notes
    for setting in settings:
        check_budgets(setting, "test/accuracy")  # one budget per setting: fine
    mixed = group_settings([_stored("random", "0", [10, 20]), _stored("random", "0", [10])], [])
    with pytest.raises(ReportError, match="differ in budget"):
        check_budgets(mixed[0], "test/accuracy")
    with pytest.raises(ReportError, match="metric 'test/auroc' was not logged"):
        check_budgets(mixed[0], "test/auroc")
