"""python -m al_sim.run dataset=synthetic_chest end to end (one real CLI run), and refusals."""

from __future__ import annotations

import csv

import pytest
from mlflow.tracking import MlflowClient

from al_sim.report.build import task_metric
from al_sim.report.reader import StoredRun
from al_sim.runtime.errors import ALSimError
from al_sim.tracking.contract import TASK_TAG
from tests.conftest import FAST_CLI, assert_refused, run_cli


@pytest.mark.slow
def test_synthetic_chest_run_logs_macro_and_per_finding_auroc(tmp_path) -> None:
    proc = run_cli(["dataset=synthetic_chest", "budget=tiny", "strategy=cvirs", *FAST_CLI,
                    f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("al_sim")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags[TASK_TAG] == "multilabel"
    metrics = run.data.metrics
    for key in ("test/auroc", "test/average_precision", "test/f1_macro",
                "test/auroc/nodule", "final/aulc_auroc", "final/aulc_auroc_nodule"):
        assert key in metrics, sorted(metrics)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/auroc/nodule")]
    assert steps == [20, 30, 40]
    with (tmp_path / "run" / "queries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and all(len(r["oracle_label"].split("|")) == 4 for r in rows)
    stored = StoredRun(run.info.run_id, "x", "FINISHED", 0, run.data.tags, {}, metrics)
    assert task_metric([stored]) == "test/auroc"  # compare's default for these runs


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
