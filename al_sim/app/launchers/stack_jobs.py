"""``hydra/launcher=al_stack_slurm`` / ``al_stack_local``: one submitit job per stack.

The sweep's jobs are planned into stacks as ``al_stack`` plans them
(:mod:`al_sim.app.launchers.stack_plan`); each stack is one array task (SLURM) or one local
process with the resources of ``al_submitit_slurm`` / ``al_submitit_local`` (``mem_gb``,
``cpus_per_task``, ... per stack job), and runs its members one after another (or in
lock-step) as their own Hydra jobs: own run dir, checkpoint, MLflow child run.

Everything else is the submitit launchers' (:mod:`al_sim.app.launchers.submitit_jobs`): a
stack job that ends with no result reports each of its members lost (the running member's run
KILLED, finished ones stay FINISHED); an interrupted launcher cancels the stack jobs; a
second launch beside them is refused (:mod:`al_sim.app.launchers.orphans`); a requeued stack
job (time limit, preemption) runs its stack again: finished members are skipped, the
interrupted one resumes from its checkpoint, the rest start.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from omegaconf import open_dict

from al_sim.app.launchers.stack_plan import (
    Member,
    StackPlanner,
    cores,
    pop_stack_knobs,
    print_stacks,
    run_stack,
)
from al_sim.app.launchers.submitit_jobs import AlLocalLauncher, AlSlurmLauncher, on_node
from al_sim.app.lost_jobs import JobRef

GIB = 2**30
log = logging.getLogger("al_sim")


class _Stacked(StackPlanner):
    """A submitit launcher whose submitted jobs are stacks."""

    params: dict[str, Any]
    _policies: list[str | None]

    def __init__(self, **params: Any) -> None:
        self.stack_size, self.memory_fraction, self.lockstep = pop_stack_knobs(params)
        super().__init__(**params)

    def stack_memory(self) -> int | None:
        """A stack job's ``mem_gb`` (its cgroup's limit on a SLURM node), when set."""
        mem_gb = self.params.get("mem_gb")
        return int(float(mem_gb) * GIB) if mem_gb else None

    def _units(self, refs: list[JobRef]) -> list[list[int]]:
        stacks, self._policies = self.plan(refs)
        print_stacks(stacks, refs)
        self._stacked = len(refs), len(stacks)
        return stacks

    def _arguments(self, units: list[list[int]], refs: list[JobRef]) -> list[tuple]:
        return [([(i, refs[i].num, list(refs[i].overrides)) for i in unit], policy,
                 Singleton.get_state()) for unit, policy in zip(units, self._policies,
                                                                strict=True)]

    def _returns(self, unit: list[int], value: Any) -> dict[int, JobReturn]:
        return dict(value)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        # a mixin: launch is the submitit launcher's that it comes before (AlSlurmLauncher's)
        self._stacked = (0, 0)
        returns = super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        jobs, stacks = self._stacked
        if jobs:  # none when every job had finished before
            print(f"{jobs} job(s) ran as {stacks} stack job(s)", file=sys.stderr, flush=True)
        return returns

    def __call__(self, members: list[Member], policy: str | None,
                 singleton_state: dict[Any, Any]) -> list[tuple[int, JobReturn]]:
        """On the node: the stack's members, each run as submitit runs a job."""
        return on_node(lambda: self._run(members, policy, singleton_state))

    def _run(self, members: list[Member], policy: str | None,
             singleton_state: dict[Any, Any]) -> list[tuple[int, JobReturn]]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        stack_job = submitit.JobEnvironment().job_id
        # task_function: set by Hydra on the submitit launcher this mixin is part of
        config, context, task = self.config, self.hydra_context, self.task_function  # type: ignore[attr-defined]

        def execute(num: int, overrides: list[str]) -> JobReturn:
            sweep_config = context.config_loader.load_sweep_config(config, overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = stack_job  # as submitit sets it: the job's id
                sweep_config.hydra.job.num = num
            return run_job(hydra_context=context, task_function=task, config=sweep_config,
                           job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

        return run_stack(members, self.lockstep, policy, execute)


class AlStackSlurmLauncher(_Stacked, AlSlurmLauncher):
    """``hydra/launcher=al_stack_slurm``: one SLURM array task per stack."""

    def stack_workers(self) -> int:
        return int(self.params.get("array_parallelism") or 1)


class AlStackLocalLauncher(_Stacked, AlLocalLauncher):
    """``hydra/launcher=al_stack_local``: one local submitit process per stack."""

    def stack_workers(self) -> int:  # every job starts at once: one per cpus_per_task cores
        return max(1, cores() // int(self.params.get("cpus_per_task") or 1))

    def _units(self, refs: list[JobRef]) -> list[list[int]]:
        stacks = super()._units(refs)
        workers = self.stack_workers()
        if len(stacks) > workers:  # as al_submitit_local warns of its jobs
            log.warning("al_stack_local starts all %d stack jobs at once, and %d cores hold %d "
                        "of them at cpus_per_task=%s (submitit's local executor has no "
                        "array_parallelism); raise hydra.launcher.stack_size (or set it to "
                        "auto), or use hydra/launcher=al_stack hydra.launcher.n_jobs=%d",
                        len(stacks), cores(), workers,
                        self.params.get("cpus_per_task") or 1, workers)
        return stacks
