"""Cluster helpers in-process: where a run ran, the hint for a server, a refused host name,
the lost-jobs record."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from al_sim.app.lost_jobs import JobRef, lost_jobs, report_lost, set_parent
from al_sim.tracking.contract import where_to_look
from al_sim.tracking.placement import placement_tags
from al_sim.tracking.reachability import refused_host


def test_placement_names_host_slurm_ids_and_log(monkeypatch, tmp_path: Path) -> None:
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_FOLDER"):
        monkeypatch.delenv(key, raising=False)
    handler = logging.FileHandler(tmp_path / "job.log")
    logging.getLogger().addHandler(handler)
    try:
        assert placement_tags() == {"al_sim.host": socket.gethostname(),
                                    "al_sim.log": str(tmp_path / "job.log")}
        monkeypatch.setenv("SLURM_JOB_ID", "57")
        monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "54")
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
        tags = placement_tags()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert tags["al_sim.slurm_job_id"] == "57" and tags["al_sim.slurm_array"] == "54_3"


def test_the_hint_for_a_server_is_its_own_page() -> None:
    hint = where_to_look("http://head:5000", "7", "abc")
    assert "view: open http://head:5000/#/experiments/7/runs/abc" in hint
    assert "mlflow ui" not in hint
    assert "mlflow ui --backend-store-uri sqlite:///x.db" in where_to_look("sqlite:///x.db", "7")


def test_a_refused_host_name_names_allowed_hosts() -> None:
    body = "API request failed with error code 403 != 200. Response body: 'Invalid Host header"
    error = refused_host("http://u:secret@head:5000", body + " - possible DNS rebinding'")
    assert error is not None and "--allowed-hosts head:5000" in str(error)
    assert "secret" not in str(error)
    assert refused_host("http://head:5000", "connection refused") is None


def test_a_lost_job_is_recorded_without_tracking(tmp_path: Path, capsys) -> None:
    set_parent(None, None)
    report_lost(tmp_path, JobRef(2, ("seed=1",), "seed=1"), "SLURM job 9_2 CANCELLED")
    line = capsys.readouterr().err.strip()
    assert line == "lost: job 2 [seed=1]: SLURM job 9_2 CANCELLED; no MLflow run yet"
    assert lost_jobs(tmp_path) == [(2, "seed=1", "SLURM job 9_2 CANCELLED")]
    assert JobRef(2, ("seed=1",), "seed=1").returned().return_value is None


@pytest.fixture(autouse=True)
def _no_parent():
    yield
    set_parent(None, None)
