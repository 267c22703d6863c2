"""Hardening (issue 15): hanging tracking servers, SIGTERM, orphan runs of a killed attempt."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.runtime.errors import TrackingError
from al_sim.tracking.mlflow_server import free_port
from al_sim.tracking.reachability import check_reachable
from al_sim.tracking.store import call_with_retries
from tests.conftest import FAST_CLI, assert_refused, run_cli
from tests.test_resume import ARGS, start_and_stop_after


@pytest.fixture()
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections (the kernel does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_reachability_check_is_bounded_by_its_timeout(silent_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(TrackingError, match="did not answer within 1 s"):
        check_reachable(silent_server, timeout=1.0)
    assert time.monotonic() - start < 30  # bounded (1 s asked; a wide margin for a busy machine)


def test_a_database_server_is_checked_with_one_bounded_connection() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(TrackingError) as refused:
        check_reachable(f"postgresql+psycopg2://al:s3cret@127.0.0.1:{port}/mlflow", timeout=1.0)
    assert f"127.0.0.1:{port}" in str(refused.value) and "s3cret" not in str(refused.value)
    with socket.create_server(("127.0.0.1", 0)) as listening:  # takes connections: no error
        check_reachable(f"mysql+pymysql://u@127.0.0.1:{listening.getsockname()[1]}/db", 1.0)
    check_reachable("postgresql:///mlflow?host=/run/postgresql")  # a local socket: the driver's


def test_a_missing_database_driver_is_named_with_the_uri_that_works() -> None:
    def connect() -> None:
        raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")

    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the [server] extra installs psycopg2
    with pytest.raises(TrackingError, match=r"needs the Python module 'psycopg'.*"
                                            r"postgresql\+psycopg2://") as missing:
        call_with_retries("store set-up", connect, "postgresql://al:s3cret@db.example/mlflow")
    assert "s3cret" not in str(missing.value)


def test_mlflows_file_store_is_answered_with_the_database_store_to_use(tmp_path: Path) -> None:
    """MLflow refuses its file store by default now, with a paragraph: the line keeps its first
    sentence and names the store that works, not 'check that the server is up'."""
    from mlflow.exceptions import MlflowException

    def open_file_store() -> None:
        raise MlflowException("The filesystem tracking backend (e.g., './mlruns') is in "
                              "maintenance mode and will not receive further updates. Please "
                              "migrate to a database backend (e.g., 'sqlite:///mlflow.db') to "
                              "access the latest MLflow features. See https://mlflow.org/docs.")

    with pytest.raises(TrackingError) as refused:
        call_with_retries("store set-up", open_file_store, (tmp_path / "mlruns").as_uri(), 0)
    line = str(refused.value)
    assert "will not receive further updates;" in line and "Please migrate" not in line
    assert "tracking.uri=sqlite:///<dir>/mlflow.db" in line and "server is up" not in line


@pytest.mark.slow
@pytest.mark.parametrize("module", ["al_sim.run", "al_sim.compare"])
def test_a_server_that_never_answers_fails_fast(module: str, silent_server: str,
                                                tmp_path: Path) -> None:
    # no wait for a restarting server (tracking.connect_wait_s, 30 s by default)
    args = [f"tracking.uri={silent_server}", "tracking.http_timeout=2",
            "tracking.connect_wait_s=0"]
    if module == "al_sim.run":
        args += ["budget=tiny", *FAST_CLI, f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli(args, tmp_path, module=module, timeout=120)
    assert_refused(proc, tmp_path, [silent_server, "did not answer", "tracking.uri"])


@pytest.mark.slow
def test_sigterm_marks_the_run_killed_and_it_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, f"hydra.run.dir={run_dir}"]
    proc = start_and_stop_after(args, tmp_path, run_dir, rounds=1, sig=signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("al_sim")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    [resumed] = client.search_runs([exp.experiment_id])
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "test/accuracy"))
    assert steps == [20, 30, 40, 50, 60, 70, 80]


@pytest.mark.slow
def test_a_rerun_after_a_kill_in_round_0_leaves_no_orphan_run(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.create_experiment("al_sim", (tmp_path / "mlartifacts").as_uri())
    orphan = client.create_run(exp_id, run_name="killed in round 0").info.run_id
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".mlflow_run_id").write_text(orphan)  # what the killed attempt left behind
    proc = run_cli(["budget=tiny", *FAST_CLI, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = client.search_runs([exp_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].info.run_id != orphan
    # where the results went: the run dir, the MLflow run, the UI page in its training view
    assert f"results: {run_dir.resolve()}" in proc.stderr
    assert f"MLflow run {runs[0].info.run_id} in sqlite:///" in proc.stderr
    assert f"/runs/{runs[0].info.run_id}?workflowType=machine_learning" in proc.stderr


@pytest.mark.slow
def test_a_damaged_run_id_file_is_no_orphan_and_no_traceback(tmp_path: Path) -> None:
    """A ``.mlflow_run_id`` cut short or overwritten (here: not even text) names no run."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".mlflow_run_id").write_bytes(b"\x00\xff\xfe")
    proc = run_cli(["budget=tiny", *FAST_CLI, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])
    assert run.info.status == "FINISHED"
    assert (run_dir / ".mlflow_run_id").read_text() == f"{run.info.run_id}\n"


@pytest.mark.slow
def test_a_sweep_ends_saying_where_its_results_went(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(["-m", "seed=0", "budget=tiny", *FAST_CLI,
                    f"hydra.sweep.dir={sweep_dir}"], tmp_path, process=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sweep results: {sweep_dir.resolve()}" in proc.stderr
    assert "/runs?workflowType=machine_learning" in proc.stderr
    assert f"next: python -m al_sim.compare sweep_id={sweep_dir}" in proc.stderr


@pytest.mark.slow
def test_resume_with_tracking_switched_on_backfills_the_earlier_rounds(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, f"hydra.run.dir={run_dir}"]
    proc = start_and_stop_after([*args, "tracking.enabled=false"], tmp_path, run_dir, rounds=2,
                                sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "test/accuracy"))
    assert steps == [20, 30, 40, 50, 60, 70, 80]  # none missing, none twice


def _read_only_mount_works(folder: Path) -> bool:
    """Whether this root process may bind-mount ``folder`` read-only in a private namespace."""
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount --bind -o ro '{folder}' '{folder}' && ! touch '{folder}/x'"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0 and not (folder / "x").exists()


@pytest.mark.slow
def test_a_read_only_launch_dir_fails_fast_with_the_store_named(tmp_path: Path) -> None:
    launch = tmp_path / "launch"
    launch.mkdir()
    args = [sys.executable, "-m", "al_sim.run", "budget=tiny", *FAST_CLI,
            f"hydra.run.dir={tmp_path / 'run'}"]
    if os.geteuid() == 0:  # root writes through permission bits: make the folder truly read-only
        if not shutil.which("unshare") or not _read_only_mount_works(launch):
            pytest.skip("root, and no private read-only bind mount (unshare -m) here")
        args = ["unshare", "-m", "sh", "-c",
                f"mount --bind -o ro '{launch}' '{launch}' && cd '{launch}' && exec \"$@\"",
                "sh", *args]
    else:
        launch.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    try:
        proc = subprocess.run(args, cwd=launch, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    finally:
        launch.chmod(0o755)
    assert_refused(proc, launch, ["mlflow.db", "read-only", "tracking.uri"])
