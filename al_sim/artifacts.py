"""Writes a run's files into its run directory as each round ends, so a crash loses nothing.

Files: ``queries.csv`` (appended every round), ``labeled_set.csv``,
``metrics.csv``, ``learning_curve.png`` and ``queries/round_XX.png``. The
MLflow tracker uploads these same files; they stay on disk either way.
"""

from __future__ import annotations

import csv
import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from al_sim.config import BudgetConf
from al_sim.data.base import ALDataset
from al_sim.loop import ALResult, Callback, QueryRecord, RoundResult
from al_sim.plots import learning_curve, query_grid

QUERIES_HEADER = ("round", "pool_index", "score", "oracle_label", "true_label")
METRICS_HEADER = ("round", "n_labeled", "test/accuracy", "test/f1_macro",
                  "test/balanced_accuracy", "test/auroc", "test/loss", "time/train_s",
                  "time/query_s", "time/eval_s")


def _fmt(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


class RunDirWriter(Callback):
    """Keeps the run directory's result files current after every round."""

    def __init__(self, run_dir: Path, grids: bool = True, max_grid_images: int = 64,
                 title: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.grids = grids
        self.max_grid_images = max_grid_images
        self.title = title
        self.new_files: list[Path] = []  # written since the last take_new_files()
        # Query grids render on one background thread, off the training path.
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="al_sim-plots")
        self._pending: list[Future[Path]] = []
        self._rounds: list[RoundResult] = []
        self._queries: list[QueryRecord] = []
        self._dataset: ALDataset | None = None

    @property
    def queries_csv(self) -> Path:
        """Path of ``queries.csv``."""
        return self.run_dir / "queries.csv"

    @property
    def metrics_csv(self) -> Path:
        """Path of ``metrics.csv``."""
        return self.run_dir / "metrics.csv"

    def take_new_files(self) -> list[Path]:
        """Files written since the last call (and forget them)."""
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        files, self.new_files = self.new_files + [f.result() for f in done], []
        return files

    def restore(self, result: ALResult, dataset: ALDataset) -> None:
        """Rewrite the files from a resumed run's rounds (dropping anything written later)."""
        self._start_files()
        self._dataset = dataset
        for record in result.queries:
            self._queries.append(record)
            self._append_queries(record)
        for round_result in result.rounds:
            self._rounds.append(round_result)
            self._append_metrics(round_result)
        self.new_files += [self.queries_csv, self.metrics_csv]

    def on_run_start(self, dataset: ALDataset, budget: BudgetConf) -> None:
        self._dataset = dataset
        if not self._queries:  # a fresh run, not a restored one
            self._start_files()

    def _start_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.queries_csv.open("w", newline="") as f:
            csv.writer(f).writerow(QUERIES_HEADER)
        with self.metrics_csv.open("w", newline="") as f:
            csv.writer(f).writerow(METRICS_HEADER)

    def _append_queries(self, record: QueryRecord) -> None:
        with self.queries_csv.open("a", newline="") as f:
            writer = csv.writer(f)
            for idx, score, given, true in zip(record.indices, record.scores,
                                               record.oracle_labels, record.true_labels,
                                               strict=True):
                writer.writerow((record.round, int(idx), _fmt(float(score)), int(given),
                                 int(true)))

    def _append_metrics(self, result: RoundResult) -> None:
        row = [result.round, result.n_labeled]
        row += [_fmt(result.metrics[k]) for k in METRICS_HEADER[2:7]]
        row += [_fmt(result.train_s), _fmt(result.query_s), _fmt(result.eval_s)]
        with self.metrics_csv.open("a", newline="") as f:
            csv.writer(f).writerow(row)

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        self._queries.append(record)
        self._append_queries(record)
        self.new_files.append(self.queries_csv)
        if self.grids:
            self._pending.append(self._renderer.submit(self._grid, record, dataset))

    def on_round_end(self, result: RoundResult) -> None:
        self._rounds.append(result)
        self._append_metrics(result)
        self.new_files.append(self.metrics_csv)

    def on_run_end(self, result: ALResult) -> None:
        self.new_files += self.finish()

    def finish(self) -> list[Path]:
        """Write ``labeled_set.csv`` and ``learning_curve.png`` from the rounds done so far."""
        files = [self.queries_csv, self.metrics_csv]
        for future in self._pending:  # wait for the grids still rendering
            files.append(future.result())
        self._pending = []
        if self._queries and self._dataset is not None:
            files.append(self._labeled_set(self._queries, self._dataset))
        if self._rounds:
            files.append(learning_curve(
                [r.n_labeled for r in self._rounds],
                {"accuracy": [r.metrics["test/accuracy"] for r in self._rounds],
                 "macro-F1": [r.metrics["test/f1_macro"] for r in self._rounds],
                 "balanced accuracy": [r.metrics["test/balanced_accuracy"]
                                       for r in self._rounds]},
                self.run_dir / "learning_curve.png", title=self.title))
        return [f for f in files if f.exists()]

    def _labeled_set(self, queries: list[QueryRecord], dataset: ALDataset) -> Path:
        path = self.run_dir / "labeled_set.csv"
        ids = dataset.pool_ids
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("pool_index", "id", "label", "class_name", "round"))
            for q in queries:
                for idx, label in zip(q.indices, q.oracle_labels, strict=True):
                    ident = ids[idx] if ids is not None else str(int(idx))
                    writer.writerow((int(idx), ident, int(label), dataset.class_names[label],
                                     q.round))
        return path

    def _grid(self, record: QueryRecord, dataset: ALDataset) -> Path:
        show = record.indices[: self.max_grid_images]
        images = dataset.pool_x[np.asarray(show, dtype=np.int64)].numpy()
        captions = []
        for idx, score, given in zip(show, record.scores, record.oracle_labels, strict=False):
            text = f"#{int(idx)} {dataset.class_names[int(given)]}"
            if not math.isnan(float(score)):
                text += f"\n{float(score):.3f}"
            captions.append(text)
        title = f"round {record.round}: {len(record.indices)} images labelled"
        if len(record.indices) > len(show):
            title += f" (first {len(show)} shown)"
        path = self.run_dir / "queries" / f"round_{record.round:02d}.png"
        return query_grid(images, captions, path, title=title)
