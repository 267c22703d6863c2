"""One cluster job per stack (``hydra/launcher=al_stack_slurm`` / ``al_stack_local`` /
``al_stack_ray``): the composed settings, a stack job's memory for ``stack_size=auto``, and
submitit's local executor running stacks as jobs: members FINISHED with the unchanged
contract; a killed stack job reports its members lost, a re-run resumes them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from al_sim.app.launchers.orphans import submitted_jobs
from al_sim.runtime.errors import ConfigError
from tests.conftest import (
    FAST_CLI,
    QUICK_POLL,
    all_experiments,
    compose_config,
    run_cli,
    start_cli,
    submitit_tasks,
)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')

GIB = 2**30
STACKED = ["hydra/launcher=al_stack_local", "hydra.launcher.stack_size=2", "budget=tiny",
           *FAST_CLI, QUICK_POLL, "hydra.sweep.dir=sweep", "tracking.query_grids=false"]


def launcher(name: str, *overrides: str):
    return compose_config([f"hydra/launcher={name}", *overrides], hydra=True).hydra.launcher


def test_a_stacked_launcher_has_its_cluster_launchers_settings_and_the_stacks_knobs() -> None:
    slurm = launcher("al_stack_slurm", "hydra.launcher.stack_size=3", "hydra.launcher.mem_gb=8")
    assert slurm._target_.endswith(".AlStackSlurmLauncher")
    assert (slurm.stack_size, slurm.memory_fraction, slurm.lockstep) == (3, 0.8, False)
    plain = launcher("al_submitit_slurm")  # the SLURM knobs are al_submitit_slurm's
    assert slurm.mem_gb == 8 and slurm.timeout_min == plain.timeout_min
    assert slurm.max_num_timeout == plain.max_num_timeout and slurm.cpus_per_task == 4
    ray = launcher("al_stack_ray", "hydra.launcher.ray.remote.num_cpus=4")
    assert ray.ray.remote.num_cpus == 4 and ray.stack_size == "auto"
    local, joblib = launcher("al_stack_local"), launcher("al_stack")
    assert local.cpus_per_task == 1 and local.stack_size == joblib.stack_size == "auto"
    assert joblib.memory_fraction == local.memory_fraction  # one home: stack/default.yaml


@pytest.mark.parametrize(("knob", "value", "words"), [
    ("lockstep", "maybe", "hydra.launcher.lockstep=maybe (conf/hydra/launcher/stack/default.yaml)"
                          " is not true or false"),
    ("memory_fraction", "x", "hydra.launcher.memory_fraction=x"),
    ("memory_fraction", True, "hydra.launcher.memory_fraction=True"),
    ("memory_fraction", 0, "is not in (0, 1]")])
def test_a_stack_knob_of_the_wrong_kind_is_one_config_error(knob: str, value: object,
                                                          words: str) -> None:
    """Not truthiness: lockstep=maybe ran a sweep with lock-step on, silently."""
    from al_sim.app.launchers.stack_plan import pop_stack_knobs
    from al_sim.runtime.errors import ConfigError

    knobs = {"stack_size": "auto", "memory_fraction": 0.5, "lockstep": False, knob: value}
    with pytest.raises(ConfigError) as err:
        pop_stack_knobs(knobs)
    assert words in str(err.value)


def test_an_auto_stack_fills_its_jobs_memory_not_the_launcher_hosts() -> None:
    from al_sim.app.launchers.stack_jobs import AlStackLocalLauncher, AlStackSlurmLauncher
    from al_sim.app.launchers.stack_plan import member_size

    knobs = {"stack_size": "auto", "memory_fraction": 0.5, "lockstep": False}
    slurm = AlStackSlurmLauncher(**knobs, mem_gb=2, array_parallelism=3, submitit_folder="x")
    assert slurm.stack_memory() == 2 * GIB and slurm.stack_workers() == 3
    assert "stack_size" not in slurm.params  # never handed to submitit
    assert AlStackLocalLauncher(**knobs, mem_gb=None, submitit_folder="x").stack_memory() is None
    with pytest.raises(ConfigError, match="hydra.launcher.memory_fraction"):
        AlStackSlurmLauncher(**{**knobs, "memory_fraction": 1.5}, submitit_folder="x")

    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='pip install -e ".[ray]"')
    from omegaconf import OmegaConf

    from al_sim.app.launchers.ray_stacks import AlStackRayLauncher

    ray = OmegaConf.create({"init": {}, "remote": {"num_cpus": 2, "memory": 3 * GIB}})
    assert AlStackRayLauncher(**knobs, ray=ray).stack_memory() == 3 * GIB  # the task's own

    cfg = compose_config(["dataset.n_pool=400", "dataset.n_test=200", "trainer.batch_size=64"])
    size, member = member_size(cfg, 0.5, jobs=8, workers=1)  # the host's free memory
    assert size >= 1 and member > 0
    assert member_size(cfg, 0.5, 8, 1, job_memory=4 * member)[0] == 2  # half of 4 members
    assert member_size(cfg, 0.5, 8, 1, job_memory=member)[0] == 1  # too small: one at a time
    assert member_size(cfg, 0.5, 8, 2, job_memory=100 * member)[0] == 4  # 2 jobs at once


def test_al_stack_local_warns_when_its_stack_jobs_outnumber_the_cores(monkeypatch, caplog
                                                                     ) -> None:
    from al_sim.app.launchers import stack_jobs
    from al_sim.app.launchers.stack_jobs import AlStackLocalLauncher

    knobs = {"stack_size": 1, "memory_fraction": 0.5, "lockstep": False}
    local = AlStackLocalLauncher(**knobs, submitit_folder="x", cpus_per_task=1)
    monkeypatch.setattr(stack_jobs, "cores", lambda: 2)
    monkeypatch.setattr(stack_jobs, "print_stacks", lambda *_: None)
    monkeypatch.setattr(AlStackLocalLauncher, "plan",
                        lambda self, refs: ([[i] for i in range(len(refs))], [None] * len(refs)))
    with caplog.at_level("WARNING", logger="al_sim"):
        assert len(local._units([None, None])) == 2  # two stack jobs on two cores: quiet
        assert caplog.records == []
        assert len(local._units([None, None, None])) == 3
    [record] = caplog.records
    assert "starts all 3 stack jobs at once" in record.getMessage()
    assert "hydra/launcher=al_stack hydra.launcher.n_jobs=2" in record.getMessage()


def job_runs(cwd: Path) -> dict[str, object]:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    found = client.search_runs(all_experiments(client))
    return {r.info.run_name: r for r in found if r.data.tags.get("al_sim.role") is None}


def rounds(cwd: Path, run_id: str) -> list[int]:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    return sorted(m.step for m in client.get_metric_history(run_id, "round"))


def task_of(cwd: Path, run_name: str) -> int:
    """The task process of the stack job running ``run_name``: the child of the local
    executor's job controller, whose pid is the job id."""
    log = job_runs(cwd)[run_name].data.tags["al_sim.log"]  # .../<job id>/<job id>_0_log.out
    job = Path(log).parent.name
    [task] = [pid for pid in submitit_tasks(cwd / "sweep")
              if f"PPid:\t{job}\n" in Path(f"/proc/{pid}/status").read_text()]
    return task


@pytest.mark.slow
def test_stacks_run_as_one_job_each_and_a_killed_one_loses_its_members_then_resumes(
        tmp_path: Path) -> None:
    """Four jobs as two stack jobs under submitit's local executor. Once the first stack's
    second member is past its round 0, that stack job is SIGKILLed: its two jobs are
    reported lost (the first stays FINISHED, the second is marked KILLED), the other stack's
    members finish, the sweep exits 3. The same command again resumes the killed member into
    its run, skips the others, and every member has the unchanged contract and the bits of
    the same run alone."""
    sweep = tmp_path / "sweep"
    args = ["-m", "strategy=random,entropy", "seed=0,1", *STACKED, "budget.rounds=4",
            f"hydra.sweep.dir={sweep}"]
    first = start_cli(args, tmp_path)
    try:
        deadline = time.monotonic() + 300

        def past_round_0(job: int) -> None:
            while not (sweep / f"{job}/checkpoint.pt").exists():
                assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
                time.sleep(0.05)

        # jobs dealt round-robin: stack 1 is jobs 1 (random, seed 1) then 3 (entropy, seed 1);
        # its task is found once its first member runs, and killed once that member finished
        # and the second is past its round 0
        past_round_0(1)
        task = task_of(tmp_path, "random-synthetic-seed1")
        past_round_0(3)
        os.kill(task, signal.SIGKILL)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 3 and "Traceback" not in err, err[-3000:]
    assert "stack 0 (2 member(s))" in out and "stack 1 (2 member(s))" in out, out[-3000:]
    assert len(submitted_jobs(str(sweep / ".submitit/%j"))) == 2  # 2 jobs, not 4
    lost = sorted(line for line in err.splitlines() if line.startswith("lost: job"))
    assert len(lost) == 2 and all("its stack's 2 jobs" in line for line in lost), err[-3000:]
    assert "stays FINISHED" in lost[0] and "marked KILLED" in lost[1]
    killed = job_runs(tmp_path)
    assert {n: r.info.status for n, r in killed.items()} == {
        "entropy-synthetic-seed0": "FINISHED", "entropy-synthetic-seed1": "KILLED",
        "random-synthetic-seed0": "FINISHED", "random-synthetic-seed1": "FINISHED"}
    logs = {r.data.tags["al_sim.log"] for r in killed.values()}
    assert len(logs) == 2 and all(log.endswith("_log.out") for log in logs)  # 2 per job

    again = run_cli(args, tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # the finished members are not started again: one stack job holds the killed one alone
    assert "1 job(s) ran as 1 stack job(s)" in again.stderr, again.stderr[-3000:]
    assert again.stderr.count("skipped: job ") == 3
    assert len(submitted_jobs(str(sweep / ".submitit/%j"))) == 3
    finished = job_runs(tmp_path)
    assert {n: r.info.run_id for n, r in finished.items()} == {
        n: r.info.run_id for n, r in killed.items()}  # resumed into the same runs
    for name, run in finished.items():
        assert run.info.status == "FINISHED"
        if killed[name].info.status == "FINISHED":  # skipped, not re-run
            assert run.info.end_time == killed[name].info.end_time
        assert rounds(tmp_path, run.info.run_id) == [20, 30, 40, 50, 60]  # each step once
        assert "final/aulc" in run.data.metrics
    for job in sweep.glob("[0-9]"):
        assert {p.name for p in job.iterdir()} >= {"config.yaml", "queries.csv",
                                                    "metrics.csv", "checkpoint.pt"}
    alone = run_cli(["strategy=entropy", "seed=1", "budget=tiny", "budget.rounds=4", *FAST_CLI,
                     "hydra.run.dir=alone", "tracking.enabled=false"], tmp_path, process=False)
    assert alone.returncode == 0, alone.stderr[-3000:]
    # the killed and resumed member has the bits of the same run alone
    assert (sweep / "3/queries.csv").read_text() == (tmp_path / "alone/queries.csv").read_text()
