"""Terminal output: a per-round progress bar and the final summary table."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from al_sim.config.checks import non_negative
from al_sim.core.events import ALResult, RoundResult, RunCallback, RunInfo
from al_sim.data.base import ALDataset
from al_sim.tracking.contract import (
    BALANCED_ACCURACY,
    EXPERT_SECONDS,
    MULTILABEL_PRIMARY_METRIC,
    N_LABELED,
    ROUND,
    TEST_KEYS,
)

SUMMARY_COLUMNS = (
    ("round", ROUND, "{:d}"),
    ("labelled", N_LABELED, "{:d}"),
    ("accuracy", TEST_KEYS[0], "{:.4f}"),
    ("macro-F1", TEST_KEYS[1], "{:.4f}"),
    ("bal. acc", TEST_KEYS[2], "{:.4f}"),
    ("AUROC", TEST_KEYS[3], "{:.4f}"),
    ("train s", "train_s", "{:.1f}"),
    ("query s", "query_s", "{:.2f}"),
)


def summary_table(result: ALResult, primary: str | None = None) -> str:
    """The per-round results as a fixed-width text table, with the AULC underneath (also of
    ``primary``, the task's report metric, when that is not accuracy)."""
    header = [name for name, _, _ in SUMMARY_COLUMNS]
    rows = []
    for r in result.rounds:
        values = {ROUND: r.round, N_LABELED: r.n_labeled, "train_s": r.train_s,
                  "query_s": r.query_s, **r.metrics}
        cells = []
        for _, key, fmt in SUMMARY_COLUMNS:
            value = values[key]
            cells.append("nan" if isinstance(value, float) and math.isnan(value)
                         else fmt.format(value))
        rows.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    also = ""
    if primary and primary != TEST_KEYS[0] and result.rounds and all(
            primary in r.metrics for r in result.rounds):
        also = f", {primary.removeprefix('test/')} {result.aulc_of(primary):.4f} (the report's)"
    lines.append(f"AULC (accuracy vs labelled, normalised): {result.aulc:.4f}{also}   "
                 f"images annotated: {result.n_annotated}")
    spent = result.rounds[-1].costs.get(EXPERT_SECONDS) if result.rounds else None
    if spent is not None:  # an oracle with a cost model (oracle=panel)
        lines.append(f"expert time: {spent / 3600:.2f} h ({spent:.0f} s)")
    if result.stopped_by:
        rule = "" if result.stopped_by.startswith("budget.") else " (budget.stop_when)"
        lines.append(f"stopped early{rule}: {result.stopped_by}")
    return "\n".join(lines)


# how the bar names a task's primary metric (maths/task.py: Task.primary_metric)
SHORT_NAMES = {BALANCED_ACCURACY: "bal_acc", MULTILABEL_PRIMARY_METRIC: "auroc"}


def stage_text(round_: int, stage: str, done: int, total: int) -> str:
    """``round 2: training 40/120 steps`` (or ``round 2: querying`` with no count)."""
    return f"round {round_}: {stage}" + (f" {done}/{total} steps" if total else "")


class ProgressPrinter(RunCallback):
    """Shows a bar that advances once per round and says, within a round, what it is doing
    (querying, training step n of m, evaluating); then prints the summary table.

    The bar's metric is the task's primary one (balanced accuracy; macro AUROC for
    multi-label). Within-round redraws come at most every ``refresh_s`` seconds.
    """

    def __init__(self, bar: bool = True, stream: TextIO | None = None,
                 refresh_s: float = 0.5) -> None:
        non_negative("callbacks.progress", refresh_s=refresh_s)
        self.title, self.run_dir = "", Path(".")
        self.bar = bar
        self.stream = stream or sys.stdout
        self.refresh_s = refresh_s
        self._bar: tqdm | None = None
        self._done = 0
        self._metric = BALANCED_ACCURACY
        self._last = ""  # the last round's result, kept beside the stage
        self._shown_at = -math.inf

    def setup(self, run: RunInfo) -> None:
        self.title, self.run_dir = run.name, Path(run.run_dir).resolve()
        self._done = 0 if run.resume is None else len(run.resume.result.rounds)

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        self._metric = dataset.task.primary_metric
        self._bar = tqdm(total=rounds, initial=self._done, desc=self.title, unit="round",
                         disable=not self.bar, file=sys.stderr, dynamic_ncols=True)

    def on_progress(self, round_: int, stage: str, done: int, total: int) -> None:
        if self._bar is None or self._bar.disable:
            return
        now = time.monotonic()
        if total and done < total and now - self._shown_at < self.refresh_s:
            return  # a step among many: redraw a few times a second, not per step
        self._shown_at = now
        self._bar.set_postfix_str(self._postfix(stage_text(round_, stage, done, total)))

    def _postfix(self, doing: str) -> str:
        return ", ".join(p for p in (doing, self._last) if p)

    def on_round_end(self, result: RoundResult) -> None:
        if self._bar is not None:
            name = SHORT_NAMES.get(self._metric, self._metric.removeprefix("test/"))
            self._last = (f"labelled={result.n_labeled} "
                          f"{name}={result.metrics.get(self._metric, math.nan):.3f}")
            self._bar.set_postfix_str(self._last, refresh=False)
            self._bar.update(1)

    def on_run_end(self, result: ALResult) -> None:
        self.close()
        print(f"\n{self.title}\n{summary_table(result, self._metric)}", file=self.stream,
              flush=True)
        print(f"results: {self.run_dir} (metrics.csv, queries.csv, plots, config.yaml)",
              file=sys.stderr, flush=True)

    def on_close(self, status: str) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (also on failure)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
