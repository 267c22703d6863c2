"""Sweeps beyond one machine, on loopback: Ray and submitit launchers, an MLflow server on
PostgreSQL (``python -m al_sim.server``), a killed worker, a server restart mid-run.

One server and one Ray head serve the whole module; both are started here in temporary
directories on 127.0.0.1 and stopped after, whatever happens.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from al_sim.tracking.contract import CLIENT_TOKEN_ENV
from al_sim.tracking.mlflow_server import STATE_FILE, free_port
from tests import fork_server
from tests.conftest import FAST_CLI, QUICK_POLL, REPO, run_cli, start_cli
from tests.ray_cluster import RayNode

pytestmark = pytest.mark.slow
for _tool in ("initdb", "pg_ctl", "postgres"):
    if shutil.which(_tool) is None:
        pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=f"PostgreSQL: no {_tool}")]
pytest.importorskip("psycopg2", reason='pip install -e ".[server]"')
pytest.importorskip("ray", reason='pip install -e ".[ray]"')
pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='pip install -e ".[ray]"')
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')

from mlflow.tracking import MlflowClient  # noqa: E402

GRID = ["strategy=random,entropy", "seed=0", "budget=tiny",
        *[a for a in FAST_CLI if a != "trainer.num_threads=1"]]
METRICS = ("test/accuracy", "test/f1_macro", "test/balanced_accuracy", "test/auroc",
           "test/loss", "round", "n_labeled")
STEPS = [20, 30, 40]
START_S = 300  # a loaded 2-core machine takes ~1 min to start mlflow server


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not start within {START_S} s")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        try:
            text = Path(f"/proc/{todo.pop()}/task").glob("*/children")
            kids = [int(k) for f in text for k in f.read_text().split()]
        except OSError:
            continue
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM ``proc``, then SIGKILL it and whatever it started that is still there."""
    below = descendants(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Server:
    """``python -m al_sim.server`` in a temporary directory, restartable on the same port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.db_port = root, free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "al_sim.server", "--dir", str(self.root / "srv"),
             "--port", str(self.port), "--db-port", str(self.db_port), "--workers", "1"],
            cwd=self.root, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=(self.root / "server.log").open("a"), stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc, "mlflow server")
        # every request needs the server's token: the runs, the sweeps and MlflowClient here
        # read it from the environment, as a user's shell has it
        os.environ[CLIENT_TOKEN_ENV] = json.loads((self.root / "srv" / STATE_FILE).read_text(
            ))["token"]

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        data = self.root / "srv" / "pgdata"
        if (data / "postmaster.pid").exists():  # the server was killed before it stopped it
            subprocess.run(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                           user="postgres" if os.geteuid() == 0 else None,
                           capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp root: as root, PostgreSQL runs as another user that must
    # reach its data dir. Ray's socket paths must also stay short.
    root = Path(tempfile.mkdtemp(prefix="al_cluster_"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    srv = Server(workdir)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        os.environ.pop(CLIENT_TOKEN_ENV, None)
        assert not (workdir / "srv" / "pgdata" / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def ray_head(workdir: Path) -> Iterator[str]:
    head = RayNode(workdir, "ray", None, {**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_port(head.port, head.proc, "ray head")
        yield f"127.0.0.1:{head.port}"
    finally:
        head.stop()


def sweep(args: list[str], cwd: Path, ray_address: str | None = None,
          wait: bool = True) -> subprocess.CompletedProcess[str] | fork_server.Process:
    env = {"RAY_ADDRESS": ray_address} if ray_address else {}
    if wait:
        return run_cli(["-m", *args], cwd, timeout=600, env=env)
    return start_cli(["-m", *args], cwd, env)


def check_sweep(uri: str, experiment: str) -> tuple[MlflowClient, list]:
    """2 FINISHED children under one parent, each metric logged once at each step."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("al_sim.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("al_sim.role") not in ("sweep", "summary")]
    summaries = [r for r in runs if r.data.tags.get("al_sim.role") == "summary"]
    assert sorted(r.data.tags["strategy"] for r in summaries) == ["entropy", "random"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2, [r.info.run_name for r in children]
    assert sorted(r.info.run_name for r in children) == sorted(
        f"{s}-synthetic-seed0" for s in ("random", "entropy"))
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for name in METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert sorted(steps) == STEPS, (run.info.run_name, name, steps)
    return client, children


def curves(client: MlflowClient, runs: list) -> dict[str, list[tuple[int, float]]]:
    return {f"{r.info.run_name} {name}": sorted(
        (m.step, m.value) for m in client.get_metric_history(r.info.run_id, name))
        for r in runs for name in METRICS}


@pytest.fixture(scope="module")
def ray_sweep(server: Server, ray_head: str, workdir: Path) -> dict:
    """The Ray sweep the others are held against: 2 strategies through the Ray launcher (one
    job per node CPU), every job process on the node SIGKILLed once a job is past its first
    round, then the same command run again. Its curves are held against an uninterrupted
    sweep (submitit's) below."""
    cwd = workdir / "ray_launch"
    cwd.mkdir()
    args = ["hydra/launcher=al_ray", *GRID, f"tracking.uri={server.uri}",
            "tracking.experiment=ray", f"hydra.sweep.dir={cwd / 'sweep'}"]
    first = sweep(args, cwd, ray_head, wait=False)
    killed, deadline = [], time.monotonic() + 300
    while not killed and time.monotonic() < deadline and first.poll() is None:
        if any((cwd / "sweep").glob("*/checkpoint.pt")):  # a job is past its first round:
            # kill every job process on the node
            workers = [p for p in descendants(ray_head_pid(workdir)) if "_run_job" in cmdline(p)]
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            killed = workers
        time.sleep(0.05)
    first.communicate(timeout=300)

    again = sweep(args, cwd, ray_head)
    assert again.returncode == 0, again.stderr[-3000:]
    client, children = check_sweep(server.uri, "ray")  # one parent, none twice
    return {"cwd": cwd, "curves": curves(client, children), "killed": killed,
            "first_returncode": first.returncode}


def test_a_killed_ray_worker_is_finished_by_rerunning_the_sweep(ray_sweep: dict) -> None:
    """The rerun's runs are checked in ``ray_sweep``; its curves equal an uninterrupted
    sweep's in ``test_submitit_local_sweep_gives_the_same_runs``."""
    assert ray_sweep["killed"], "no job could be killed mid-run"
    assert ray_sweep["first_returncode"] != 0, "the sweep finished although its jobs were killed"


def test_ray_sweep_into_the_postgres_server_and_compare_reads_it(ray_sweep: dict,
                                                                 server: Server) -> None:
    cwd = ray_sweep["cwd"]
    client, children = check_sweep(server.uri, "ray")
    # Artifacts went through the server, not onto the launch dir's disk.
    assert not (cwd / "mlartifacts").exists()
    run = children[0]
    got = Path(client.download_artifacts(run.info.run_id, "metrics.csv", str(cwd)))
    job_dirs = [p for p in (cwd / "sweep").iterdir() if (p / "metrics.csv").exists()]
    assert got.read_text() in {(d / "metrics.csv").read_text() for d in job_dirs}
    report = run_cli([f"tracking.uri={server.uri}", "tracking.experiment=ray"], cwd,
                     module="al_sim.compare", timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    with (cwd / "sweep" / "compare" / "summary.csv").open() as f:
        assert sorted(r["strategy"] for r in csv.DictReader(f)) == ["entropy", "random"]
    parent = [r for r in client.search_runs([run.info.experiment_id])
              if r.data.tags.get("al_sim.role") == "sweep"][0]
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert "compare/summary.csv" in names


def test_submitit_local_sweep_gives_the_same_runs(ray_sweep: dict, server: Server,
                                                  workdir: Path) -> None:
    cwd = workdir / "submitit_launch"
    cwd.mkdir()
    proc = sweep(["hydra/launcher=al_submitit_local", *GRID, QUICK_POLL,
                  f"tracking.uri={server.uri}", "tracking.experiment=submitit",
                  f"hydra.sweep.dir={cwd / 'sweep'}"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, children = check_sweep(server.uri, "submitit")
    # same config, same curves: uninterrupted here, killed and resumed on Ray
    assert curves(client, children) == ray_sweep["curves"]


def ray_head_pid(workdir: Path) -> int:
    """The pid of this module's ``ray start --block`` process."""
    for pid in descendants(os.getpid()):
        line = cmdline(pid)
        if "--head" in line and str(workdir / "ray") in line:
            return pid
    raise AssertionError("ray head not found")


def test_the_database_dying_and_the_server_restarting_mid_run_lose_no_metric(
        ray_sweep: dict, server: Server, workdir: Path) -> None:
    """PostgreSQL killed under the server (started again by it), then the server stopped and
    started: the run retries through both and logs every metric once."""
    cwd = workdir / "restart_launch"
    run_dir = cwd / "run"
    cwd.mkdir()
    args = [*FAST_CLI, "budget=tiny", "budget.rounds=5", "strategy=entropy", "seed=0",
            f"tracking.uri={server.uri}", "tracking.experiment=restart",
            "tracking.retry_timeout_s=600", f"hydra.run.dir={run_dir}"]
    proc = start_cli(args, cwd)
    checkpoint = run_dir / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists():  # round 0 is in the store
                break
            time.sleep(0.05)
        # first its database dies under the server (kill -9): the server starts it again
        first = checkpoint.stat().st_mtime_ns
        pid_file = workdir / "srv" / "pgdata" / "postmaster.pid"
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.stat().st_mtime_ns != first:  # a round logged since
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the server could be stopped"
        server.stop()
        time.sleep(3)
        server.start()
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    client = MlflowClient(tracking_uri=server.uri)
    exp = client.get_experiment_by_name("restart")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    for name in METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == [20, 30, 40, 50, 60, 70], (name, steps)
    assert "final/aulc" in run.data.metrics
    assert "PostgreSQL is back" in (workdir / "server.log").read_text()


def test_runs_started_together_on_a_new_postgres_database(tmp_path: Path) -> None:
    """Three plain runs at once, straight on a fresh PostgreSQL database (no MLflow server):
    the schema is built once under an advisory lock, every run lands FINISHED, and the
    database password is in no output, param or config file."""
    from al_sim.tracking.mlflow_server import _default_db_user
    from al_sim.tracking.postgres import (
        create_database,
        init_cluster,
        start_postgres,
        stop_postgres,
    )

    root = Path(tempfile.mkdtemp(prefix="al_pg_"))  # PostgreSQL's user must reach it
    root.chmod(0o755)
    user, data, secret = _default_db_user(), root / "pgdata", "pw-9f3k2"
    try:
        init_cluster(data, secret, user)
        port = free_port()
        start_postgres(data, port, user, root / "pg.log")
        uri = create_database(port, secret)
        procs = [start_cli(["budget=tiny", f"seed={seed}", *FAST_CLI, f"tracking.uri={uri}",
                            f"hydra.run.dir={tmp_path / f'run{seed}'}"], tmp_path)
                 for seed in range(3)]
        outputs = [proc.communicate(timeout=300) for proc in procs]
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err[-2000:]
            assert secret not in out + err
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])
        assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert all(secret not in v for r in runs for v in r.data.params.values())
        assert all(secret not in (tmp_path / f"run{s}" / "config.yaml").read_text()
                   for s in range(3))
    finally:
        stop_postgres(data, user)
        shutil.rmtree(root, ignore_errors=True)


def test_the_server_answers_only_requests_with_its_token(server: Server, workdir: Path) -> None:
    """Without the token: 401 from the server, one error line from a run, no MLflow run."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=5",
                               timeout=30)
    assert refused.value.code == 401
    cwd = workdir / "no_token"
    cwd.mkdir()
    proc = run_cli([*FAST_CLI, "budget=tiny", f"tracking.uri={server.uri}",
                    "tracking.experiment=no_token"], cwd, env={CLIENT_TOKEN_ENV: ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "asks for a token (401" in errors[0], proc.stderr[-2000:]
    assert MlflowClient(tracking_uri=server.uri).get_experiment_by_name("no_token") is None
    # a browser's link: the cookie is set, and the server's log keeps no token
    import http.client

    token = os.environ[CLIENT_TOKEN_ENV]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", f"/?token={token}")
    answer = conn.getresponse()
    assert answer.status == 303 and token in (answer.getheader("set-cookie") or "")
    conn.close()
    time.sleep(0.5)
    log = (workdir / "server.log").read_text()  # the access log: no token (the banner has it)
    assert '"GET /?token=*** HTTP' in log and f"GET /?token={token}" not in log
