"""A run's sinks close however it ends, and one that cannot close is never silent."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.core.events import CallbackList, RunCallback, RunInfo
from al_sim.runtime.errors import DataError
from al_sim.sinks.mlflow_writer import MLflowWriter


class CannotClose(RunCallback):
    key = "broken"

    def on_close(self, status: str) -> None:
        raise OSError(28, "No space left on device")


def test_a_sink_failing_on_close_of_a_failing_run_is_said_and_tagged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}?timeout=30"
    writer = MLflowWriter({"uri": uri, "experiment": "close"})
    sinks = CallbackList([CannotClose(), writer])
    sinks.fire("setup", RunInfo(run_dir=tmp_path, launch_dir=tmp_path, name="r", tags={},
                                params={}))
    sinks.close(DataError("pool.npz is truncated"))

    err = capsys.readouterr().err
    assert "warning: CannotClose (broken) could not close: OSError" in err
    run = MlflowClient(tracking_uri=uri).get_run(writer.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith(
        "DataError: pool.npz is truncated; CannotClose (broken)")
    assert "No space left on device" in run.data.tags["error"]


def test_a_sink_failing_on_close_of_a_finished_run_fails_it(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No space left"):
        CallbackList([CannotClose()]).close(None)
