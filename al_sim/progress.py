"""Terminal output: a per-round progress bar and the final summary table."""

from __future__ import annotations

import math
import sys
from typing import TextIO

from tqdm import tqdm

from al_sim.config import BudgetConf
from al_sim.data.base import ALDataset
from al_sim.loop import ALResult, Callback, RoundResult

SUMMARY_COLUMNS = (
    ("round", "round", "{:d}"),
    ("labelled", "n_labeled", "{:d}"),
    ("accuracy", "test/accuracy", "{:.4f}"),
    ("macro-F1", "test/f1_macro", "{:.4f}"),
    ("bal. acc", "test/balanced_accuracy", "{:.4f}"),
    ("AUROC", "test/auroc", "{:.4f}"),
    ("train s", "train_s", "{:.1f}"),
    ("query s", "query_s", "{:.2f}"),
)


def summary_table(result: ALResult) -> str:
    """The per-round results as a fixed-width text table, with the AULC underneath."""
    header = [name for name, _, _ in SUMMARY_COLUMNS]
    rows = []
    for r in result.rounds:
        values = {"round": r.round, "n_labeled": r.n_labeled, "train_s": r.train_s,
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
    return "\n".join(lines)


class ProgressPrinter(Callback):
    """Shows a bar that advances once per round, then prints the summary table."""

    def __init__(self, title: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.title = title
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self._bar: tqdm | None = None
        self._done = 0

    def skip(self, rounds: int) -> None:
        """Count ``rounds`` already done (a resumed run)."""
        self._done = rounds

    def on_run_start(self, dataset: ALDataset, budget: BudgetConf) -> None:
        total = 1 if budget.full else budget.rounds + 1
        self._bar = tqdm(total=total, initial=self._done, desc=self.title, unit="round",
                         disable=not self.enabled, file=sys.stderr, dynamic_ncols=True)

    def on_round_end(self, result: RoundResult) -> None:
        if self._bar is not None:
            self._bar.set_postfix(labelled=result.n_labeled,
                                  acc=f"{result.metrics['test/accuracy']:.3f}")
            self._bar.update(1)

    def on_run_end(self, result: ALResult) -> None:
        self.close()
        print(f"\n{self.title}\n{summary_table(result)}", file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar (also on failure)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
