"""When each stopping rule would have stopped: labelled count and metric lost, per strategy.

For every run the report replays the logged signals (``stop/<name>``) against a rule
(``compare.stop_rules``, e.g. ``kappa>=0.99``): the run *would have stopped* after the
first round (before the last) where the rule holds. The metric lost is how much worse
the run was at that round than at its end (the full budget): final minus stop value,
or stop minus final for a lower-is-better metric such as ``test/loss``. Plain arrays;
imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from al_sim.maths.stop_signals import SIGNALS, StopRule, parse_rules
from al_sim.tracking.contract import STOP_PREFIX

STOP_KEYS = tuple(STOP_PREFIX + name for name in SIGNALS)


@dataclass(frozen=True)
class SeedStop:
    """One run under one rule: where it would have stopped and what it would have lost."""

    stopped: bool  # False: the rule never held before the last round (no labels saved)
    n_labeled: int
    lost: float  # how much worse the metric was at the stop than at the end (positive: a cost)


@dataclass(frozen=True)
class StopRow:
    """A strategy under a rule, across seeds."""

    setting: str
    strategy: str
    rule: str
    n_seeds: int
    n_stopped: int
    mean_n_labeled: float
    budget: int  # the full budget's labelled count
    mean_lost: float
    worst_lost: float


def would_stop(steps: np.ndarray, values: np.ndarray, signal: Sequence[tuple[int, float]],
               rule: StopRule, higher_is_better: bool = True) -> SeedStop:
    """Replay ``signal`` (step, value) against ``rule`` on a run with ``values`` at ``steps``."""
    by_step = dict(signal)
    sign = 1.0 if higher_is_better else -1.0
    for i, step in enumerate(steps[:-1]):
        if rule.holds(float(by_step.get(int(step), math.nan))):
            return SeedStop(True, int(step), sign * float(values[-1] - values[i]))
    return SeedStop(False, int(steps[-1]), 0.0)


def stop_rows(setting: str, runs: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray,
                                                               Mapping[str, list]]]],
              rules: Sequence[StopRule], higher_is_better: bool = True) -> list[StopRow]:
    """Rows for every strategy (``runs``: strategy -> per-seed (steps, values, histories))."""
    rows = []
    for strategy, seeds in sorted(runs.items()):
        for rule in rules:
            key = STOP_PREFIX + rule.signal
            stops = [would_stop(steps, values, hist.get(key, []), rule, higher_is_better)
                     for steps, values, hist in seeds]
            if not stops:
                continue
            lost = [s.lost for s in stops]
            rows.append(StopRow(setting, strategy, str(rule), len(stops),
                                sum(s.stopped for s in stops),
                                float(np.mean([s.n_labeled for s in stops])),
                                int(seeds[0][0][-1]), float(np.mean(lost)), float(np.max(lost))))
    return rows


def rules_of(texts: Sequence[str]) -> list[StopRule]:
    """Parsed ``compare.stop_rules`` (one rule per entry)."""
    return [rule for text in texts for rule in parse_rules(text)]


def stop_markdown(rows: Sequence[StopRow], metric: str) -> list[str]:
    """The stopping table as Markdown lines (empty without rows)."""
    if not rows:
        return []
    out = ["## When to stop labelling", "",
           f"Each rule replayed on the logged stop/* signals: the labelled count where the run "
           f"would have stopped (mean over seeds; the full budget when the rule never held "
           f"before the last round) and the {metric} lost against the full budget "
           "(mean, worst seed).", ""]
    for setting in dict.fromkeys(r.setting for r in rows):
        out += [f"### {setting}", "",
                "| strategy | rule | seeds stopped early | labelled at stop | of budget | "
                f"{metric} lost (mean) | lost (worst) |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in (r for r in rows if r.setting == setting):
            out.append(f"| {r.strategy} | `{r.rule}` | {r.n_stopped}/{r.n_seeds} | "
                       f"{r.mean_n_labeled:.0f} | {r.budget} | {r.mean_lost:+.4f} | "
                       f"{r.worst_lost:+.4f} |")
        out.append("")
    return out


def stop_records(rows: Sequence[StopRow]) -> list[dict[str, str]]:
    """``stopping.csv`` records, full precision."""
    return [{"setting": r.setting, "strategy": r.strategy, "rule": r.rule,
             "n_seeds": str(r.n_seeds), "n_stopped": str(r.n_stopped),
             "mean_n_labeled": repr(r.mean_n_labeled), "budget": str(r.budget),
             "mean_lost": repr(r.mean_lost), "worst_lost": repr(r.worst_lost)} for r in rows]
