"""The report's statistics on hand-made curves with known answers (no MLflow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from al_sim.report.stats import (
    RunSeries,
    aggregate,
    beats,
    labels_to_target,
    mean_std,
    missing_seeds,
    paired_test,
    penalty_matrix,
    seed_order,
    summarize,
)

STEPS = np.array([10, 20, 30, 40])


def test_mean_std_uses_the_sample_std() -> None:
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5 over n - 1 = 3
    one = mean_std([0.7])
    assert one[0] == 0.7 and math.isnan(one[1])
    assert all(math.isnan(v) for v in mean_std([]))


def test_aggregate_is_mean_and_std_per_labelled_count() -> None:
    stats_ = aggregate(np.array([10, 20]), [np.array([0.5, 0.6]), np.array([0.7, 0.9])])
    assert stats_.n == 2
    np.testing.assert_allclose(stats_.mean, [0.6, 0.75])
    np.testing.assert_allclose(stats_.std, [math.sqrt(0.02), math.sqrt(0.045)])
    single = aggregate(np.array([10, 20]), [np.array([0.5, 0.6])])
    assert np.isnan(single.std).all()


@pytest.mark.parametrize(("target", "expected"), [
    (0.70, 20),   # reached exactly (>=) at 20
    (0.68, 20),
    (0.40, 10),   # already at the first point
    (0.75, 40),   # the dip at 30 does not count
    (0.90, None),  # never reached
])
def test_labels_to_target(target: float, expected: int | None) -> None:
    values = np.array([0.5, 0.7, 0.65, 0.8])
    assert labels_to_target(STEPS, values, target) == expected


def test_paired_test_matches_scipy_on_common_seeds() -> None:
    a = {"0": 0.71, "1": 0.64, "2": 0.69, "3": 0.75, "4": 0.70}
    b = {"0": 0.65, "1": 0.63, "2": 0.61, "3": 0.70, "4": 0.66, "9": 0.99}  # 9: unpaired
    result = paired_test(a, b)
    x = np.array([a[s] for s in "01234"])
    y = np.array([b[s] for s in "01234"])
    assert result.n_pairs == 5
    assert result.mean_diff == pytest.approx(float(np.mean(x - y)))
    assert result.t_stat == pytest.approx(stats.ttest_rel(x, y).statistic)
    assert result.t_p == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert result.wilcoxon_p == pytest.approx(stats.wilcoxon(x, y).pvalue)
    assert result.t_p < 0.05


def test_paired_test_needs_two_pairs() -> None:
    result = paired_test({"0": 0.8, "1": 0.7}, {"0": 0.6})
    assert result.n_pairs == 1
    assert result.mean_diff == pytest.approx(0.2)
    assert math.isnan(result.t_p) and math.isnan(result.wilcoxon_p)
    assert paired_test({"0": 0.8}, {"5": 0.6}).n_pairs == 0


def test_beats_needs_significance_and_the_right_sign() -> None:
    base = np.array([0.60, 0.62, 0.58])
    assert beats(base + [0.10, 0.11, 0.12], base, alpha=0.05)
    assert not beats(base, base + [0.10, 0.11, 0.12], alpha=0.05)  # significant, but worse
    assert not beats(base + [0.10, -0.10, 0.05], base, alpha=0.05)  # not significant
    assert not beats(base, base, alpha=0.05)  # identical: no test


def test_lower_is_better_flips_targets_and_wins() -> None:
    loss = np.array([0.9, 0.5, 0.55, 0.3])
    assert labels_to_target(STEPS, loss, 0.52, higher_is_better=False) == 20  # 0.5 <= 0.52
    assert labels_to_target(STEPS, loss, 0.2, higher_is_better=False) is None
    base = np.array([0.60, 0.62, 0.58])
    lower = base - [0.10, 0.11, 0.12]
    assert beats(lower, base, alpha=0.05, higher_is_better=False)
    assert not beats(base, lower, alpha=0.05, higher_is_better=False)
    names, matrix = penalty_matrix([_setting(a=[lower, lower + 0.01, lower - 0.01],
                                             b=[base, base + 0.02, base - 0.01])],
                                   higher_is_better=False)
    assert names == ["a", "b"] and matrix[0, 1] == 1.0 and matrix[1, 0] == 0.0


def _setting(**strategies: list[np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    return {name: {str(k): v for k, v in enumerate(curves)} for name, curves in strategies.items()}


def test_penalty_matrix_on_a_constructed_case() -> None:
    base = [np.array([0.60, 0.62, 0.70, 0.75]), np.array([0.60, 0.64, 0.69, 0.71]),
            np.array([0.60, 0.61, 0.72, 0.73])]
    lift = [0.10, 0.11, 0.12]  # per seed: consistent, significant (t ~ 19, p ~ 0.003)
    better = [b + np.array([0.0, d, d, d]) for b, d in zip(base, lift, strict=True)]
    noisy = [b + np.array([0.0, d, d, d]) for b, d in zip(base, [0.1, -0.1, 0.05], strict=True)]
    first = _setting(a=better, b=base, c=noisy)
    second = _setting(a=base, b=base, d=better)  # a ties b here; only d beats anyone
    names, matrix = penalty_matrix([first, second], alpha=0.05)
    assert names == ["a", "b", "c", "d"]
    at = {(i, j): matrix[names.index(i), names.index(j)] for i in names for j in names}
    assert at["a", "b"] == pytest.approx((0.75 + 0.0) / 2)  # 3 of 4 points, then none
    assert at["b", "a"] == 0.0
    assert at["a", "c"] == 0.0 and at["c", "a"] == 0.0 and at["c", "b"] == 0.0
    assert at["d", "a"] == 0.75 and at["d", "b"] == 0.75  # d only shares the second setting
    assert math.isnan(at["c", "d"]) and math.isnan(at["d", "c"])  # never side by side
    assert all(math.isnan(at[n, n]) for n in names)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=3, max_size=3), min_size=6, max_size=6))
def test_penalty_matrix_is_a_share_and_antisymmetric_in_wins(values: list[list[float]]) -> None:
    arrays = [np.array(v) for v in values]
    names, matrix = penalty_matrix([_setting(x=arrays[:3], y=arrays[3:])])
    assert names == ["x", "y"]
    off = matrix[~np.eye(2, dtype=bool)]
    assert ((off >= 0) & (off <= 1)).all()
    assert matrix[0, 1] + matrix[1, 0] <= 1.0  # a point cannot be won both ways


def test_missing_seeds_names_what_each_strategy_lacks() -> None:
    seeds = {"random": ["0", "1", "2"], "entropy": ["0", "2"], "margin": ["10", "0", "1", "2"]}
    assert missing_seeds(seeds) == {"random": ["10"], "entropy": ["1", "10"]}
    assert sorted(["10", "2", "b", "1"], key=seed_order) == ["1", "2", "10", "b"]


def _run(seed: str, values: list[float], aulc: float) -> RunSeries:
    finals = {"test/accuracy": values[-1], "test/balanced_accuracy": values[-1] / 2}
    return RunSeries(seed, STEPS[: len(values)], np.array(values), finals, aulc)


def test_summarize_builds_the_table_row() -> None:
    runs = [_run("1", [0.5, 0.6, 0.7, 0.8], 0.66), _run("0", [0.5, 0.7, 0.7, 0.9], 0.70)]
    reference = [_run("0", [0.5, 0.55, 0.6, 0.6], 0.56), _run("1", [0.5, 0.5, 0.6, 0.7], 0.58)]
    row = summarize("synthetic / simple_cnn", "entropy", runs, target=0.7, reference=reference)
    assert row.seeds == ("0", "1")
    assert row.finals["test/accuracy"] == pytest.approx((0.85, math.sqrt(0.005)))
    assert row.finals["test/balanced_accuracy"][0] == pytest.approx(0.425)
    assert row.aulc == pytest.approx((0.68, math.sqrt(0.0008)))
    assert row.labels_to_target == 30  # mean curve 0.5, 0.65, 0.7, 0.85
    assert row.seeds_reaching == 2
    assert row.test is not None and row.test.n_pairs == 2
    assert row.test.t_p == pytest.approx(stats.ttest_rel([0.70, 0.66], [0.56, 0.58]).pvalue)
    alone = summarize("s", "random", reference, target=None, reference=None)
    assert alone.labels_to_target is None and alone.test is None and alone.seeds_reaching == 0


def test_compare_takes_a_sweep_dir_under_home_and_refuses_two_modes(tmp_path, monkeypatch,
                                                                    capsys) -> None:
    """``sweep_id=~/multirun/x``: Hydra's grammar refused the bare ``~`` and the tag holds the
    expanded path; ``--cfg job --info`` was Hydra's ValueError traceback."""
    import sys

    from al_sim import compare
    from al_sim.report.reader import _same_sweep

    monkeypatch.setenv("HOME", str(tmp_path))
    assert _same_sweep(str(tmp_path / "multirun" / "s"), "~/multirun/s")
    assert not _same_sweep(str(tmp_path / "multirun" / "s"), "~/multirun/t")
    monkeypatch.setattr(sys, "argv", ["compare", "--cfg", "job", "--info"])
    with pytest.raises(SystemExit) as exit_:
        compare.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: --cfg and --info cannot be given together")


def test_a_misspelt_reference_is_refused_and_an_absent_one_is_not() -> None:
    """``reference=entopy`` gave a report without paired tests and a note; a sweep without
    ``random`` (the default reference) still gets its report."""
    from al_sim.report.build import ReportError, check_reference

    strategies = ["bald", "entropy", "margin"]
    with pytest.raises(ReportError, match=r"^reference=entopy is no strategy of this sweep; did "
                                          r"you mean reference=entropy\? its strategies: bald, "):
        check_reference("entopy", strategies)
    check_reference("random", strategies)  # absent, not misspelt: each setting notes it
    check_reference("margin", strategies)
