"""Small report fixes: no-target wording, summary bands within the metric's range (issue 27)."""

from __future__ import annotations

from al_sim.config.schema import CompareConf, TrackingConf
from al_sim.report.build import build_report
from al_sim.report.summary_runs import summary_points
from al_sim.report.tables import markdown_report
from tests.test_compare import FakeReader, _stored


def test_no_baseline_says_there_is_no_target_and_how_to_get_one() -> None:
    runs = [_stored(s, seed, [10, 20]) for s in ("random", "margin") for seed in "01"]
    conf = CompareConf(tracking=TrackingConf(), metric="test/accuracy")
    report = build_report(conf, FakeReader(runs, {"FINISHED": 4}))
    text = markdown_report(report.rows, report.names, report.penalty, report.metric,
                           conf.reference, report.baselines, [], conf.alpha)
    assert "reaches (no target)" not in text
    assert ("labels to target: none (no full-data baseline of this data and no target_value); "
            "add budget=full runs, or set target_value=<test/accuracy>") in text


def test_summary_bands_stay_within_the_metrics_range() -> None:
    runs = [_stored("margin", seed, [10]) for seed in "01"]
    for run, value in zip(runs, (0.99, 1.0), strict=True):
        run.history["test/auroc"] = [(10, value)]
        run.history["test/loss"] = [(10, value - 0.99)]
    auroc = {k: v for k, _, v in summary_points(runs, "test/auroc")}
    assert auroc["summary/test/auroc/upper"] == 1.0  # mean + std is 1.002
    assert 0.985 < auroc["summary/test/auroc/lower"] < 0.99  # 0.995 - 0.0071
    loss = {k: v for k, _, v in summary_points(runs, "test/loss")}
    assert loss["summary/test/loss/lower"] < 0  # a loss has no range to clip to
