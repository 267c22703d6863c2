"""Sweeps on real cluster software started here: a single-node SLURM with accounting
(``tests/slurm_cluster.py``) and a two-node Ray cluster on loopback, into ``python -m
al_sim.server`` on PostgreSQL. A lost job (``scancel`` of an array task, ``kill -9`` of the
second Ray node's raylet) never loses the sweep; re-running resumes only it.

Select with ``-m cluster``; skipped where the packages are missing (``.ci/run`` installs
them with apt when it can).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from al_sim.app.launchers.orphans import submitted_jobs
from tests.conftest import FAST_CLI, REPO
from tests.slurm_cluster import SlurmCluster, missing

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
for _tool in ("initdb", "pg_ctl", "postgres"):
    if shutil.which(_tool) is None:
        pytestmark.append(pytest.mark.skip(reason=f"PostgreSQL: no {_tool}"))
pytest.importorskip("psycopg2", reason='pip install -e ".[server]"')
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')

from mlflow.tracking import MlflowClient  # noqa: E402

from tests.ray_cluster import RayNode, two_nodes  # noqa: E402
from tests.test_cluster import Server  # noqa: E402

GRID = ["strategy=random,entropy", "seed=0,1", "budget=tiny", "budget.rounds=4",
        *[a for a in FAST_CLI if a != "trainer.num_threads=1"]]
STEPS = [20, 30, 40, 50, 60]
# The time-limit tests' one job (their own rounds, steps and seeds): GRID less its sweep
ONE_JOB = [a for a in GRID if not a.startswith(("strategy=", "seed=")) and a not in (
    "budget.rounds=4", "trainer.min_steps=4")]
# Round 0 of a launch with ENDLESS_ROUND_0 in its environment trains until it is stopped.
ROUND_0_STEPS = "AL_SIM_TEST_ROUND_0_STEPS"
ROUND_0 = f"trainer.min_steps=${{oc.env:{ROUND_0_STEPS},4}}"
ENDLESS_ROUND_0 = {ROUND_0_STEPS: str(10**12)}
WAIT_S = 600


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="al_real_"))  # short (Ray sockets), reachable by
    path.chmod(0o755)  # PostgreSQL's user when root
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[Server]:
    srv = Server(root)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def slurm(root: Path) -> Iterator[SlurmCluster]:
    if (tool := missing()) is not None:
        pytest.skip(f"SLURM: no {tool} (apt-get install slurm-wlm munge slurmdbd mariadb-server)")
    (root / "slurm").mkdir()
    cluster = SlurmCluster(root / "slurm")
    started = time.monotonic()
    try:
        cluster.start()
        print(f"SLURM cluster up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield cluster
    finally:
        cluster.stop()


def env_for(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def launch(args: list[str], cwd: Path, extra_env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "al_sim.run", "-m", *args], cwd=cwd,
                            env=env_for(extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for(check, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"{what} never happened (exit {proc.returncode}): {err[-3000:]}")
        time.sleep(0.2)


def sweep_runs(uri: str, experiment: str) -> tuple[object, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id])
    [parent] = [r for r in found if r.data.tags.get("al_sim.role") == "sweep"]
    return parent, [r for r in found if r.data.tags.get("al_sim.role") is None]


def check_lost_then_resumed(first: tuple[int, str], again: subprocess.CompletedProcess,
                            uri: str, experiment: str, before: dict[str, str]) -> None:
    """The first launch lost exactly one job (one line, exit 3, no traceback); the re-run
    resumed only it, into the same run: 1 parent, 4 FINISHED children, every step once."""
    code, err = first
    assert code == 3, err[-3000:]
    assert "Traceback" not in err
    lost = [line for line in err.splitlines() if line.startswith("lost: job")]
    # a killed job's run is marked KILLED by the launcher; a scancelled one may have closed
    # itself KILLED first (SLURM's SIGTERM), and the line then says it "stays KILLED"
    assert len(lost) == 1 and ("marked KILLED" in lost[0] or "stays KILLED" in lost[0]), \
        err[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    parent, children = sweep_runs(uri, experiment)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {r.info.run_id: r.info.run_name for r in children} == before
    client = MlflowClient(tracking_uri=uri)
    for run in children:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "round")]
        assert sorted(steps) == STEPS, (run.info.run_name, steps)


def after_first(uri: str, experiment: str) -> dict[str, str]:
    """After the first launch: the lost run KILLED, the 3 others FINISHED, parent FAILED."""
    parent, children = sweep_runs(uri, experiment)
    assert parent.info.status == "FAILED" and "al_sim.lost_jobs" in parent.data.tags
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 3 + ["KILLED"]
    return {r.info.run_id: r.info.run_name for r in children}


# ------------------------------------------------------------------------------ SLURM
def slurm_args(cwd: Path, server: Server, experiment: str, *extra: str,
               grid: list[str] = GRID, launcher: str = "al_submitit_slurm") -> list[str]:
    return [f"hydra/launcher={launcher}", *grid, f"tracking.uri={server.uri}",
            f"tracking.experiment={experiment}", f"hydra.sweep.dir={cwd / 'sweep'}",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10", "hydra.callbacks.sweep.status_poll_s=2", *extra]


def test_slurm_scancel_of_one_array_task_loses_only_it(slurm: SlurmCluster, server: Server,
                                                       root: Path) -> None:
    cwd = root / "slurm_cancel"
    cwd.mkdir()
    args = slurm_args(cwd, server, "slurm")
    first = launch(args, cwd, slurm.env)

    def running_with_checkpoint() -> str | None:
        ids = slurm.run(["squeue", "-h", "-r", "-t", "R", "-o", "%i"], check=False).stdout
        for task in ids.split():
            if (cwd / "sweep" / task.split("_")[-1] / "checkpoint.pt").exists():
                return task
        return None

    wait_for(running_with_checkpoint, first, "an array task past round 0")
    victim = running_with_checkpoint()
    slurm.run(["scancel", victim])
    out, err = finish(first)
    assert f"slurm job {victim} ended with no result (CANCELLED" in err, err[-3000:]
    before = after_first(server.uri, "slurm")
    parent, children = sweep_runs(server.uri, "slurm")
    assert {r.data.tags.get("al_sim.slurm_array", "").split("_")[0] for r in children} == {
        victim.split("_")[0]}  # where each ran: the array job and its task
    assert all(r.data.tags["al_sim.log"].endswith("_log.out") for r in children)
    again = subprocess.run([sys.executable, "-m", "al_sim.run", "-m", *args], cwd=cwd,
                           env=env_for(slurm.env), capture_output=True, text=True,
                           timeout=WAIT_S, check=False)
    check_lost_then_resumed((first.returncode, err), again, server.uri, "slurm", before)
    assert "mlflow ui --backend-store-uri http" not in again.stderr


def test_slurm_refusing_the_jobs_is_one_error_and_the_parent_fails(
        slurm: SlurmCluster, server: Server, root: Path) -> None:
    cwd = root / "slurm_mem"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "al_sim.run", "-m",
         *slurm_args(cwd, server, "slurm_mem", "hydra.launcher.mem_gb=64")], cwd=cwd,
        env=env_for(slurm.env), capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mem_gb" in errors[0] and "Traceback" not in proc.stderr
    parent, _ = sweep_runs(server.uri, "slurm_mem")
    assert parent.info.status == "FAILED"


def queued(slurm: SlurmCluster) -> set[str]:
    """The job ids SLURM holds, array tasks each."""
    return set(slurm.run(["squeue", "-h", "-r", "-o", "%i"], check=False).stdout.split())


def launch_endless(slurm: SlurmCluster, args: list[str], cwd: Path) -> subprocess.Popen:
    """The sweep ``args`` launched with a round 0 that trains until cancelled, once its four
    jobs are submitted and queued."""
    proc = launch(args, cwd, {**slurm.env, **ENDLESS_ROUND_0})
    folder = f"{cwd}/sweep/.submitit/%j"
    wait_for(lambda: len(submitted_jobs(folder)) == 4
             and queued(slurm) >= submitted_jobs(folder), proc, "the four jobs submitted")
    return proc


def test_slurm_a_second_launch_is_refused_and_sigterm_to_the_first_cancels_its_jobs(
        slurm: SlurmCluster, server: Server, root: Path) -> None:
    """While the sweep's jobs run, the same command again submits nothing: one ``error:``
    line naming them, exit 2, the parent untouched. Then SIGTERM to the first launcher
    cancels them. Round 0 trains until cancelled, so neither step races the jobs' end."""
    cwd = root / "slurm_term"
    cwd.mkdir()
    args = slurm_args(cwd, server, "slurm_term", ROUND_0)
    proc = launch_endless(slurm, args, cwd)
    jobs = queued(slurm)
    again = subprocess.run([sys.executable, "-m", "al_sim.run", "-m", *args], cwd=cwd,
                           env=env_for(slurm.env), capture_output=True, text=True,
                           timeout=WAIT_S, check=False)
    assert again.returncode == 2, again.stderr[-3000:]
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert all(job in errors[0] for job in jobs) and "scancel" in errors[0]
    assert queued(slurm) == jobs  # nothing submitted
    parent, _ = sweep_runs(server.uri, "slurm_term")
    assert parent.info.status == "RUNNING"

    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 143, err[-3000:]
    assert "cancelled 4 SLURM jobs of the sweep" in err, err[-3000:]
    deadline = time.monotonic() + 60
    while queued(slurm) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not queued(slurm), "the launcher's SLURM jobs outlived it"


def test_slurm_sigterm_while_slurmctld_hangs_ends_the_launcher_in_seconds(
        slurm: SlurmCluster, server: Server, root: Path) -> None:
    """slurmctld stopped (SIGSTOP: it holds its port and never answers), then SIGTERM to the
    launcher: one scancel bounded by connect_timeout_s, a note naming the jobs it could not
    cancel, the launcher gone in seconds (submitit's unbounded scancel per job waited out
    SLURM's message timeouts for each). slurmctld resumed, the jobs are cancelled."""
    cwd = root / "slurm_hung"
    cwd.mkdir()
    args = slurm_args(cwd, server, "slurm_hung", ROUND_0,
                      "hydra.callbacks.sweep.connect_timeout_s=3")
    proc = launch_endless(slurm, args, cwd)
    [ctld] = [p for p in slurm.procs if Path(str(p.args[0])).name == "slurmctld"]
    os.killpg(ctld.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
        took = time.monotonic() - start
    finally:
        os.killpg(ctld.pid, signal.SIGCONT)
    assert proc.returncode == 143, err[-3000:]
    assert "note: scancel" in err and "failed (no answer in 3 s" in err, err[-3000:]
    assert took < 30, f"the launcher took {took:.0f} s to stop"
    slurm.run(["scancel", *queued(slurm)], check=False)
    deadline = time.monotonic() + 60
    while queued(slurm) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not queued(slurm), "the sweep's SLURM jobs outlived the cleanup"


def test_slurm_time_limit_requeues_and_out_of_requeues_is_lost_and_resumable(
        slurm: SlurmCluster, server: Server, root: Path) -> None:
    """A 2-minute limit with USR2 80 s before it. With no requeue left the job is lost, saying
    why and what to raise (its run KILLED); the same sweep with requeues allowed resumes it:
    submitit requeues it at each limit (an interruption, never a failure), each attempt resumes
    from the checkpoint, every round is logged once.

    The job outlasts its first attempt: 20 rounds of 100 steps take ~40 s of training here,
    quiet, and an attempt has 20-40 s before USR2 (SLURM checks limits every 30 s and the
    start costs some); requeues are allowed generously, as a slow machine needs more."""
    cwd = root / "slurm_requeue"
    cwd.mkdir()

    def sweep(requeues: int) -> subprocess.CompletedProcess:
        args = slurm_args(cwd, server, "slurm_requeue", "hydra.launcher.timeout_min=2",
                          "hydra.launcher.signal_delay_s=80", "budget.rounds=20",
                          "trainer.min_steps=100", f"hydra.launcher.max_num_timeout={requeues}",
                          grid=ONE_JOB)
        return subprocess.run([sys.executable, "-m", "al_sim.run", "-m", *args, "seed=0"],
                              cwd=cwd, env=env_for(slurm.env), capture_output=True, text=True,
                              timeout=2 * WAIT_S, check=False)  # requeues wait in SLURM's queue

    def job_logs() -> str:
        return "".join(p.read_text() for p in (cwd / "sweep" / ".submitit").rglob("*_log.*"))

    first = sweep(0)
    [lost] = [line for line in first.stderr.splitlines() if line.startswith("lost: job 0")]
    assert first.returncode == 3 and "Traceback" not in first.stderr, first.stderr[-3000:]
    assert ("in the job: time limit or preemption, not requeued: Job not requeued because: "
            "timed-out too many times; raise hydra.launcher.timeout_min or max_num_timeout"
            ) in lost and "KILLED" in lost, f"{lost}\n--- job logs:\n{job_logs()[-6000:]}"
    [run] = sweep_runs(server.uri, "slurm_requeue")[1]
    assert run.info.status == "KILLED"

    again = sweep(10)
    logs = job_logs()
    assert again.returncode == 0, f"{again.stderr[-3000:]}\n--- job logs:\n{logs[-6000:]}"
    assert "Requeued job" in logs and "requeued by SLURM" in logs
    assert not (cwd / "sweep" / "failed_jobs").exists()
    assert not (cwd / "sweep" / "lost_jobs").exists()
    parent, [resumed] = sweep_runs(server.uri, "slurm_requeue")
    assert resumed.info.run_id == run.info.run_id
    assert parent.info.status == "FINISHED" and resumed.info.status == "FINISHED"
    steps = [m.step for m in MlflowClient(tracking_uri=server.uri).get_metric_history(
        run.info.run_id, "round")]
    assert sorted(steps) == list(range(20, 230, 10))  # one run, every round logged once


# ------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray2(root: Path) -> Iterator[tuple[str, RayNode]]:
    pytest.importorskip("ray", reason='pip install -e ".[ray]"')
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='pip install -e ".[ray]"')
    with two_nodes(root, env_for({})) as cluster:
        yield cluster


def test_ray_second_node_dying_loses_only_its_jobs(ray2: tuple[str, RayNode], server: Server,
                                                   root: Path) -> None:
    address, worker = ray2
    cwd = root / "ray_kill"
    cwd.mkdir()
    args = ["hydra/launcher=al_ray", *GRID, f"tracking.uri={server.uri}",
            "tracking.experiment=ray2", "hydra.sweep.dir=sweep",  # relative to the launch
            "hydra.callbacks.sweep.status_poll_s=2"]
    first = launch(args, cwd, {"RAY_ADDRESS": address})
    wait_for(lambda: len(list((cwd / "sweep").glob("*/checkpoint.pt"))) >= 4, first,
             "all four jobs past round 0")
    _, jobs = sweep_runs(server.uri, "ray2")
    nodes = {r.data.tags.get("al_sim.ray_node_id") for r in jobs}
    assert len(nodes) == 2, nodes  # jobs on both nodes
    for pid in worker.pids("raylet"):
        os.kill(pid, signal.SIGKILL)
    out, err = finish(first)
    lost = [line for line in err.splitlines() if line.startswith("lost: job")]
    assert first.returncode == 3 and lost and "Traceback" not in err, err[-3000:]
    parent, children = sweep_runs(server.uri, "ray2")
    assert parent.info.status == "FAILED"
    killed = [r for r in children if r.info.status == "KILLED"]
    assert len(killed) == len(lost) and all(r.info.run_id in " ".join(lost) for r in killed)
    assert all(r.info.status == "FINISHED" for r in children if r not in killed)
    again = subprocess.run([sys.executable, "-m", "al_sim.run", "-m", *args], cwd=cwd,
                           env=env_for({"RAY_ADDRESS": address}), capture_output=True,
                           text=True, timeout=WAIT_S, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    parent, children = sweep_runs(server.uri, "ray2")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert all(r.info.status == "FINISHED" for r in children)
