"""Cluster helpers in-process: where a run ran, the hint for a server, a refused host name,
the lost-jobs record, a Ray head that is not there."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from al_sim.app.lost_jobs import JobRef, lost_jobs, report_lost
from al_sim.app.sweep_parent import close_parent
from al_sim.tracking.contract import where_to_look
from al_sim.tracking.mlflow_server import free_port
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
    close_parent()
    report_lost(tmp_path, JobRef(2, ("seed=1",), "seed=1"), "SLURM job 9_2 CANCELLED")
    line = capsys.readouterr().err.strip()
    assert line == "lost: job 2 [seed=1]: SLURM job 9_2 CANCELLED; no MLflow run yet"
    assert lost_jobs(tmp_path) == [(2, "seed=1", "SLURM job 9_2 CANCELLED")]
    assert JobRef(2, ("seed=1",), "seed=1").returned().return_value is None


@pytest.fixture(autouse=True)
def _no_parent():
    yield
    close_parent()


def test_a_ray_head_that_does_not_answer_is_one_cluster_error() -> None:
    """ray.init would wait minutes on a host:port nobody listens on; we say so at once."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='pip install -e ".[ray]"')
    from al_sim.app.launchers.ray_tasks import check_ray_address
    from al_sim.runtime.errors import ClusterError

    port = free_port()
    with pytest.raises(ClusterError, match=rf"the Ray cluster at 127.0.0.1:{port} cannot be "
                                           r"reached in 2 s .*set RAY_ADDRESS=<head host>"):
        check_ray_address(f"127.0.0.1:{port}", 2.0)
    with socket.socket() as head:  # a head that listens passes
        head.bind(("127.0.0.1", 0))
        head.listen()
        check_ray_address(f"127.0.0.1:{head.getsockname()[1]}", 2.0)
    for left_to_ray in ("auto", "local", None, f"ray://127.0.0.1:{port}"):
        check_ray_address(left_to_ray, 2.0)


def test_a_refused_connection_is_not_told_to_check_a_path() -> None:
    from al_sim.run import error_line

    line = error_line(ConnectionRefusedError(111, "Connection refused"))
    assert line is not None and "did not answer" in line and "hydra.run.dir" not in line
    assert "hydra.run.dir" in (error_line(PermissionError(13, "Permission denied", "/x")) or "")


@pytest.mark.slow
def test_a_ray_sweep_without_its_cluster_is_one_error_line_and_a_failed_parent(
        tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='pip install -e ".[ray]"')
    from mlflow.tracking import MlflowClient

    from tests.conftest import FAST_CLI, all_experiments, run_cli

    proc = run_cli(["-m", "seed=0,1", "hydra/launcher=al_ray", "budget=tiny", *FAST_CLI],
                   tmp_path, env={"RAY_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "cannot be reached" in line and "Traceback" not in proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [r.info.status for r in client.search_runs(all_experiments(client))] == ["FAILED"]


@pytest.mark.parametrize("timeout_min", [0, -5, "soon"])
def test_a_time_limit_that_stops_every_job_at_its_start_is_refused(timeout_min: object) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')
    from al_sim.app.launchers.submitit_jobs import AlLocalLauncher, AlSlurmLauncher
    from al_sim.runtime.errors import ConfigError

    for launcher in (AlLocalLauncher, AlSlurmLauncher):
        with pytest.raises(ConfigError, match=rf"hydra.launcher.timeout_min={timeout_min} is "
                                              "not a time limit"):
            launcher(submitit_folder="x", timeout_min=timeout_min)._check_time_limit()
    AlLocalLauncher(submitit_folder="x", timeout_min=1)._check_time_limit()


def test_a_lost_job_says_why_its_run_was_interrupted(tmp_path: Path, capsys) -> None:
    """The line a job writes when its run is interrupted (out of requeues, say) is read back
    from its stderr log into the launcher's lost-job line; no log or no such line adds nothing."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')
    from types import SimpleNamespace

    from al_sim.app.launchers.submitit_jobs import AlSlurmLauncher, on_node
    from al_sim.runtime.oom_kills import OomWatch

    def out_of_requeues() -> None:
        raise KeyboardInterrupt("time limit or preemption, not requeued: timed-out too many times")

    with pytest.raises(SystemExit):
        on_node(out_of_requeues)
    log = tmp_path / "1_0_log.err"
    log.write_text("x" * 70000 + "\nsubmitit WARNING - Caught signal SIGUSR2\n"
                   + capsys.readouterr().err + "srun: error: task 0: Exited with exit code 143\n")
    launcher = AlSlurmLauncher(submitit_folder=str(tmp_path))
    launcher._oom = OomWatch(tmp_path / "no_vmstat", cgroup=tmp_path / "no_cgroup")
    job = SimpleNamespace(job_id="1_0", state="FAILED", paths=SimpleNamespace(stderr=log))
    assert launcher._no_result(job) == (
        "slurm job 1_0 ended with no result (FAILED); in the job: time limit or preemption, "
        "not requeued: timed-out too many times")
    log.write_text("Traceback (most recent call last):\n")
    assert launcher._no_result(job) == "slurm job 1_0 ended with no result (FAILED)"
    log.unlink()
    assert launcher._no_result(job) == "slurm job 1_0 ended with no result (FAILED)"


@pytest.mark.parametrize(("argv", "said"), [
    (["--port", "99999"], "argument --port: 99999 is not a port number (1-65535)"),
    (["--db-port", "0"], "argument --db-port: 0 is not a port number (1-65535)"),
    (["--workers", "0"], "argument --workers: 0 is not a whole number > 0")])
def test_the_servers_numbers_are_checked_before_anything_starts(argv: list[str], said: str,
                                                                capsys) -> None:
    from al_sim.tracking.mlflow_server import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_a_server_dir_that_cannot_be_made_is_one_error_line(tmp_path: Path, capsys) -> None:
    from al_sim.tracking.mlflow_server import main

    (tmp_path / "a_file").write_text("x")
    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own: this worker's back
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["--dir", str(tmp_path / "a_file" / "srv"), "--port", str(free_port())])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: Not a directory: {tmp_path / 'a_file' / 'srv'}; check that the path exists "
        "and is writable, or give --dir a folder elsewhere"]


def _fake_scancel(folder: Path, body: str) -> None:
    """An ``scancel`` on PATH that runs ``body`` (sh), standing in for a slurmctld we cannot
    make hang here; the real one is driven by tests/test_cluster_real.py."""
    script = folder / "scancel"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def test_cancelling_slurm_jobs_is_one_bounded_scancel(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    """An interrupted SLURM launcher cancels its jobs with one scancel that may take at most
    connect_timeout_s: with slurmctld down, submitit's one unbounded scancel per job held the
    launcher for SLURM's message timeouts times the jobs."""
    import time

    pytest.importorskip("submitit", reason='pip install -e ".[slurm]"')
    from al_sim.app.launchers.submitit_jobs import scancel

    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    _fake_scancel(tmp_path, f'echo "$@" >> {tmp_path / "calls"}')
    assert scancel(["41_0", "41_1", "42"], 5.0)
    assert (tmp_path / "calls").read_text() == "41_0 41_1 42\n"  # one call for all

    _fake_scancel(tmp_path, "exec sleep 30")  # slurmctld down: scancel waits
    start = time.monotonic()
    assert not scancel(["41_0", "41_1"], 1.0)
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "note: scancel 41_0 41_1 failed (no answer in 1 s" in err
    assert "squeue -j 41_0,41_1" in err


@pytest.mark.parametrize("damage", ["{bad", "[1]", '{"password": 5, "db_port": "x"}'])
def test_a_damaged_server_state_is_refused_only_where_it_guards_a_database(
        tmp_path: Path, damage: str) -> None:
    from al_sim.tracking.mlflow_server import STATE_FILE, ServerError, _state

    (tmp_path / STATE_FILE).write_text(damage)
    fresh = _state(tmp_path, 5433)  # no database yet: nothing to lose, a new state
    assert isinstance(fresh["password"], str) and fresh["db_port"] == 5433
    assert _state(tmp_path, None) == fresh  # and kept
    assert oct((tmp_path / STATE_FILE).stat().st_mode & 0o777) == "0o600"
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "PG_VERSION").write_text("15\n")
    (tmp_path / STATE_FILE).write_text(damage)
    with pytest.raises(ServerError, match=rf"{tmp_path / STATE_FILE} is damaged .*pgdata.*"
                                          r"restore it from a backup, or give --dir a new"):
        _state(tmp_path, None)
