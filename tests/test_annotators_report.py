"""The comparison report against expert time (x=expert_seconds) and summary runs with the cost."""

from __future__ import annotations

import csv

import pytest

from al_sim.config.schema import CompareConf, TrackingConf
from al_sim.report.build import build_report
from al_sim.report.expert_time import TIME_FIGURE, TIME_TABLE, NoCostError, time_markdown
from al_sim.report.publish import write_report
from al_sim.report.reader import StoredRun
from al_sim.report.summary_runs import summary_runs
from al_sim.runtime.errors import ConfigError
from tests.test_compare import FakeReader

METRIC = "test/balanced_accuracy"
STEPS = [20, 30, 40]


def panel_run(strategy: str, seed: str, values: list[float], seconds_per_image: float | None,
              ) -> StoredRun:
    history = {METRIC: list(zip(STEPS, values, strict=True))}
    metrics = {METRIC: values[-1]}
    if seconds_per_image is not None:
        history["cost/expert_seconds"] = [(s, s * seconds_per_image) for s in STEPS]
        metrics["cost/expert_seconds"] = STEPS[-1] * seconds_per_image
    return StoredRun(f"{strategy}{seed}", f"{strategy}-seed{seed}", "FINISHED", 0,
                     {"strategy": strategy, "seed": seed, "dataset": "synthetic",
                      "model": "simple_cnn", "budget": "tiny"},
                     {"seed": seed, "strategy.name": strategy}, metrics, history)


def runs(seconds_per_image: float | None = 90.0) -> list[StoredRun]:
    out = []
    for seed, d in (("0", 0.0), ("1", 0.02)):
        out.append(panel_run("random", seed, [0.5 + d, 0.6 + d, 0.7 + d], seconds_per_image))
        out.append(panel_run("margin", seed, [0.5 + d, 0.7 + d, 0.8 + d], seconds_per_image))
    return out


def conf(x: str) -> CompareConf:
    return CompareConf(tracking=TrackingConf(), metric=METRIC, log_artifacts=False, x=x)


def test_expert_time_view_gives_hours_aulc_per_hour_and_files(tmp_path):
    report = build_report(conf("expert_seconds"), FakeReader(runs(), {"FINISHED": 4}))
    hours = report.time_x["synthetic / simple_cnn"]["margin"]
    assert hours.tolist() == pytest.approx([0.5, 0.75, 1.0])  # 90 s x 20, 30, 40 images
    margin = next(r for r in report.time_rows if r.strategy == "margin")
    assert margin.hours[0] == pytest.approx(1.0) and margin.n_seeds == 2
    aulc = next(r for r in report.rows if r.strategy == "margin").aulc[0]
    assert margin.aulc[0] == pytest.approx(aulc)
    assert margin.aulc_per_hour[0] == pytest.approx(aulc / 1.0)
    write_report(report, conf("expert_seconds"), tmp_path)
    assert (tmp_path / TIME_FIGURE).stat().st_size > 0
    assert (tmp_path / "learning_curves.png").exists()  # the labelled-count view stays
    with (tmp_path / TIME_TABLE).open() as f:
        table = {row["strategy"]: row for row in csv.DictReader(f)}
    assert float(table["random"]["expert_hours_mean"]) == pytest.approx(1.0)
    assert "## Expert time" in (tmp_path / "summary.md").read_text()


def test_labels_view_is_unchanged_and_expert_time_refuses_runs_without_cost(tmp_path):
    plain = build_report(conf("labels"), FakeReader(runs(None), {"FINISHED": 4}))
    assert plain.time_rows == [] and plain.time_x == {}
    write_report(plain, conf("labels"), tmp_path)
    assert not (tmp_path / TIME_FIGURE).exists()
    with pytest.raises(NoCostError, match=r"x=expert_seconds needs runs .* random-seed0"):
        build_report(conf("expert_seconds"), FakeReader(runs(None), {"FINISHED": 4}))
    with pytest.raises(ConfigError, match="x must be labels or expert_seconds"):
        conf("hours")


def test_summary_runs_carry_the_expert_time_when_runs_logged_it():
    with_cost = summary_runs(runs(), [])
    margin = next(r for r in with_cost if r.tags["strategy"] == "margin")
    means = {step: v for k, step, v in margin.metrics
             if k == "summary/cost/expert_seconds/mean"}
    assert means == {20: 1800.0, 30: 2700.0, 40: 3600.0}
    without = summary_runs(runs(None), [])
    assert not any(k.startswith("summary/cost/") for r in without for k, _, _ in r.metrics)


def reader_run(k: int, judge: bool, seed: str, final: float) -> StoredRun:
    """An entropy run labelled by ``k`` readers (and an adjudicator) at 60 s per read."""
    names = [f"r{i}" for i in range(k + judge)]
    panel = str([{"name": n, "noise_rate": 0.1, "seconds_per_image": 60.0} for n in names])
    history = {METRIC: list(zip(STEPS, [0.5, 0.6, final], strict=True)),
               "cost/expert_seconds": [(s, s * 60.0 * k) for s in STEPS]}
    history.update({f"cost/expert_seconds/{n}": [(s, s * 60.0) for s in STEPS] for n in names})
    return StoredRun(f"k{k}{judge}{seed}", f"entropy-seed{seed}", "FINISHED", 0,
                     {"strategy": "entropy", "seed": seed, "dataset": "synthetic",
                      "model": "simple_cnn", "budget": "tiny"},
                     {"seed": seed, "strategy.name": "entropy", "oracle.annotators": panel,
                      "oracle.adjudicator": names[-1] if judge else "None"},
                     {METRIC: final}, history)


def test_the_cost_table_says_what_k_readers_cost_and_gain():
    panels = [(1, False), (2, True), (3, False)]
    stored = [reader_run(k, judge, seed, 0.7 + 0.02 * k + 0.01 * int(seed))
              for k, judge in panels for seed in ("0", "1")]
    report = build_report(conf("expert_seconds"), FakeReader(stored, {"FINISHED": 6}))
    rows = sorted(report.time_rows, key=lambda r: r.hours[0])
    assert [r.readers for r in rows] == ["1", "2 + adjudicator", "3"]
    assert [r.hours[0] for r in rows] == pytest.approx([40 / 60, 80 / 60, 120 / 60])
    assert [r.n_seeds for r in rows] == [2, 2, 2]
    assert rows[0].aulc_per_hour[0] > rows[2].aulc_per_hour[0]  # three reads cost three times
    assert len({r.setting for r in rows}) == 3  # one setting per panel, short labels
    assert all(len(r.setting) < 160 and "oracle.annotators=[{'name'" in r.setting for r in rows)
    table = "\n".join(time_markdown(report.time_rows, METRIC))
    assert "| readers per image |" in table and "| 2 + adjudicator |" in table
