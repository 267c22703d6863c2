"""An interrupted or failing ``al_sim.compare`` leaves no RUNNING summary run and no
traceback: a summary run is logged whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from al_sim.report.reader import RunReader, SummaryRun, SweepRef
from al_sim.runtime.interrupts import interrupt
from al_sim.tracking.store_template import build_empty_store
from tests.conftest import run_here

SUMMARY = SummaryRun("entropy (summary)", {"strategy": "entropy"}, {"n_seeds": "2"},
                     [("summary/test/accuracy/mean", step, 0.5) for step in (20, 30, 40)])


@pytest.fixture()
def sweep(tmp_path: Path) -> tuple[RunReader, SweepRef]:
    db = tmp_path / "mlflow.db"
    build_empty_store(db)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("study", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"al_sim.role": "sweep"}).info.run_id
    return RunReader(f"sqlite:///{db}"), SweepRef("study", exp, "multirun/x", parent)


def _statuses(reader: RunReader, ref: SweepRef) -> list[str]:
    return [r.info.status for r in reader.client.search_runs([ref.experiment_id])
            if r.info.run_id != ref.parent_run_id]


def test_an_interrupt_while_a_summary_run_is_logged_waits_for_it(
        sweep: tuple[RunReader, SweepRef], monkeypatch: pytest.MonkeyPatch) -> None:
    reader, ref = sweep
    log_batch = reader.client.log_batch

    def signalled(*args, **kwargs):  # Ctrl-C arrives while the first summary run is logged
        if kwargs.get("params"):
            monkeypatch.setattr(reader.client, "log_batch", log_batch)
            interrupt("Ctrl-C")
        return log_batch(*args, **kwargs)

    monkeypatch.setattr(reader.client, "log_batch", signalled)
    with pytest.raises(KeyboardInterrupt):
        reader.replace_summary_runs(ref, [SUMMARY, SUMMARY], {"strategy": "(sweep)"})
    assert _statuses(reader, ref) == ["FINISHED"]  # the first whole, the second not begun


def test_a_store_failing_midway_leaves_no_running_summary_run(
        sweep: tuple[RunReader, SweepRef], monkeypatch: pytest.MonkeyPatch) -> None:
    reader, ref = sweep
    log_batch = reader.client.log_batch

    def failing(run_id, metrics=(), **kwargs):
        if metrics:
            raise MlflowException("database is gone")
        return log_batch(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(reader.client, "log_batch", failing)
    with pytest.raises(Exception, match="database is gone"):
        reader.replace_summary_runs(ref, [SUMMARY], {"strategy": "(sweep)"})
    assert _statuses(reader, ref) == []  # the half-logged run was deleted


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("SIGTERM")  # as the SIGTERM handler raises it

    monkeypatch.setattr(RunReader, "__init__", stopped)
    proc = run_here([], tmp_path, module="al_sim.compare")
    assert proc.returncode == 143
    assert proc.stderr.strip() == ("interrupted (SIGTERM): the report is not finished; run the "
                                   "same command again")
