"""Stopping signals on hand-made prediction sequences with known answers; stop_when rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from al_sim.maths.stop_signals import (
    StopMonitor,
    StopRuleError,
    class_change,
    cohen_kappa,
    f_change,
    first_holding,
    least_confidence,
    normalised_entropy,
    parse_rules,
    plateau_gain,
    stop_set,
)
from al_sim.report.stop_replay import would_stop
from tests.conftest import FAST_CLI, run_cli


def one_hot(labels: list[int], n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[labels]


def test_cohen_kappa_known_values() -> None:
    a = np.array([0, 0, 1, 1])
    assert cohen_kappa(a, a, 2) == 1.0
    # observed 0.5, expected 0.5 (both 50/50): kappa 0
    assert cohen_kappa(a, np.array([0, 1, 0, 1]), 2) == 0.0
    # complete disagreement on balanced labels: observed 0, expected 0.5 -> -1
    assert cohen_kappa(a, np.array([1, 1, 0, 0]), 2) == -1.0
    # 10 items: agree on 8; a and b have 6 zeros each -> pe = (6*6 + 4*4) / 100 = 0.52
    a = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 0])
    assert cohen_kappa(a, b, 2) == pytest.approx((0.8 - 0.52) / 0.48)
    # one identical constant: perfect agreement by convention
    assert cohen_kappa(np.zeros(5, int), np.zeros(5, int), 3) == 1.0


def test_f_change_and_class_change_known_values() -> None:
    prev = np.array([0, 0, 1, 1])
    assert f_change(prev, prev, 2) == 0.0
    assert class_change(prev, prev) == 0.0
    cur = np.array([0, 1, 1, 1])  # class 0: F = 2*1/(2+1) = 2/3; class 1: 2*2/(2+3) = 4/5
    assert f_change(prev, cur, 2) == pytest.approx(1 - 4 / 5)  # two classes: the positive one
    assert class_change(prev, cur) == 0.25
    # more classes: macro over those either model predicts (class 2: neither)
    assert f_change(prev, cur, 3) == pytest.approx(1 - (2 / 3 + 4 / 5) / 2)
    assert math.isnan(f_change(prev * 0, cur * 0, 2))  # no positive predicted: no F


def test_uncertainties_known_values() -> None:
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.75, 0.25]])
    assert least_confidence(probs) == pytest.approx([0.0, 0.5, 0.25])
    ent = normalised_entropy(probs)
    assert ent[0] == pytest.approx(0.0, abs=1e-9) and ent[1] == pytest.approx(1.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert ent[2] == pytest.approx(h)


def test_plateau_gain() -> None:
    assert math.isnan(plateau_gain([0.5, 0.6, 0.7], window=3))
    assert plateau_gain([0.5, 0.6, 0.7, 0.71], window=3) == pytest.approx(0.21)
    # best of the last 2 rounds vs best before: no gain
    assert plateau_gain([0.5, 0.8, 0.79, 0.78], window=2) == pytest.approx(-0.01)


def test_monitor_on_a_prediction_sequence() -> None:
    """Three rounds: predictions change, then stabilise; signals follow by hand."""
    monitor = StopMonitor(n_classes=2, window=2)
    unlabeled = np.array([True, True, False, True])
    r0 = monitor.update(one_hot([0, 0, 1, 1], 2), unlabeled, 0.6)
    assert math.isnan(r0["stop/kappa"]) and math.isnan(r0["stop/class_change"])
    assert r0["stop/mean_uncertainty"] == 0.0 and math.isnan(r0["stop/plateau"])
    r1 = monitor.update(one_hot([0, 1, 0, 1], 2), unlabeled, 0.7)  # kappa 0 vs round 0
    assert r1["stop/kappa_pair"] == 0.0 and r1["stop/class_change"] == 0.5
    assert math.isnan(r1["stop/kappa"])  # one pair: no window of 2 to average yet
    r2 = monitor.update(one_hot([0, 1, 0, 1], 2), unlabeled, 0.7)  # kappa 1 vs round 1
    assert r2["stop/kappa_pair"] == 1.0
    assert r2["stop/kappa"] == pytest.approx(0.5)  # mean of the last 2 pairs: (0 + 1) / 2
    assert r2["stop/class_change"] == 0.0 and r2["stop/f_change_pair"] == 0.0
    assert math.isnan(r1["stop/f_change"]) and r1["stop/f_change_pair"] == 0.5  # 1 - F1 of 1
    assert r2["stop/f_change"] == 0.5  # the largest of the last 2 pairs
    assert r2["stop/plateau"] == pytest.approx(0.1)  # max(0.7, 0.7) - max(0.6)
    r3 = monitor.update(one_hot([0, 1, 0, 1], 2), unlabeled, 0.7)
    assert r3["stop/kappa"] == 1.0 and r3["stop/plateau"] == pytest.approx(0.0)
    assert r3["stop/f_change"] == 0.0
    # uncertainty counts the unlabelled stop-set images only
    soft = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5], [0.6, 0.4]])
    assert monitor.update(soft, unlabeled, 0.7)["stop/mean_uncertainty"] == pytest.approx(
        (0.5 + 0.1 + 0.4) / 3)


@pytest.mark.parametrize("c", [2, 3])
def test_stop_decisions_equal_small_texts_criteria(c: int) -> None:
    """Round by round, a rule on our signal stops exactly when small-text's criterion does:
    KappaAverage and DeltaFScore (two classes only; windows of 3), ClassificationChange and
    OverallUncertainty, on a run whose first models predict one class (perfect agreement, no
    positive) and whose later ones settle."""
    pytest.importorskip("small_text")
    from small_text.stopping_criteria import (
        ClassificationChange,
        DeltaFScore,
        KappaAverage,
        OverallUncertainty,
    )

    rng = np.random.default_rng(5)
    n = 200
    unlabeled = rng.random(n) < 0.8
    rounds = [np.full((n, c), 1 / c) + np.eye(c)[0] * 0.5] * 2  # one class, twice
    labels = rng.integers(0, c, n)
    for changed in (0.5, 0.2, 0.05, 0.01, 0.0, 0.0, 0.0):
        labels = np.where(rng.random(n) < changed, rng.integers(0, c, n), labels)
        sharp = rng.uniform(1, 12) * (1 + len(rounds))
        logits = np.eye(c)[labels] * sharp + rng.normal(size=(n, c))
        rounds.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    monitor = StopMonitor(c, window=3)
    theirs = {"kappa>=0.9": KappaAverage(c, window_size=3, kappa=0.9),
              **({"f_change<0.05": DeltaFScore(2, window_size=3, threshold=0.05)}
                 if c == 2 else {}),
              "class_change<=0.02": ClassificationChange(c, threshold=0.02),
              "overall_uncertainty<0.05": OverallUncertainty(c, threshold=0.05)}
    decided = {rule: [] for rule in theirs}
    for probs in rounds:
        signals = monitor.update(probs, unlabeled, 0.0)
        for rule, criterion in theirs.items():
            with np.errstate(invalid="ignore"):  # DeltaFScore's 0/0 with no positive: no stop
                peer = criterion.stop(predictions=probs.argmax(axis=1), proba=probs,
                                      indices_stopping=np.flatnonzero(unlabeled))
            ours = first_holding(parse_rules(rule), signals) is not None
            decided[rule].append((ours, bool(peer)))
    for rule, pairs in decided.items():
        assert [o for o, _ in pairs] == [t for _, t in pairs], rule
        assert any(t for _, t in pairs) and not all(t for _, t in pairs), rule  # both kinds
    assert decided["kappa>=0.9"][1] == (False, False)  # one class twice: no window yet


def test_restored_monitor_continues_like_an_uninterrupted_one() -> None:
    seq = [one_hot(p, 3) for p in ([0, 1, 2, 2], [0, 1, 1, 2], [0, 1, 1, 1], [0, 1, 1, 1])]
    mask = np.ones(4, bool)
    whole = StopMonitor(3, window=2)
    signals = [whole.update(p, mask, m) for p, m in zip(seq, [0.1, 0.2, 0.3, 0.3], strict=True)]
    resumed = StopMonitor(3, window=2)
    resumed.restore(seq[1], signals[:2], [0.1, 0.2])
    for p, m, want in zip(seq[2:], [0.3, 0.3], signals[2:], strict=True):
        assert resumed.update(p, mask, m) == want


def test_rules_parse_and_fire() -> None:
    rules = parse_rules("kappa>=0.99, plateau<0.005")
    assert [str(r) for r in rules] == ["kappa>=0.99", "plateau<0.005"]
    assert first_holding(rules, {"stop/kappa": float("nan"), "stop/plateau": 0.01}) is None
    assert first_holding(rules, {"stop/kappa": 0.995, "stop/plateau": 0.0}) == rules[0]
    assert first_holding(rules, {"stop/kappa": 0.9, "stop/plateau": 0.001}) == rules[1]


@pytest.mark.parametrize("text, fragment", [
    ("kapa>=0.99", "unknown stopping signal 'kapa'"),
    ("kappa=>0.99", "malformed stop rule"),
    ("kappa>=", "malformed stop rule"),
    ("kappa>=0.9,", "malformed stop rule"),
])
def test_bad_rules_are_clear_errors(text: str, fragment: str) -> None:
    with pytest.raises(StopRuleError, match=fragment):
        parse_rules(text)


def test_stop_set_is_fixed_by_seed() -> None:
    a, b = stop_set(1000, 50, seed=7), stop_set(1000, 50, seed=7)
    assert np.array_equal(a, b) and len(np.unique(a)) == 50 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, stop_set(1000, 50, seed=8))
    assert len(stop_set(30, 50, seed=7)) == 30


def test_would_stop_replays_a_rule_on_logged_signals() -> None:
    steps, values = np.array([10, 20, 30, 40]), np.array([0.5, 0.6, 0.7, 0.72])
    kappa = [(20, 0.9), (30, 0.995), (40, 0.999)]
    stop = would_stop(steps, values, kappa, parse_rules("kappa>=0.99")[0])
    assert stop.stopped and stop.n_labeled == 30 and stop.lost == pytest.approx(0.02)
    # holding only at the last round saves nothing: no early stop
    late = would_stop(steps, values, [(40, 1.0)], parse_rules("kappa>=0.99")[0])
    assert not late.stopped and late.n_labeled == 40 and late.lost == 0.0
    # a loss falls as labels grow: stopping at 0.40 instead of 0.28 costs +0.12, not -0.12
    loss = np.array([0.6, 0.5, 0.40, 0.28])
    cost = would_stop(steps, loss, kappa, parse_rules("kappa>=0.99")[0], higher_is_better=False)
    assert cost.n_labeled == 30 and cost.lost == pytest.approx(0.12)


def test_a_run_with_stop_when_stops_early_and_says_why(tmp_path: Path) -> None:
    # class_change is defined from round 1 on and never exceeds 1: the rule holds there
    proc = run_cli(["budget=tiny", "tracking.query_grids=false", "hydra.run.dir=run",
                    "budget.stop_when='class_change<=1'", *FAST_CLI], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopped early (budget.stop_when): class_change<=1 (class_change=" in proc.stdout
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 1 + 2
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["stopped_by"].startswith("class_change<=1 (class_change=")
    assert "after round 1, 30 labelled images" in run.data.tags["stopped_by"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "stop/kappa")] == [20, 30]
    assert math.isnan(client.get_metric_history(run.info.run_id, "stop/kappa")[0].value)


def test_a_bad_stop_rule_is_one_error_line(tmp_path: Path) -> None:
    proc = run_cli(["budget=tiny", "budget.stop_when='kapa>=0.9'", *FAST_CLI], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: budget.stop_when: unknown stopping signal 'kapa' in 'kapa>=0.9'; "
                      "known: mean_uncertainty, overall_uncertainty, kappa, f_change, "
                      "class_change, plateau"]
    assert "Traceback" not in proc.stderr
