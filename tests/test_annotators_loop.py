"""A panel in the loop: cost and agreement per round, budget.cost_limit, cost-aware selection."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import numpy as np
import pytest

from al_sim.config.schema import BudgetConf
from al_sim.core.loop import run_active_learning
from al_sim.core.panel_oracle import PanelOracle, Reader
from al_sim.runtime.errors import BudgetError
from al_sim.sinks.progress import summary_table
from al_sim.sinks.run_dir import RunDirWriter
from al_sim.strategies.base import ArrayModelView, per_second
from al_sim.strategies.random import RandomSampling
from al_sim.strategies.uncertainty import Entropy
from tests.conftest import query_context, setup_sink
from tests.test_loop import Factory, Recorder

BUDGET = BudgetConf(name="t", initial=20, query_size=10, rounds=2)


def panel(dataset, seconds=10.0):
    noisy = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    readers = [Reader(n, noisy, np.full(3, seconds)) for n in ("a", "b")]
    return PanelOracle(dataset.pool_y, dataset.n_classes, readers, seed=1)


def test_costs_and_agreement_reach_every_round_and_metrics_csv(tiny_dataset, fast_trainer,
                                                               tmp_path):
    rec, files = Recorder(), setup_sink(RunDirWriter(grids=False), tmp_path)
    result = run_active_learning(tiny_dataset, Factory(), RandomSampling(), panel(tiny_dataset),
                                 fast_trainer, BUDGET, 0, [rec, files])
    spent = [r.costs["cost/expert_seconds"] for r in result.rounds]
    assert spent == [400.0, 600.0, 800.0]  # 2 readers x 10 s x (20, 30, 40) images
    assert [r.costs["cost/expert_seconds/a"] for r in result.rounds] == [200.0, 300.0, 400.0]
    for r in result.rounds:
        assert -1.0 <= r.agreement["agreement/cohen_kappa"] <= 1.0
        assert "agreement/krippendorff_alpha" in r.agreement
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(row["cost/expert_seconds"]) for row in rows] == spent
    assert rows[0]["test/accuracy"] and "agreement/cohen_kappa" in rows[0]



def test_annotations_csv_keeps_every_answer_and_the_adjudications(tiny_dataset, fast_trainer,
                                                                   tmp_path):
    readers = [Reader("good", np.eye(3), np.full(3, 10.0)),
               Reader("shifty", np.roll(np.eye(3), 1, axis=1), np.full(3, 10.0))]
    judge = Reader("senior", np.eye(3), np.full(3, 60.0))
    oracle = PanelOracle(tiny_dataset.pool_y, 3, readers, adjudicator=judge, seed=0)
    files = setup_sink(RunDirWriter(grids=False), tmp_path)
    result = run_active_learning(tiny_dataset, Factory(), RandomSampling(), oracle,
                                 fast_trainer, replace(BUDGET, rounds=1), 0, [files])
    with (tmp_path / "annotations.csv").open() as f:
        rows = list(csv.DictReader(f))
    # the two readers always disagree: every image is flagged and adjudicated
    assert len(rows) == 3 * 30 and {r["flagged"] for r in rows} == {"1"}
    first = result.queries[0]
    by_image = {(r["pool_index"], r["annotator"]): int(r["label"]) for r in rows
                if r["round"] == "0"}
    idx, truth = int(first.indices[0]), int(first.true_labels[0])
    assert by_image[(str(idx), "good")] == by_image[(str(idx), "senior")] == truth
    assert by_image[(str(idx), "shifty")] == (truth + 1) % 3
    assert np.array_equal(first.oracle_labels, first.true_labels)  # the adjudicator won
    assert result.rounds[-1].costs["cost/expert_seconds/senior"] == 30 * 60.0


def test_cost_limit_stops_before_the_round_that_would_exceed_it(tiny_dataset, fast_trainer):
    limited = replace(BUDGET, cost_limit=750.0)  # 400, 600, then 800 > 750
    result = run_active_learning(tiny_dataset, Factory(), RandomSampling(),
                                 panel(tiny_dataset), fast_trainer, limited, 0, [])
    assert [r.n_labeled for r in result.rounds] == [20, 30]
    assert result.rounds[-1].costs["cost/expert_seconds"] == 600.0
    assert "budget.cost_limit=750" in result.stopped_by and "800 s" in result.stopped_by
    table = summary_table(result)
    assert "expert time: 0.17 h (600 s)" in table
    assert "stopped early: budget.cost_limit=750" in table
    exact = replace(BUDGET, cost_limit=800.0)  # reaching the limit is allowed
    assert len(run_active_learning(tiny_dataset, Factory(), RandomSampling(),
                                   panel(tiny_dataset), fast_trainer, exact, 0, []).rounds) == 3
    with pytest.raises(BudgetError, match="initial set costs 400"):
        run_active_learning(tiny_dataset, Factory(), RandomSampling(), panel(tiny_dataset),
                            fast_trainer, replace(BUDGET, cost_limit=399.0), 0, [])


def test_the_summary_gives_the_aulc_the_report_compares_beside_accuracys(tiny_dataset,
                                                                         fast_trainer):
    result = run_active_learning(tiny_dataset, Factory(), RandomSampling(),
                                 panel(tiny_dataset), fast_trainer, BUDGET, 0, [])
    aulc_line = [line for line in summary_table(result, "test/balanced_accuracy").splitlines()
                 if line.startswith("AULC")]
    assert aulc_line == [
        f"AULC (accuracy vs labelled, normalised): {result.aulc:.4f}, balanced_accuracy "
        f"{result.aulc_of('test/balanced_accuracy'):.4f} (the report's)   images annotated: "
        f"{result.n_annotated}"]
    assert "the report's" not in summary_table(result, "test/accuracy")


def test_cost_aware_scoring_prefers_cheap_informative_images():
    probs = np.array([[0.5, 0.5], [0.55, 0.45], [0.9, 0.1], [0.99, 0.01]])
    seconds = np.array([100.0, 10.0, 10.0, 10.0])  # the most uncertain image is slow to read
    ctx = query_context(ArrayModelView(probs=probs), 4, [], n_classes=2)
    assert Entropy().select(ctx, 1).indices.tolist() == [0]
    ctx.expected_seconds = lambda p: seconds[: len(p)]
    aware = Entropy(cost_aware=True).select(ctx, 1)
    assert aware.indices.tolist() == [1]
    assert aware.scores[0] == pytest.approx(per_second([-(0.55 * math.log(0.55) + 0.45 *
                                                         math.log(0.45))], [10.0])[0])
    ctx.expected_seconds = lambda p: np.full(len(p), 7.0)  # equal costs: the same ranking
    assert Entropy(cost_aware=True).select(ctx, 4).indices.tolist() == \
        Entropy().select(ctx, 4).indices.tolist()
    ctx.expected_seconds = None
    with pytest.raises(ValueError, match="cost_aware=true needs an oracle with a cost model"):
        Entropy(cost_aware=True).select(ctx, 1)
    with pytest.raises(ValueError, match="finite and > 0"):
        per_second(np.ones(2), np.array([1.0, 0.0]))


def test_a_checkpoint_keeps_the_rounds_costs_and_the_panels_state(tiny_dataset, fast_trainer,
                                                                  tmp_path):
    from al_sim.core.events import LoopState
    from al_sim.core.pool import LabelPool
    from al_sim.sinks.checkpoint import Checkpoint, load, save

    oracle = panel(tiny_dataset)
    result = run_active_learning(tiny_dataset, Factory(), RandomSampling(), oracle,
                                 fast_trainer, replace(BUDGET, rounds=0), 0, [])
    pool = LabelPool(tiny_dataset.n_pool)
    pool.add(result.queries[0].indices, result.queries[0].oracle_labels, 0)
    save(tmp_path / "ckpt.pt", Checkpoint(LoopState(round=0, pool=pool, oracle=oracle.state(),
                                                    result=result, model_state={}),
                                          False, {}))
    back = load(tmp_path / "ckpt.pt").state
    assert back.result.rounds[0].costs == result.rounds[0].costs
    assert back.result.rounds[0].agreement.keys() == result.rounds[0].agreement.keys()
    kept = back.result.queries[0]
    assert kept.annotations.keys() == {"a", "b"}
    assert np.array_equal(kept.annotations["a"], result.queries[0].annotations["a"])
    assert np.array_equal(kept.flagged, result.queries[0].flagged)
    again = panel(tiny_dataset)
    again.restore(back.oracle)
    assert again.total_seconds == oracle.total_seconds == 400.0


def test_a_resumed_panel_run_equals_an_uninterrupted_one(tiny_dataset, fast_trainer, tmp_path):
    from al_sim.core.events import RunCallback
    from al_sim.sinks.checkpoint import Checkpoint, load, save

    class StopAfterRound0(RunCallback):
        def on_checkpoint(self, state) -> None:
            save(tmp_path / "ckpt.pt", Checkpoint(state, False, {}))
            raise KeyboardInterrupt

    def fresh_panel():
        noisy = np.full((3, 3), 0.1) + np.eye(3) * 0.7
        readers = [Reader(n, noisy, np.full(3, 10.0)) for n in ("a", "b", "c")]
        return PanelOracle(tiny_dataset.pool_y, 3, readers, aggregation="dawid_skene", seed=4)

    straight = run_active_learning(tiny_dataset, Factory(), Entropy(), fresh_panel(),
                                   fast_trainer, BUDGET, 0, [])
    with pytest.raises(KeyboardInterrupt):
        run_active_learning(tiny_dataset, Factory(), Entropy(), fresh_panel(), fast_trainer,
                            BUDGET, 0, [StopAfterRound0()])
    resumed = run_active_learning(tiny_dataset, Factory(), Entropy(), fresh_panel(),
                                  fast_trainer, BUDGET, 0, [],
                                  resume=load(tmp_path / "ckpt.pt").state)
    for a, b in zip(straight.queries, resumed.queries, strict=True):
        assert np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.oracle_labels, b.oracle_labels)
        assert all(np.array_equal(a.annotations[k], b.annotations[k]) for k in a.annotations)
    assert [r.costs for r in resumed.rounds] == [r.costs for r in straight.rounds]
    assert [r.metrics for r in resumed.rounds] == [r.metrics for r in straight.rounds]
