"""The report against expert time (``x=expert_seconds``): curves and a cost table.

Runs whose oracle has a cost model (``oracle=panel``) log ``cost/expert_seconds``
(cumulative) at every labelled count; a strategy's curve against expert time
takes, at each labelled count, the mean expert time and the mean metric across
seeds. The table gives each strategy's readers per image (k, and whether an
adjudicator read the flagged images), total expert hours, its AULC and the AULC
per expert hour (both means over seeds): for settings that differ in the panel,
what k readers cost and gain. Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from al_sim.report.figures import CurvePanel, comparison_curves
from al_sim.report.reader import StoredRun
from al_sim.report.stats import CurveStats, RunSeries, mean_std
from al_sim.report.tables import write_records
from al_sim.runtime.errors import ALSimError
from al_sim.tracking.contract import EXPERT_SECONDS

HOUR_S = 3600.0
ADJUDICATOR_PARAM = "oracle.adjudicator"  # the flattened config's key: a name, or None
NO_ADJUDICATOR = ("", "None", "null")
TIME_FIGURE, TIME_TABLE = "learning_curves_expert_time.png", "expert_time.csv"


@dataclass(frozen=True)
class TimeRow:
    """One strategy in one setting: what its labels cost and what they bought."""

    setting: str
    strategy: str
    readers: str  # readers per image, e.g. "2" or "2 + adjudicator"
    n_seeds: int
    hours: tuple[float, float]  # total expert hours: mean, std over seeds
    aulc: tuple[float, float]
    aulc_per_hour: tuple[float, float]


def seconds_at(run: StoredRun, steps: np.ndarray) -> np.ndarray:
    """``cost/expert_seconds`` of ``run`` at each labelled count in ``steps``."""
    logged = dict(run.history.get(EXPERT_SECONDS, []))
    return np.array([logged.get(int(s), math.nan) for s in steps], dtype=np.float64)


class NoCostError(ALSimError):
    """``x=expert_seconds`` over runs that logged no expert time."""


def require_cost(runs: Sequence[StoredRun]) -> None:
    """NoCostError naming the first run that logged no expert time (no cost model)."""
    for run in runs:
        if not run.history.get(EXPERT_SECONDS):
            raise NoCostError(f"x=expert_seconds needs runs that logged {EXPERT_SECONDS} (an "
                              f"oracle with a cost model: oracle=panel); run {run.name} "
                              f"({run.run_id}) logged none; use x=labels or select panel runs")


def readers_of(run: StoredRun) -> str:
    """How many annotators read each image of ``run`` (those who logged their own
    ``cost/expert_seconds/<name>``, less the adjudicator, who reads flagged images only)."""
    names = [k for k in run.history if k.startswith(f"{EXPERT_SECONDS}/")]
    judged = run.params.get(ADJUDICATOR_PARAM, "") not in NO_ADJUDICATOR
    if not names:
        return "?"
    return f"{len(names) - judged}" + (" + adjudicator" if judged else "")


def mean_seconds(runs: Sequence[StoredRun], steps: np.ndarray) -> np.ndarray:
    """Mean cumulative expert seconds across ``runs`` at each labelled count."""
    return np.nanmean(np.stack([seconds_at(r, steps) for r in runs]), axis=0)


def time_row(setting: str, strategy: str, runs: Sequence[StoredRun],
             aulcs: Mapping[str, float]) -> TimeRow:
    """The cost table's row; ``aulcs``: each seed's AULC of the compared metric."""
    hours, per_hour = [], []
    for run in runs:
        total = run.history[EXPERT_SECONDS][-1][1] / HOUR_S
        hours.append(total)
        area = aulcs[run.tags.get("seed", "?")]
        per_hour.append(area / total if total > 0 else math.nan)
    readers = " / ".join(sorted({readers_of(r) for r in runs}))
    return TimeRow(setting, strategy, readers, len(runs), mean_std(hours),
                   mean_std([aulcs[r.tags.get("seed", "?")] for r in runs]), mean_std(per_hour))


def time_records(rows: Sequence[TimeRow]) -> list[dict[str, str]]:
    """``expert_time.csv``'s rows."""
    def num(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.6g}"

    return [{"setting": r.setting, "strategy": r.strategy, "readers": r.readers,
             "n_seeds": str(r.n_seeds),
             "expert_hours_mean": num(r.hours[0]), "expert_hours_std": num(r.hours[1]),
             "aulc_mean": num(r.aulc[0]), "aulc_std": num(r.aulc[1]),
             "aulc_per_expert_hour_mean": num(r.aulc_per_hour[0]),
             "aulc_per_expert_hour_std": num(r.aulc_per_hour[1])} for r in rows]


def time_markdown(rows: Sequence[TimeRow], metric: str) -> list[str]:
    """The cost table for ``summary.md``."""
    def pm(pair: tuple[float, float], fmt: str) -> str:
        mean, std = pair
        if math.isnan(mean):
            return "–"
        return format(mean, fmt) + ("" if math.isnan(std) else f" ± {format(std, fmt)}")

    lines = ["", f"## Expert time ({metric})", "",
             "| setting | strategy | readers per image | seeds | expert hours | AULC | "
             "AULC per expert hour |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.setting} | {r.strategy} | {r.readers} | {r.n_seeds} | "
              f"{pm(r.hours, '.2f')} | "
              f"{pm(r.aulc, '.4f')} | {pm(r.aulc_per_hour, '.4f')} |" for r in rows]
    return lines


def time_view(label: str, runs: Mapping[str, Mapping[str, StoredRun]],
              curves: Mapping[str, CurveStats], series: Mapping[str, Sequence[RunSeries]],
              ) -> tuple[dict[str, np.ndarray], list[TimeRow]]:
    """One setting against expert time: per strategy the mean expert hours at each of its
    curve's labelled counts, and the cost table's rows. ``runs``: strategy -> seed -> run."""
    members = {name: list(seeds.values()) for name, seeds in sorted(runs.items())}
    hours = {name: mean_seconds(members[name], stats.steps) / HOUR_S
             for name, stats in curves.items()}
    rows = [time_row(label, name, members[name], {r.seed: r.aulc for r in of})
            for name, of in series.items()]
    return hours, rows


def write_time(panels: Sequence[CurvePanel], hours: Mapping[str, Mapping[str, np.ndarray]],
               rows: Sequence[TimeRow], metric: str, reference: str, folder: Path) -> list[Path]:
    """Write the curves against expert hours (one panel per setting) and ``expert_time.csv``."""
    timed = [CurvePanel(p.title, p.curves, p.baseline, hours[p.title]) for p in panels]
    return [comparison_curves(timed, metric, folder / TIME_FIGURE, reference,
                              xlabel="expert hours"),
            write_records(folder / TIME_TABLE, time_records(rows))]
