"""sqlite tracking URIs with a query part name the same store file everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from al_sim.config.schema import CompareConf
from al_sim.report.output import output_folder
from al_sim.report.reader import SweepRef
from al_sim.runtime.errors import TrackingError
from al_sim.tracking.reachability import check_writable_store


def test_the_store_check_names_the_file_without_the_query(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'gone' / 'mlflow.db'}?timeout=30"
    with pytest.raises(TrackingError, match="does not exist") as info:
        check_writable_store(uri)
    assert f"{tmp_path / 'gone' / 'mlflow.db'} " in str(info.value)
    assert "?timeout" not in str(info.value)
    check_writable_store(f"sqlite:///{tmp_path / 'mlflow.db'}?timeout=30")  # writable: no error


def test_the_report_finds_the_sweep_beside_a_store_named_with_a_query(tmp_path: Path) -> None:
    store, launch = tmp_path / "store", tmp_path / "elsewhere"
    (store / "multirun" / "s1").mkdir(parents=True)
    launch.mkdir()
    ref = SweepRef(experiment="al_sim", experiment_id="1", sweep_id="multirun/s1",
                   parent_run_id=None)
    folder = output_folder(CompareConf(), ref, f"sqlite:///{store / 'mlflow.db'}?timeout=30",
                           launch)
    assert folder == store / "multirun" / "s1" / "compare"
