"""Writes a run's files into its run directory as each round ends, so a crash loses nothing.

Files: ``queries.csv`` (appended every round), ``labeled_set.csv``,
``metrics.csv``, ``learning_curve.png`` and ``queries/round_XX.png``. The
MLflow writer mirrors this directory; the files stay on disk either way.
"""

from __future__ import annotations

import csv
import io
import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from al_sim.config.checks import positive
from al_sim.core.events import (
    PAUSED,
    ALResult,
    LoopState,
    QueryRecord,
    RoundResult,
    RunCallback,
    RunInfo,
)
from al_sim.core.pool import LabelPool
from al_sim.data.base import ALDataset
from al_sim.runtime.files import atomic_write
from al_sim.sinks.run_plots import learning_curve, query_grid
from al_sim.tracking.contract import (
    ANNOTATIONS_FILE,
    BALANCED_ACCURACY,
    CURVE_FILE,
    EVAL_S,
    GRIDS_DIR,
    LABELED_SET_FILE,
    METRICS_FILE,
    N_LABELED,
    QUERIES_FILE,
    QUERY_S,
    ROUND,
    TEST_KEYS,
    TRAIN_S,
)

# labels: the class index, or for multi-label the finding bits joined by "|" (maths.task)
QUERIES_HEADER = (ROUND, "pool_index", "score", "oracle_label", "true_label")
ANNOTATIONS_HEADER = (ROUND, "pool_index", "annotator", "label", "flagged")
METRICS_HEADER = (ROUND, N_LABELED, *TEST_KEYS, TRAIN_S, QUERY_S, EVAL_S)
TIMES = (TRAIN_S, QUERY_S, EVAL_S)


def _label_cell(label: np.ndarray) -> str | int:
    """A class index, or a row of finding bits as ``0|1|0`` ("" for unknown: -1)."""
    if np.ndim(label) == 0:
        return int(label) if label >= 0 else ""
    return "" if (label < 0).any() else "|".join(str(int(b)) for b in label)


def _fmt(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


class RunDirWriter(RunCallback):
    """Keeps the run directory's result files current after every round."""

    def __init__(self, grids: bool = True, max_grid_images: int = 64) -> None:
        positive("callbacks.run_dir", max_grid_images=max_grid_images)
        self.grids = grids
        self.max_grid_images = max_grid_images
        self.run_dir = Path(".")
        self.title = ""
        # Query grids render on one background thread, off the training path.
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="al_sim-plots")
        self._pending: list[Future[Path]] = []
        self._rounds: list[RoundResult] = []
        self._pool: LabelPool | None = None  # the labelled set, as of the last checkpoint
        self._dataset: ALDataset | None = None
        self._metric_keys: tuple[str, ...] | None = None  # the test metrics' columns, once known
        self._extra_columns: list[str] = []  # cost/* and agreement/* once an oracle logs them

    @property
    def queries_csv(self) -> Path:
        """Path of ``queries.csv``."""
        return self.run_dir / QUERIES_FILE

    @property
    def metrics_csv(self) -> Path:
        """Path of ``metrics.csv``."""
        return self.run_dir / METRICS_FILE

    def setup(self, run: RunInfo) -> None:
        self.run_dir, self.title = Path(run.run_dir), run.name
        self._start_files()
        if run.resume is not None:  # rewrite the rounds kept, dropping anything written later
            self._pool = run.resume.pool
            for record in run.resume.result.queries:
                self._append_queries(record)
            for round_result in run.resume.result.rounds:
                self._rounds.append(round_result)
                self._append_metrics(round_result)

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        self._dataset = dataset

    def _start_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.queries_csv.open("w", newline="") as f:
            csv.writer(f).writerow(QUERIES_HEADER)
        with self.metrics_csv.open("w", newline="") as f:
            csv.writer(f).writerow(METRICS_HEADER)
        self._metric_keys = None  # a task's own metrics extend the header at the first round
        self._extra_columns = []
        (self.run_dir / ANNOTATIONS_FILE).unlink(missing_ok=True)  # rewritten from the records

    def _append_annotations(self, record: QueryRecord) -> None:
        """Every annotator's answer to each image of ``record`` (oracle=panel), one per row."""
        if not record.annotations:
            return
        path = self.run_dir / ANNOTATIONS_FILE
        new = not path.exists()
        flagged = (record.flagged if record.flagged is not None
                   else np.zeros(len(record.indices), dtype=bool))
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(ANNOTATIONS_HEADER)
            for pos, idx in enumerate(record.indices):
                for name, answers in record.annotations.items():
                    if answers[pos] >= 0:
                        writer.writerow((record.round, int(idx), name, int(answers[pos]),
                                         int(bool(flagged[pos]))))

    def _append_queries(self, record: QueryRecord) -> None:
        self._append_annotations(record)
        with self.queries_csv.open("a", newline="") as f:
            writer = csv.writer(f)
            for idx, score, given, true in zip(record.indices, record.scores,
                                               record.oracle_labels, record.true_labels,
                                               strict=True):
                writer.writerow((record.round, int(idx), _fmt(float(score)), _label_cell(given),
                                 _label_cell(true)))

    def _header(self) -> tuple[str, ...]:
        return (ROUND, N_LABELED, *(self._metric_keys or TEST_KEYS), *TIMES,
                *self._extra_columns)

    def _metrics_row(self, result: RoundResult) -> list[int | str]:
        row: list[int | str] = [result.round, result.n_labeled]
        row += [_fmt(result.metrics.get(k, math.nan)) for k in self._metric_keys or TEST_KEYS]
        row += [_fmt(result.train_s), _fmt(result.query_s), _fmt(result.eval_s)]
        extra = {**result.costs, **result.agreement}
        return row + [_fmt(extra.get(k)) for k in self._extra_columns]

    def _append_metrics(self, result: RoundResult) -> None:
        """One more row. The contract's metrics come first, then a task's own
        (``test/auroc/<finding>``, known at the first round), the times, then cost/agreement
        keys as an oracle logs them; a new column rewrites the file whole."""
        grown = False
        if self._metric_keys is None:
            own = [k for k in result.metrics if k not in TEST_KEYS]
            self._metric_keys, grown = (*TEST_KEYS, *own), bool(own)
        new = [k for k in {**result.costs, **result.agreement} if k not in self._extra_columns]
        if new or grown:
            self._extra_columns += new
            rows = [self._metrics_row(r) for r in self._rounds if r is not result]
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(self._header())
            writer.writerows([*rows, self._metrics_row(result)])
            atomic_write(self.metrics_csv, text.getvalue())
            return
        with self.metrics_csv.open("a", newline="") as f:
            csv.writer(f).writerow(self._metrics_row(result))

    def on_query(self, record: QueryRecord, dataset: ALDataset) -> None:
        self._append_queries(record)
        if self.grids:
            self._pending.append(self._renderer.submit(self._grid, record, dataset))

    def on_round_end(self, result: RoundResult) -> None:
        self._rounds.append(result)
        self._append_metrics(result)

    def on_checkpoint(self, state: LoopState) -> None:
        self._pool = state.pool

    def on_run_end(self, result: ALResult) -> None:
        self.finish()

    def on_exception(self, exc: BaseException) -> None:
        self.finish()

    def on_close(self, status: str) -> None:
        if status == PAUSED:  # waiting for labels: the files show the rounds done so far
            self.finish()

    def finish(self) -> None:
        """Write ``labeled_set.csv`` and ``learning_curve.png`` from the rounds done so far."""
        for future in self._pending:  # wait for the grids still rendering
            future.result()
        self._pending = []
        if self._pool is not None and self._dataset is not None:
            self._labeled_set(self._pool, self._dataset)
        if self._rounds:
            learning_curve(
                [r.n_labeled for r in self._rounds],
                {"accuracy": [r.metrics[TEST_KEYS[0]] for r in self._rounds],
                 "macro-F1": [r.metrics[TEST_KEYS[1]] for r in self._rounds],
                 "balanced accuracy": [r.metrics[BALANCED_ACCURACY] for r in self._rounds]},
                self.run_dir / CURVE_FILE, title=self.title)

    def _labeled_set(self, pool: LabelPool, dataset: ALDataset) -> Path:
        path = self.run_dir / LABELED_SET_FILE
        ids = dataset.pool_ids
        labeled = pool.labeled_indices()
        rounds = pool.round_of(labeled)
        order = np.lexsort((labeled, rounds))  # by round, then pool index
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("pool_index", "id", "label", "class_name", "round"))
            for idx, label, round_ in zip(labeled[order], pool.labels_of(labeled[order]),
                                          rounds[order], strict=True):
                ident = ids[idx] if ids is not None else str(int(idx))
                writer.writerow((int(idx), ident, _label_cell(label),
                                 dataset.task.describe(label), int(round_)))
        return path

    def _grid(self, record: QueryRecord, dataset: ALDataset) -> Path:
        show = record.indices[: self.max_grid_images]
        images = [dataset.pool_x[int(i)].numpy() for i in show]  # views: cut before copied
        captions = []
        for idx, score, given in zip(show, record.scores, record.oracle_labels, strict=False):
            text = f"#{int(idx)} {dataset.task.describe(given)}"
            if not math.isnan(float(score)):
                text += f"\n{float(score):.3f}"
            captions.append(text)
        if record.round == 0:
            title = f"round 0: the initial set, {len(record.indices)} images (not queried)"
        else:
            title = f"round {record.round}: {len(record.indices)} images queried"
        title += "\ncaption: #pool index, label given"
        if not np.isnan(np.asarray(record.scores, dtype=np.float64)).all():
            title += ", strategy score"
        if len(record.indices) > len(show):
            title += f" (first {len(show)} shown)"
        path = self.run_dir / GRIDS_DIR / f"round_{record.round:02d}.png"
        return query_grid(images, captions, path, title=title)
