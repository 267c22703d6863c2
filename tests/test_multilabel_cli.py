"""Multi-label studies end to end: a 3 x 3 sweep and ``python -m al_sim.compare`` on the
synthetic default and on a ChestMNIST-layout archive (real CLI), and refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.report.build import task_metric
from al_sim.report.reader import StoredRun
from al_sim.runtime.errors import ALSimError
from al_sim.tracking.contract import TASK_TAG
from tests.conftest import FAST_CLI, all_experiments, assert_refused, run_cli

# The acceptance study at tiny sizes: 3 strategies x 3 seeds, then python -m al_sim.compare.
STRATEGIES, SEEDS, STEPS = ("cvirs", "entropy", "random"), ("0", "1", "2"), [20, 30, 40]
TINY = ["budget=tiny", "trainer.epochs=1", "trainer.min_steps=2", "trainer.num_threads=1",
        "tracking.query_grids=false",
        "progress=false"]
SYNTHETIC_FINDINGS = ("cardiomegaly", "effusion", "opacity", "nodule")


def sweep_and_compare(cwd: Path, data: list[str], seeds: tuple[str, ...]) -> tuple[Path, str]:
    """A sweep of the 3 strategies x ``seeds`` on ``data`` into ``multirun/study``, then the
    default compare; returns the sweep dir and what compare printed."""
    proc = run_cli(["-m", *data, f"strategy={','.join(STRATEGIES)}", f"seed={','.join(seeds)}",
                    "hydra.sweep.dir=multirun/study", *TINY], cwd,
                   process=False)  # the basic launcher: its jobs run in this interpreter
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = run_cli([], cwd, module="al_sim.compare")
    assert report.returncode == 0, report.stderr[-3000:]
    return cwd / "multirun" / "study", report.stdout


@pytest.fixture(scope="module")
def synthetic_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data = ["dataset=synthetic_chest", "dataset.n_pool=200", "dataset.n_test=200"]
    return sweep_and_compare(tmp_path_factory.mktemp("chest"), data, SEEDS)


@pytest.fixture(scope="module")
def chestmnist_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from tests.test_multilabel_data import write_chestmnist

    cwd = tmp_path_factory.mktemp("chestmnist")
    write_chestmnist(cwd)  # official keys, uint8 images, N x 14 finding bits
    data = ["dataset=medmnist", "dataset.name=chestmnist", f"dataset.root={cwd}"]
    return sweep_and_compare(cwd, data, SEEDS)


def check_study(sweep: Path, printed: str, findings: tuple[str, ...],
                seeds: tuple[str, ...] = SEEDS) -> None:
    """Macro-AUROC curves and summary table in the report; per-finding AUROC in MLflow."""
    folder = sweep / "compare"
    rows = {r["strategy"]: r for r in read_rows(folder / "summary.csv")}
    assert set(rows) == set(STRATEGIES)
    for name, row in rows.items():  # the primary metric, 3 seeds, paired against random
        assert row["metric"] == "test/auroc" and row["seeds"] == ";".join(seeds)
        assert 0 < float(row["aulc_mean"]) <= 1
        assert row["n_pairs"] == ("" if name == "random" else str(len(seeds)))
        assert name == "random" or row["ttest_p"] != ""
    curves = read_rows(folder / "curves.csv")
    assert {(r["strategy"], int(r["n_labeled"])) for r in curves} == {
        (s, n) for s in STRATEGIES for n in STEPS}
    assert all(r["n_seeds"] == str(len(seeds)) and 0 < float(r["auroc_mean"]) <= 1 for r in curves)
    assert (folder / "learning_curves.png").stat().st_size > 0
    assert "| cvirs |" in printed and "| random |" in printed
    assert "test/auroc" in (folder / "summary.md").read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep.parents[1] / 'mlflow.db'}")
    runs = client.search_runs(all_experiments(client))
    children = [r for r in runs if "al_sim.role" not in r.data.tags]
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in children) == sorted(
        (s, seed) for s in STRATEGIES for seed in seeds)
    for run in children:
        assert run.data.tags[TASK_TAG] == "multilabel" and run.info.status == "FINISHED"
        metrics = run.data.metrics
        for key in ("test/auroc", "test/average_precision", "test/f1_macro",
                    "final/aulc_auroc", *(f"test/auroc/{f}" for f in findings)):
            assert key in metrics, sorted(metrics)
        steps = [m.step for m in client.get_metric_history(run.info.run_id,
                                                            f"test/auroc/{findings[-1]}")]
        assert steps == STEPS
        assert task_metric([StoredRun(run.info.run_id, "x", "FINISHED", 0, run.data.tags, {},
                                      metrics)]) == "test/auroc"
    summaries = [r for r in runs if r.data.tags.get("al_sim.role") == "summary"]
    assert sorted(r.data.tags["strategy"] for r in summaries) == sorted(STRATEGIES)
    assert all("summary/test/auroc/mean" in r.data.metrics for r in summaries)
    with next(sweep.glob("*/queries.csv")).open() as f:
        queried = list(csv.DictReader(f))
    assert len(queried) == 40
    assert all(len(r["oracle_label"].split("|")) == len(findings) for r in queried)


@pytest.mark.slow
def test_a_synthetic_chest_sweep_reports_macro_and_per_finding_auroc(synthetic_study) -> None:
    check_study(*synthetic_study, SYNTHETIC_FINDINGS)


@pytest.mark.slow
def test_a_chestmnist_layout_sweep_reports_its_fourteen_findings(chestmnist_study) -> None:
    from al_sim.data.medmnist import load_medmnist
    from al_sim.maths.metrics import metric_name

    names = load_medmnist(name="chestmnist", root=str(chestmnist_study[0].parents[1])).class_names
    findings = tuple(metric_name(n) for n in names)
    assert len(findings) == 14 and findings[-1] == "hernia"
    check_study(*chestmnist_study, findings)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_compare_refuses_to_guess_a_metric_for_mixed_tasks() -> None:
    runs = [StoredRun(str(i), "x", "FINISHED", 0, {TASK_TAG: t}, {}, {})
            for i, t in enumerate(("multilabel", "binary"))]
    with pytest.raises(ALSimError, match="mix tasks"):
        task_metric(runs)
    untagged = StoredRun("9", "x", "FINISHED", 0, {}, {}, {})
    assert task_metric([untagged, runs[1]]) == "test/balanced_accuracy"


@pytest.mark.slow
def test_cvirs_on_single_label_data_is_refused_at_start_up(tmp_path) -> None:
    proc = run_cli(["strategy=cvirs", "budget=tiny", *FAST_CLI], tmp_path)
    assert_refused(proc, tmp_path, ["cvirs", "multi-label", "strategy="])


@pytest.mark.slow
def test_a_manifest_with_an_unknown_finding_is_one_error_line(tmp_path) -> None:
    from tests.test_multilabel_data import _xray14

    root = tmp_path / "xrays"
    root.mkdir()
    _xray14(root, [("a.png", "Effusion|Hernia", "test"), ("b.png", "Effusion", "")])
    proc = run_cli(["dataset=folder", f"dataset.root={root}", "dataset.manifest=Data_Entry.csv",
                    "dataset.findings=[Effusion,Nodule]", "budget=tiny",
                    *[a for a in FAST_CLI if not a.startswith("dataset.")]], tmp_path)
    assert_refused(proc, tmp_path, ["Data_Entry.csv", "unknown finding", "'Hernia'", "line 2"])
