"""``hydra/launcher=al_stack_ray``: one Ray task per stack.

The sweep's jobs are planned into stacks as ``al_stack`` plans them
(:mod:`al_sim.app.launchers.stack_plan`); each stack is one Ray task reserving ``al_ray``'s
``hydra.launcher.ray.remote`` resources (``num_cpus``, ``num_gpus``, ``memory``) and runs its
members one after another (or in lock-step) as their own Hydra jobs. A task lost with its
worker or node reports each of its members lost (:mod:`al_sim.app.launchers.ray_tasks`), an
interrupted launcher cancels the stack tasks, and Ray ends them with their launcher.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from al_sim.app.launchers.ray_tasks import AlRayLauncher, Returns
from al_sim.app.launchers.stack_plan import StackPlanner, pop_stack_knobs, print_stacks, run_stack
from al_sim.app.lost_jobs import JobRef


def _run_stack_task(hydra_context: HydraContext, members: list[tuple[int, DictConfig]],
                    lockstep: bool, policy: str | None, task_function: TaskFunction,
                    singleton_state: dict[Any, Any]) -> list[tuple[int, JobReturn]]:
    """In the Ray task: each member ``(index, job config)`` run as hydra-ray-launcher runs a
    job."""
    setup_globals()
    Singleton.set_state(singleton_state)
    configs = {int(cfg.hydra.job.num): cfg for _, cfg in members}

    def execute(num: int, _overrides: list[str]) -> JobReturn:
        HydraConfig.instance().set_config(configs[num])
        return run_job(hydra_context=hydra_context, task_function=task_function,
                       config=configs[num], job_dir_key="hydra.sweep.dir",
                       job_subdir_key="hydra.sweep.subdir")

    return run_stack([(i, int(cfg.hydra.job.num), []) for i, cfg in members], lockstep, policy,
                     execute)


class AlStackRayLauncher(StackPlanner, AlRayLauncher):
    """``hydra/launcher=al_stack_ray``: the stack's knobs (``conf/hydra/launcher/stack/``),
    the other settings ``al_ray``'s."""

    def __init__(self, **params: Any) -> None:
        self.stack_size, self.memory_fraction, self.lockstep = pop_stack_knobs(params)
        super().__init__(**params)

    def _remote(self) -> dict[str, Any]:
        remote = self.ray_cfg.get("remote")
        container = OmegaConf.to_container(remote, resolve=True) if remote else {}
        return {str(k): v for k, v in container.items()} if isinstance(container, dict) else {}

    def stack_workers(self) -> int:
        """Stack tasks the cluster runs at once: its CPUs over each task's ``num_cpus``."""
        import ray

        cpus = float(ray.cluster_resources().get("CPU", 1))
        return max(1, int(cpus // max(1.0, float(self._remote().get("num_cpus") or 1))))

    def stack_memory(self) -> int | None:
        """A stack task's ``ray.remote.memory`` (bytes), when set."""
        memory = self._remote().get("memory")
        return int(memory) if memory else None

    def _start(self, refs: list[JobRef], folder: Path) -> dict[Any, tuple[list[int], Returns]]:
        """One Ray task per stack."""
        import ray

        assert self.task_function is not None  # set by Hydra's setup() before launching
        stacks, policies = self.plan(refs)
        print_stacks(stacks, refs)
        remote = ray.remote(**self._remote())(_run_stack_task)
        tasks: dict[Any, tuple[list[int], Returns]] = {}
        for stack, policy in zip(stacks, policies, strict=True):
            members = [(i, self.job_config(refs[i], folder)) for i in stack]
            task = remote.remote(self.hydra_context, members, self.lockstep, policy,
                                 self.task_function, Singleton.get_state())
            tasks[task] = (stack, dict)
        print(f"{len(refs)} job(s) run as {len(stacks)} stack task(s)", file=sys.stderr,
              flush=True)
        return tasks
