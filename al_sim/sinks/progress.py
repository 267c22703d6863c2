"""Terminal output: a per-round progress bar and the final summary table."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from al_sim.core.events import ALResult, RoundResult, RunCallback, RunInfo
from al_sim.data.base import ALDataset
from al_sim.tracking.contract import ACCURACY, EXPERT_SECONDS, N_LABELED, ROUND, TEST_KEYS

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


def summary_table(result: ALResult) -> str:
    """The per-round results as a fixed-width text table, with the AULC underneath."""
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
    lines.append(f"AULC (accuracy vs labelled, normalised): {result.aulc:.4f}   "
                 f"images annotated: {result.n_annotated}")
    spent = result.rounds[-1].costs.get(EXPERT_SECONDS) if result.rounds else None
    if spent is not None:  # an oracle with a cost model (oracle=panel)
        lines.append(f"expert time: {spent / 3600:.2f} h ({spent:.0f} s)")
    if result.stopped_by:
        rule = "" if result.stopped_by.startswith("budget.") else " (budget.stop_when)"
        lines.append(f"stopped early{rule}: {result.stopped_by}")
    return "\n".join(lines)


class ProgressPrinter(RunCallback):
    """Shows a bar that advances once per round, then prints the summary table."""

    def __init__(self, bar: bool = True, stream: TextIO | None = None) -> None:
        self.title, self.run_dir = "", Path(".")
        self.bar = bar
        self.stream = stream or sys.stdout
        self._bar: tqdm | None = None
        self._done = 0

    def setup(self, run: RunInfo) -> None:
        self.title, self.run_dir = run.name, Path(run.run_dir).resolve()
        self._done = 0 if run.resume is None else len(run.resume.result.rounds)

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        self._bar = tqdm(total=rounds, initial=self._done, desc=self.title, unit="round",
                         disable=not self.bar, file=sys.stderr, dynamic_ncols=True)

    def on_round_end(self, result: RoundResult) -> None:
        if self._bar is not None:
            self._bar.set_postfix(labelled=result.n_labeled,
                                  acc=f"{result.metrics[ACCURACY]:.3f}")
            self._bar.update(1)

    def on_run_end(self, result: ALResult) -> None:
        self.close()
        print(f"\n{self.title}\n{summary_table(result)}", file=self.stream, flush=True)
        print(f"results: {self.run_dir} (metrics.csv, queries.csv, plots, config.yaml)",
              file=sys.stderr, flush=True)

    def on_close(self, status: str) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (also on failure)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
