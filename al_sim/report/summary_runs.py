"""Summary runs: one MLflow run per strategy under a sweep's parent, mean ± std per labelled count.

The MLflow UI draws a group's mean with a min-max band, never mean ± std; these
runs carry ``summary/<metric>/mean``, ``/lower`` (mean - std), ``/upper``
(mean + std) and ``/n_seeds`` at every labelled count (step), and the full-data
baseline as ``summary/<metric>/full_data`` at the same steps (so it does not
stretch the x-axis). Grouped by the ``strategy`` tag, the chart view shows one
mean ± std curve per strategy. Computation here; the writes go through the
report's reader (:meth:`RunReader.replace_summary_runs`). Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from al_sim.report.reader import RunReader, StoredRun, SummaryRun, SweepRef
from al_sim.report.stats import aggregate, seed_order
from al_sim.tracking.contract import (
    BASELINE_SUFFIX,
    EXPERT_SECONDS,
    FULL_STRATEGY,
    SUMMARY_PREFIX,
    SWEEP_STRATEGY,
    TEST_KEYS,
    metric_bounds,
)

SUMMARISED = (*TEST_KEYS, EXPERT_SECONDS)  # expert time: runs with a cost model (oracle=panel)


def summary_key(metric: str, stat: str) -> str:
    """``summary/test/balanced_accuracy/mean`` for ``(test/balanced_accuracy, mean)``."""
    return f"{SUMMARY_PREFIX}{metric}/{stat}"


def _history(run: StoredRun, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = run.history.get(key, [])
    return np.array([s for s, _ in points], np.int64), np.array([v for _, v in points], float)


def summary_points(runs: Sequence[StoredRun], metric: str,
                   baseline: float | None = None) -> list[tuple[str, int, float]]:
    """(key, step, value) of ``metric``'s mean, mean -+ std and seed count across ``runs``.

    Counts reached by only some runs use those runs; std needs two. ``baseline`` is logged
    at every step as ``summary/<metric>/full_data``.
    """
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in zip(*_history(run, metric), strict=True):
            by_step.setdefault(int(step), []).append(float(value))
    points: list[tuple[str, int, float]] = []
    for step in sorted(by_step):
        stats = aggregate(np.array([step]), [np.array([v]) for v in by_step[step]])
        mean, std = float(stats.mean[0]), float(stats.std[0])
        points += [(summary_key(metric, "mean"), step, mean),
                   (summary_key(metric, "n_seeds"), step, float(stats.n))]
        if not math.isnan(std):
            low, high = metric_bounds(metric)  # a band of AUROC ends at 1, never 1.01
            points += [(summary_key(metric, "lower"), step, max(low, mean - std)),
                       (summary_key(metric, "upper"), step, min(high, mean + std))]
        if baseline is not None:
            points.append((summary_key(metric, BASELINE_SUFFIX), step, baseline))
    return points


def baseline_value(runs: Iterable[StoredRun], metric: str, dataset: str, model: str,
                   data_params: dict[str, str]) -> float | None:
    """Mean final ``metric`` of the full-data runs on the same data and model."""
    finals = [_history(b, metric)[1][-1] for b in runs
              if b.tags.get("dataset") == dataset and b.tags.get("model") == model
              and metric in b.history
              and {k: v for k, v in b.params.items() if k.startswith("dataset.")} == data_params]
    return float(np.mean(finals)) if finals else None


def summary_runs(runs: Sequence[StoredRun], baselines: Sequence[StoredRun],
                 metrics: Sequence[str] = SUMMARISED) -> list[SummaryRun]:
    """One summary run per (dataset, model, strategy) of ``runs``."""
    groups: dict[tuple[str, str, str], list[StoredRun]] = {}
    for run in runs:
        key = (run.tags.get("dataset", "?"), run.tags.get("model", "?"),
               run.tags.get("strategy", "?"))
        groups.setdefault(key, []).append(run)
    several = len({(d, m) for d, m, _ in groups}) > 1
    out = []
    for (dataset, model, strategy), members in sorted(groups.items()):
        if strategy == FULL_STRATEGY:
            continue
        data = {k: v for k, v in members[0].params.items() if k.startswith("dataset.")}
        points: list[tuple[str, int, float]] = []
        params = {"n_seeds": str(len(members)),
                  "seeds": ";".join(sorted({r.tags.get("seed", "?") for r in members},
                                           key=seed_order))}
        for metric in metrics:
            base = baseline_value(baselines, metric, dataset, model, data)
            points += summary_points(members, metric, base)
            if base is not None:
                params[f"baseline/{metric}"] = repr(base)
        name = f"{strategy} mean±std" + (f" ({dataset}, {model})" if several else "")
        tags = {"strategy": strategy, "dataset": dataset, "model": model,
                **{k: members[0].tags[k] for k in ("budget",) if k in members[0].tags}}
        out.append(SummaryRun(name, tags, params, points))
    return out


def log_summary_runs(reader: RunReader, ref: SweepRef) -> list[str]:
    """Replace the sweep's summary runs from its FINISHED runs; the new run ids."""
    if ref.parent_run_id is None:
        return []
    runs, _ = reader.runs(ref, SUMMARISED)
    baselines = reader.baselines(ref, TEST_KEYS)
    return reader.replace_summary_runs(ref, summary_runs(runs, baselines),
                                       {"strategy": SWEEP_STRATEGY})


def log_sweep_summaries(uri: str, experiment: str, parent_run_id: str) -> list[str]:
    """For the sweep callback: the summary runs of the sweep whose parent is ``parent_run_id``."""
    reader = RunReader(uri)
    return log_summary_runs(reader, reader.select(experiment, parent_run_id))
