"""Statistics of the comparison report, over plain arrays: no MLflow, no files.

Conventions (the report's documented numbers):

* mean ± std across seeds: ``std`` is the sample standard deviation (``ddof=1``),
  NaN when a strategy has a single seed;
* direction: every ranking takes ``higher_is_better`` (False for losses and durations,
  :func:`al_sim.tracking.contract.lower_is_better`); for those, *reaching* a target is ``<=`` and
  *beating* is a negative mean difference;
* labels-to-target: the first labelled count at which the *mean* curve reaches the
  target (``>=``, or ``<=`` when lower is better), None when it never does;
* tests against the reference strategy: two-sided paired t-test
  (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank (``scipy.stats.wilcoxon``)
  on the per-seed AULC, paired by seed (seeds both strategies have; NaN below 2 pairs);
* penalty matrix (Ash et al. 2020, BADGE; Lueth et al. 2023): at every labelled count
  of every setting, a two-sided paired t-test (``ttest_rel``) across the seeds both
  strategies share; *i beats j* there when p < alpha and mean(i - j) > 0 (< 0 when
  lower is better). Entry
  ``P[i, j]`` is the share of labelled counts where i beats j, averaged over the settings
  holding both (each setting weighs the same); the diagonal is NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

NAN = float("nan")


@dataclass(frozen=True)
class RunSeries:
    """One finished run: its metric per labelled count and its summary numbers."""

    seed: str
    steps: np.ndarray  # labelled counts, increasing
    values: np.ndarray  # the compared metric at each labelled count
    finals: Mapping[str, float]  # final value of each reported metric (e.g. test/accuracy)
    aulc: float  # area under ``values`` vs ``steps``, normalised


@dataclass(frozen=True)
class CurveStats:
    """Mean and std across seeds at each labelled count."""

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int


@dataclass(frozen=True)
class PairedTest:
    """A strategy vs the reference on a per-seed score, paired by seed."""

    n_pairs: int
    mean_diff: float  # mean of (strategy - reference)
    t_stat: float
    t_p: float
    wilcoxon_p: float


@dataclass(frozen=True)
class SummaryRow:
    """One strategy in one setting: the table's numbers."""

    setting: str
    strategy: str
    seeds: tuple[str, ...]
    finals: Mapping[str, tuple[float, float]]  # metric -> (mean, std) of the final value
    aulc: tuple[float, float]
    target: float | None
    labels_to_target: int | None
    seeds_reaching: int
    test: PairedTest | None  # None for the reference itself or when it is absent


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of ``values``; std is NaN for one value, both for none."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return NAN, NAN
    std = float(np.std(x, ddof=1)) if x.size > 1 else NAN
    return float(np.mean(x)), std


def aggregate(steps: np.ndarray, curves: Sequence[np.ndarray]) -> CurveStats:
    """Mean and std (ddof=1) across seeds of curves sharing ``steps``."""
    matrix = np.asarray(curves, dtype=np.float64).reshape(len(curves), len(steps))
    mean = matrix.mean(axis=0)
    std = matrix.std(axis=0, ddof=1) if len(curves) > 1 else np.full(len(steps), NAN)
    return CurveStats(np.asarray(steps), mean, std, len(curves))


def labels_to_target(steps: np.ndarray, values: np.ndarray, target: float,
                     higher_is_better: bool = True) -> int | None:
    """The first labelled count whose value reaches ``target``, None if none does."""
    values = np.asarray(values, dtype=np.float64)
    reached = np.flatnonzero(values >= target if higher_is_better else values <= target)
    return int(np.asarray(steps)[reached[0]]) if reached.size else None


def paired_test(scores: Mapping[str, float], reference: Mapping[str, float]) -> PairedTest:
    """Two-sided paired t-test and Wilcoxon of ``scores`` vs ``reference`` over common seeds."""
    seeds = sorted(set(scores) & set(reference), key=seed_order)
    a = np.array([scores[s] for s in seeds], dtype=np.float64)
    b = np.array([reference[s] for s in seeds], dtype=np.float64)
    if len(seeds) < 2:
        diff = float(np.mean(a - b)) if seeds else NAN
        return PairedTest(len(seeds), diff, NAN, NAN, NAN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-variance differences: scipy warns, returns nan/inf
        t = stats.ttest_rel(a, b)
        try:
            w_p = float(stats.wilcoxon(a, b).pvalue)
        except ValueError:
            w_p = NAN
    return PairedTest(len(seeds), float(np.mean(a - b)), float(t.statistic), float(t.pvalue), w_p)


def beats(a: np.ndarray, b: np.ndarray, alpha: float, higher_is_better: bool = True) -> bool:
    """Whether ``a`` is significantly better than ``b`` (paired two-sided t-test, p < alpha)."""
    if len(a) < 2:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.ttest_rel(a, b).pvalue)
    diff = float(np.mean(np.asarray(a) - np.asarray(b)))
    return bool(p < alpha and (diff > 0 if higher_is_better else diff < 0))


def penalty_matrix(
    settings: Sequence[Mapping[str, Mapping[str, np.ndarray]]], alpha: float = 0.05,
    higher_is_better: bool = True,
) -> tuple[list[str], np.ndarray]:
    """Pairwise win shares; each setting maps strategy -> seed -> values at its labelled counts.

    Returns the strategy names (sorted) and ``P`` with ``P[i, j]`` the share of labelled
    counts where strategy i beats strategy j (see the module docstring).
    """
    names = sorted({name for setting in settings for name in setting})
    index = {name: k for k, name in enumerate(names)}
    wins = np.zeros((len(names), len(names)))
    shared = np.zeros((len(names), len(names)))
    for setting in settings:
        for i_name, i_runs in setting.items():
            for j_name, j_runs in setting.items():
                if i_name == j_name:
                    continue
                seeds = sorted(set(i_runs) & set(j_runs), key=seed_order)
                if not seeds:
                    continue
                i, j = index[i_name], index[j_name]
                shared[i, j] += 1
                a = np.array([i_runs[s] for s in seeds], dtype=np.float64)
                b = np.array([j_runs[s] for s in seeds], dtype=np.float64)
                won = [beats(a[:, k], b[:, k], alpha, higher_is_better) for k in range(a.shape[1])]
                wins[i, j] += float(np.mean(won)) if won else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(shared > 0, wins / np.maximum(shared, 1), NAN)
    np.fill_diagonal(matrix, NAN)
    return names, matrix


def missing_seeds(seeds: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per strategy, the seeds some other strategy of the same setting has and it lacks."""
    every = set().union(*map(set, seeds.values())) if seeds else set()
    out = {name: sorted(every - set(have), key=seed_order) for name, have in seeds.items()}
    return {name: lack for name, lack in out.items() if lack}


def summarize(
    setting: str,
    strategy: str,
    runs: Sequence[RunSeries],
    target: float | None,
    reference: Sequence[RunSeries] | None,
    higher_is_better: bool = True,
) -> SummaryRow:
    """The table row of ``strategy``: finals and AULC mean ± std, labels-to-target, test."""
    runs = sorted(runs, key=lambda r: seed_order(r.seed))
    keys = list(dict.fromkeys(k for r in runs for k in r.finals))
    finals = {k: mean_std([r.finals.get(k, NAN) for r in runs]) for k in keys}
    to_target, reaching = None, 0
    if target is not None and runs:
        curve = aggregate(runs[0].steps, [r.values for r in runs])
        to_target = labels_to_target(curve.steps, curve.mean, target, higher_is_better)
        reaching = sum(labels_to_target(r.steps, r.values, target, higher_is_better) is not None
                       for r in runs)
    test = None
    if reference is not None:
        test = paired_test({r.seed: r.aulc for r in runs}, {r.seed: r.aulc for r in reference})
    return SummaryRow(setting, strategy, tuple(r.seed for r in runs), finals,
                      mean_std([r.aulc for r in runs]), target, to_target, reaching, test)


def seed_order(seed: str) -> tuple[int, float, str]:
    """Sort key: numeric seeds by value, then the others by name."""
    try:
        value = float(seed)
    except ValueError:
        return (1, 0.0, seed)
    return (0, value if math.isfinite(value) else 0.0, seed)
