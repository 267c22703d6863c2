"""The run's log file (Hydra's ``<job>.log`` in the run dir): how the run started, each
round's result and how it ended, written there only (the console has its own output)."""

from __future__ import annotations

import logging

from al_sim.core.events import (
    FAILED,
    FINISHED,
    PAUSED,
    ALResult,
    RoundResult,
    RunCallback,
    RunInfo,
)
from al_sim.runtime.log_file import to_log_file
from al_sim.tracking.contract import ACCURACY


class RunLogWriter(RunCallback):
    """Writes a line per event of the run to its log file."""

    def setup(self, run: RunInfo) -> None:
        how = "started" if run.resume is None else \
            f"resumed after {len(run.resume.result.rounds)} round(s)"
        to_log_file(f"{run.name}: {how} in {run.run_dir}")

    def on_round_end(self, result: RoundResult) -> None:
        to_log_file(f"round {result.round}: {result.n_labeled} labelled, accuracy "
                    f"{result.metrics[ACCURACY]:.4f}, train {result.train_s:.1f} s, "
                    f"query {result.query_s:.2f} s")

    def on_run_end(self, result: ALResult) -> None:
        to_log_file(f"finished: AULC {result.aulc:.4f}, {result.n_annotated} images annotated"
                    + (f", stopped early: {result.stopped_by}" if result.stopped_by else ""))

    def on_close(self, status: str) -> None:
        if status == PAUSED:
            to_log_file("paused: waiting for an expert's labels (labels/ in the run dir)")
        elif status not in (FINISHED, FAILED):  # a failure's error line is logged by run.py
            to_log_file(f"ended {status}: the same command resumes it", logging.WARNING)
