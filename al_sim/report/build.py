"""The comparison report: select a sweep's runs, check they compare, compute and write the report.

Groups runs into settings (dataset, model, and whatever else the sweep varied
besides strategy, seed and budget); statistics in :mod:`al_sim.report.stats`.
Imports no torch.
"""

from __future__ import annotations

import difflib
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from al_sim.config.schema import DEFAULT_EXPERIMENT, X_EXPERT, CompareConf
from al_sim.maths.aulc import aulc
from al_sim.report.expert_time import TimeRow, require_cost, time_view
from al_sim.report.reader import RunReader, StoredRun, SweepRef
from al_sim.report.stats import (
    CurveStats,
    RunSeries,
    SummaryRow,
    aggregate,
    missing_seeds,
    penalty_matrix,
    seed_order,
    summarize,
)
from al_sim.report.stop_replay import (
    STOP_KEYS,
    StopRow,
    rules_of,
    stop_rows,
)
from al_sim.runtime.errors import ALSimError
from al_sim.tracking.contract import (
    ACCURACY,
    AUTO_METRIC,
    BALANCED_ACCURACY,
    EXPERT_SECONDS,
    FINAL_AULC,
    FULL_STRATEGY,
    TASK_TAG,
    TEST_KEYS,
    aulc_key,
    lower_is_better,
    primary_metric,
    results_neutral,
)

# Params that are the compared factors (and the budget, checked apart), not a setting.
COMPARED = {"seed", "dataset.name", "model.name", "budget.name", "budget.initial",
            "budget.query_size", "budget.rounds", "budget.full"}
COMPARED_PREFIXES = ("strategy.",)


class ReportError(ALSimError):
    """The selected runs cannot be compared as asked."""


@dataclass
class Setting:
    """Runs that differ only by strategy and seed: strategy -> seed -> run."""

    label: str
    dataset: str
    model: str
    runs: dict[str, dict[str, StoredRun]] = field(default_factory=dict)
    members: list[StoredRun] = field(default_factory=list)  # every run, repeats included

    def any_run(self) -> StoredRun:
        """A representative run (for the dataset params)."""
        return next(iter(next(iter(self.runs.values())).values()))


@dataclass
class Report:
    """Everything the files are made of."""

    ref: SweepRef
    metric: str
    settings: list[Setting]
    rows: list[SummaryRow]
    curves: dict[str, dict[str, CurveStats]]  # setting label -> strategy -> stats
    baselines: dict[str, tuple[float, int]]  # setting label -> (value, n runs)
    names: list[str]
    penalty: np.ndarray
    notes: list[str]
    stops: list[StopRow] = field(default_factory=list)
    time_rows: list[TimeRow] = field(default_factory=list)  # x=expert_seconds: the cost table
    time_x: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # expert hours


def curve(run: StoredRun, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Labelled counts and values of ``key`` logged by ``run``."""
    points = run.history.get(key, [])
    return (np.array([s for s, _ in points], dtype=np.int64),
            np.array([v for _, v in points], dtype=np.float64))


LABEL_VALUE_CHARS = 40  # a longer param value (e.g. a panel's annotators) is shortened in labels


def shown(value: str) -> str:
    """A param value as a setting label shows it: long ones cut, with a digest of the whole
    (two panels that differ only past the cut stay two settings)."""
    if len(value) <= LABEL_VALUE_CHARS:
        return value
    digest = hashlib.sha1(value.encode()).hexdigest()[:6]
    return f"{value[:LABEL_VALUE_CHARS - 12]}...#{digest}"


def group_settings(runs: list[StoredRun], notes: list[str]) -> list[Setting]:
    """Split runs into settings; a repeated (strategy, seed) keeps its latest run."""
    by_data: dict[tuple[str, str], list[StoredRun]] = defaultdict(list)
    for run in runs:
        by_data[(run.tags.get("dataset", "?"), run.tags.get("model", "?"))].append(run)
    settings: dict[str, Setting] = {}
    for (dataset, model), group in sorted(by_data.items()):
        keys = sorted({k for r in group for k in r.params if not results_neutral(k)
                       and k not in COMPARED and not k.startswith(COMPARED_PREFIXES)})
        varying = [k for k in keys if len({r.params.get(k) for r in group}) > 1]
        for run in sorted(group, key=lambda r: r.start_time):
            extra = ", ".join(f"{k}={shown(run.params.get(k, '-'))}" for k in varying)
            label = f"{dataset} / {model}" + (f", {extra}" if extra else "")
            setting = settings.setdefault(label, Setting(label, dataset, model))
            setting.members.append(run)
            strategy, seed = run.tags.get("strategy", "?"), run.tags.get("seed", "?")
            seeds = setting.runs.setdefault(strategy, {})
            if seed in seeds:
                notes.append(f"{strategy} seed {seed} ran twice in {label}: "
                             f"using the later run {run.run_id}")
            seeds[seed] = run
    return list(settings.values())


def _steps_text(steps: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, steps)) if len(steps) <= 6 else \
        f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"
    return f"[{shown}]"


def check_reference(reference: str, strategies: list[str]) -> None:
    """ReportError when ``reference`` is in no setting but looks like a misspelt strategy (a
    reference simply absent, e.g. no ``random`` in the sweep, is a note per setting)."""
    if reference in strategies:
        return
    close = difflib.get_close_matches(reference, strategies, n=1, cutoff=0.75)
    if close:
        raise ReportError(f"reference={reference} is no strategy of this sweep; did you mean "
                          f"reference={close[0]}? its strategies: {', '.join(strategies)}")


def check_budgets(setting: Setting, metric: str) -> None:
    """Raise ReportError unless every run of ``setting`` logged ``metric`` at the same counts."""
    kinds: dict[tuple[int, ...], list[StoredRun]] = defaultdict(list)
    for run in setting.members:
        if metric not in run.history:
            logged = ", ".join(sorted(k for k in run.metrics if "/" in k)) or "none"
            raise ReportError(f"metric {metric!r} was not logged by run {run.name} "
                              f"({run.run_id}; logged: {logged}); set metric=<one of them>")
        kinds[tuple(int(s) for s in curve(run, metric)[0])].append(run)
    if len(kinds) > 1:
        parts = []
        for steps, runs in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            budgets = ",".join(sorted({r.tags.get("budget", "?") for r in runs}))
            parts.append(f"{len(runs)} run(s) at {_steps_text(steps)} (budget={budgets}, "
                         f"e.g. {runs[0].name})")
        raise ReportError(f"runs of {setting.label} differ in budget (labelled counts), so their "
                          f"curves cannot be averaged: {'; '.join(parts)}; compare runs of one "
                          "budget (select a sweep with sweep_id=<sweep dir>)")


def to_series(run: StoredRun, metric: str) -> RunSeries:
    """The report's view of one run: curve, final values, AULC of ``metric``."""
    steps, values = curve(run, metric)
    finals = {k: float(curve(run, k)[1][-1]) if k in run.history else float("nan")
              for k in dict.fromkeys([ACCURACY, BALANCED_ACCURACY, metric])}
    if metric == ACCURACY and FINAL_AULC in run.metrics:
        area = float(run.metrics[FINAL_AULC])  # logged by the run itself
    elif aulc_key(metric) in run.metrics:
        area = float(run.metrics[aulc_key(metric)])
    else:
        area = aulc(steps, values)
    return RunSeries(run.tags.get("seed", "?"), steps, values, finals, area)


def baseline_for(setting: Setting, baselines: list[StoredRun],
                 metric: str) -> tuple[float, int] | None:
    """Mean final ``metric`` of full-data runs on the same data and model, and their count."""
    data = {k: v for k, v in setting.any_run().params.items() if k.startswith("dataset.")}
    finals = [curve(b, metric)[1][-1] for b in baselines
              if b.tags.get("dataset") == setting.dataset and b.tags.get("model") == setting.model
              and metric in b.history
              and {k: v for k, v in b.params.items() if k.startswith("dataset.")} == data]
    return (float(np.mean(finals)), len(finals)) if finals else None


def task_metric(runs: list[StoredRun]) -> str:
    """The primary metric of the runs' task (tag ``al_sim.task``; untagged: single-label)."""
    metrics = sorted({primary_metric(r.tags.get(TASK_TAG)) for r in runs})
    if len(metrics) > 1:
        tasks = sorted({r.tags.get(TASK_TAG, "single-label") for r in runs})
        raise ReportError(f"the runs mix tasks ({', '.join(tasks)}); set metric=<a metric "
                          "they all log>, e.g. metric=test/auroc")
    return metrics[0] if metrics else primary_metric(None)


def build_report(conf: CompareConf, reader: RunReader, ref: SweepRef | None = None) -> Report:
    """Select the runs (unless ``ref`` is given), check they compare, compute every number."""
    ref = ref or reader.select(conf.tracking.experiment, conf.sweep_id,  # default: any study's
                               anywhere=conf.tracking.experiment == DEFAULT_EXPERIMENT)
    wanted = [] if conf.metric == AUTO_METRIC else [conf.metric]
    keys = list(dict.fromkeys([*wanted, ACCURACY, BALANCED_ACCURACY, *TEST_KEYS, *STOP_KEYS,
                               EXPERT_SECONDS]))
    rules = rules_of(conf.stop_rules)
    found, statuses = reader.runs(ref, keys)
    if conf.metric == AUTO_METRIC:
        conf = replace(conf, metric=task_metric(found))
    what = f"sweep {ref.sweep_id}" if ref.sweep_id else "any run"
    where = f"{what} of experiment {ref.experiment!r}"
    if not statuses:
        raise ReportError(f"no runs in {where}; pick another with sweep_id=<sweep dir> or all")
    runs = [r for r in found if r.tags.get("strategy") != FULL_STRATEGY]
    if not runs:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        raise ReportError(f"no FINISHED active-learning runs in {where} (found: {counts}); "
                          "only finished runs are compared")
    notes: list[str] = []
    unfinished = sum(n for s, n in statuses.items() if s != "FINISHED")
    if unfinished:
        notes.append(f"{unfinished} run(s) not FINISHED in {where} are left out")
    settings = group_settings(runs, notes)
    check_reference(conf.reference, sorted({name for st in settings for name in st.runs}))
    for setting in settings:
        check_budgets(setting, conf.metric)
        if conf.x == X_EXPERT:
            require_cost(setting.members)
    full_runs = reader.baselines(ref, [conf.metric])
    higher = not lower_is_better(conf.metric)
    rows, curves, baselines, penalty_input, stops = [], {}, {}, [], []
    time_rows: list[TimeRow] = []
    time_x: dict[str, dict[str, np.ndarray]] = {}
    for setting in settings:
        series = {name: [to_series(r, conf.metric) for r in seeds.values()]
                  for name, seeds in sorted(setting.runs.items())}
        for name, lack in missing_seeds({n: list(s) for n, s in setting.runs.items()}).items():
            have = sorted(setting.runs[name], key=seed_order)
            notes.append(f"{name} lacks seed(s) {', '.join(lack)} in {setting.label}: its numbers "
                         f"use seed(s) {', '.join(have)}; paired tests use common seeds")
        base = baseline_for(setting, full_runs, conf.metric)
        if base is not None:
            baselines[setting.label] = base
        target = conf.target_value
        if target is None and base is not None:  # within the fraction of the baseline
            target = base[0] * conf.target_fraction if higher else base[0] / conf.target_fraction
        if target is None:
            notes.append(f"no full-data baseline (strategy=full) for {setting.label}: "
                         "labels-to-target needs one, or set target_value=<value>")
        reference = series.get(conf.reference)
        if reference is None:
            notes.append(f"reference strategy {conf.reference!r} not in {setting.label}: "
                         "no paired tests there")
        for name, runs_of in series.items():
            ref_runs = None if name == conf.reference else reference
            rows.append(summarize(setting.label, name, runs_of, target, ref_runs, higher))
        curves[setting.label] = {n: aggregate(s[0].steps, [r.values for r in s])
                                 for n, s in series.items()}
        penalty_input.append({n: {r.seed: r.values for r in s} for n, s in series.items()})
        if conf.x == X_EXPERT:
            time_x[setting.label], timed = time_view(setting.label, setting.runs,
                                                     curves[setting.label], series)
            time_rows += timed
        stops += stop_rows(setting.label, {n: [(*curve(r, conf.metric), r.history)
                                               for r in seeds.values()]
                                           for n, seeds in setting.runs.items()}, rules, higher)
    names, matrix = penalty_matrix(penalty_input, conf.alpha, higher)
    return Report(ref, conf.metric, settings, rows, curves, baselines, names, matrix, notes,
                  stops, time_rows, time_x)
