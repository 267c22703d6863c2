"""oracle=panel through the real CLI: three annotators, a cost limit, MLflow read back."""

from __future__ import annotations

import csv

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST_CLI, run_cli

pytestmark = pytest.mark.slow


def test_panel_run_logs_cost_and_agreement_and_stops_at_the_cost_limit(tmp_path):
    # 3 readers x 30 s: 20 initial images cost 1800 s, each round of 10 another 900 s;
    # round 2 would bring the total to 3600 s > 3000 s, so the run stops after round 1.
    proc = run_cli(["oracle=panel", "budget=tiny", "budget.cost_limit=3000",
                    "strategy.cost_aware=true", "oracle.aggregation=dawid_skene",
                    "hydra.run.dir=run", *FAST_CLI], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["n_labeled"] for row in rows] == ["20", "30"]
    assert [float(row["cost/expert_seconds"]) for row in rows] == [1800.0, 2700.0]
    assert float(rows[-1]["cost/expert_seconds/reader_c"]) == 900.0
    with (tmp_path / "run" / "annotations.csv").open() as f:
        answers = list(csv.DictReader(f))
    assert len(answers) == 3 * 30  # three readers, 30 images labelled
    assert {a["annotator"] for a in answers} == {"reader_a", "reader_b", "reader_c"}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert "budget.cost_limit=3000" in run.data.tags["stopped_by"]
    history = client.get_metric_history(run.info.run_id, "cost/expert_seconds")
    assert sorted((m.step, m.value) for m in history) == [(20, 1800.0), (30, 2700.0)]
    assert len(client.get_metric_history(run.info.run_id, "agreement/fleiss_kappa")) == 2
    assert run.data.metrics["final/expert_seconds"] == 2700.0
    assert run.data.params["oracle.aggregation"] == "dawid_skene"
    assert "annotations.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
