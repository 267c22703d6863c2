"""The progress bar says what a round is doing and shows the primary metric (issues 27, 22)."""

from __future__ import annotations

import re
from pathlib import Path

from al_sim.core.events import FitReport, RoundResult, RunInfo
from al_sim.data.synthetic_chest import load_synthetic_chest
from al_sim.sinks.progress import ProgressPrinter, stage_text
from al_sim.strategies.uncertainty import Entropy
from tests.test_loop import run


def _printer(tmp_path: Path) -> ProgressPrinter:
    printer = ProgressPrinter(bar=True, refresh_s=0)  # every step redrawn: no clock in the test
    printer.setup(RunInfo(run_dir=tmp_path, launch_dir=tmp_path, name="t", tags={}, params={}))
    return printer


def test_a_round_shows_its_stage_and_training_steps(tiny_dataset, fast_trainer, tmp_path,
                                                    capsys) -> None:
    printer = _printer(tmp_path)
    run(tiny_dataset, fast_trainer, Entropy(), callbacks=[printer])
    bar = capsys.readouterr().err
    for shown in ("round 0: training 1/", "round 1: querying", "round 1: evaluating",
                  "round 2: training 4/4 steps"):
        assert shown in bar, f"{shown!r} not in {bar[-1500:]!r}"
    assert "bal_acc=" in bar  # single-label: the primary metric, balanced accuracy
    assert not re.search(r"(?<!bal_)acc=", bar)


def test_a_multilabel_bar_shows_macro_auroc_not_accuracy(tmp_path, capsys) -> None:
    printer = _printer(tmp_path)
    printer.on_run_start(load_synthetic_chest(n_pool=60, n_test=30), 3)
    printer.on_round_end(RoundResult(
        round=0, n_labeled=20, metrics={"test/accuracy": 0.951, "test/auroc": 0.712},
        train_s=0, query_s=0, fit=FitReport(epochs=1, steps=1, train_loss=0.0)))
    printer.on_progress(1, "training", 3, 10)
    printer.close()
    bar = capsys.readouterr().err
    assert "round 1: training 3/10 steps, labelled=20 auroc=0.712" in bar
    assert "0.951" not in bar


def test_stage_text() -> None:
    assert stage_text(2, "querying", 0, 0) == "round 2: querying"
    assert stage_text(0, "training", 40, 120) == "round 0: training 40/120 steps"
