"""What every stacked launcher shares: the stack's knobs (``conf/hydra/launcher/stack/``),
the plan (which jobs run as which stack) and a stack's run in the process given it.

``hydra/launcher=al_stack`` runs each stack in a joblib worker
(:mod:`al_sim.app.launchers.stack_workers`); ``al_stack_slurm`` / ``al_stack_local``
(:mod:`al_sim.app.launchers.stack_jobs`) and ``al_stack_ray``
(:mod:`al_sim.app.launchers.ray_stacks`) run each stack as one cluster job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import DictConfig

from al_sim.app.launchers.stacking import (
    auto_stack_size,
    parse_stack_size,
    split,
    stack_groups,
    stack_key,
)
from al_sim.app.lost_jobs import JobRef
from al_sim.runtime.errors import ConfigError
from al_sim.runtime.openmp import set_omp_wait_policy

STACK_KNOBS = ("stack_size", "memory_fraction", "lockstep")  # conf/hydra/launcher/stack/

Member = tuple[int, int, list[str]]  # (index in the batch, job number, overrides)


def pop_stack_knobs(params: dict[str, Any]) -> tuple[Any, float, bool]:
    """The stack's knobs taken out of a launcher's settings (the rest are the plugin's)."""
    size, fraction, lockstep = (params.pop(k) for k in STACK_KNOBS)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ConfigError(f"hydra.launcher.memory_fraction={fraction} (conf/hydra/launcher/stack/"
                          "default.yaml) is not in (0, 1]; set e.g. "
                          "hydra.launcher.memory_fraction=0.8")
    if not isinstance(lockstep, bool):
        raise ConfigError(f"hydra.launcher.lockstep={lockstep} (conf/hydra/launcher/stack/"
                          "default.yaml) is not true or false; set hydra.launcher.lockstep=true "
                          "(members trained together) or false")
    return size, float(fraction), lockstep


def run_stack(members: list[Member], lockstep: bool, omp_wait_policy: str | None,
              execute: Callable[[int, list[str]], JobReturn]) -> list[tuple[int, JobReturn]]:
    """One stack in this process: each member ``(index, job number, overrides)`` run by
    ``execute`` as its Hydra job, one after another, or with ``lockstep`` (and two members or
    more) side by side, their trainings lock-stepped. The stack's ``trainer.omp_wait_policy``
    is set before anything here imports torch (a run alone sets it the same way)."""
    set_omp_wait_policy(omp_wait_policy)
    from al_sim.app.components import shared_datasets
    from al_sim.app.launchers.lockstep_workers import run_lockstep

    with shared_datasets():
        if lockstep and len(members) > 1:  # one member has no one to train with
            return run_lockstep(members, execute)
        return [(i, execute(num, overrides)) for i, num, overrides in members]


def member_size(job_cfg: DictConfig, fraction: float, jobs: int, workers: int,
                job_memory: int | None = None) -> tuple[int, int]:
    """(members per stack, bytes per member) for ``stack_size=auto``: one member's footprint
    measured on a fresh model and a training batch, against the memory a stack may use: a
    GPU's free memory, on the CPU ``job_memory`` (a cluster job's own) or the host's free."""
    import torch

    from al_sim.app.components import build_dataset, build_model
    from al_sim.core.device import resolve_device
    from al_sim.core.footprint import free_bytes, member_bytes

    device = resolve_device(str(job_cfg.trainer.device))
    dataset = build_dataset(job_cfg)
    model = build_model(job_cfg.model, dataset.image_shape[0], dataset.n_classes,
                        int(job_cfg.seed), input_size=dataset.image_shape[-1]).to(device)
    batch = torch.zeros((int(job_cfg.trainer.batch_size), *dataset.image_shape), device=device)
    size = member_bytes(model, batch)
    room = job_memory if device.type == "cpu" and job_memory else free_bytes(device)
    return auto_stack_size(size, room, fraction, jobs, workers), size


class StackPlanner:
    """The plan of a stacked launcher: its ``stack_size``, ``memory_fraction`` and, per
    launcher, how many stacks run at once (:meth:`stack_workers`) and the memory of the
    process a stack runs in (:meth:`stack_memory`, None: the launcher host's free memory)."""

    stack_size: Any
    memory_fraction: float
    config: DictConfig | None
    hydra_context: Any

    def stack_workers(self) -> int:
        """How many stacks run at once."""
        return 1

    def stack_memory(self) -> int | None:
        """Bytes of host memory a stack's process has (None: unknown)."""
        return None

    def plan(self, refs: list[JobRef]) -> tuple[list[list[int]], list[str | None]]:
        """The stacks, as indices into ``refs``, and each stack's OpenMP wait policy."""
        assert self.config is not None and self.hydra_context is not None
        cfgs = [self.hydra_context.config_loader.load_sweep_config(self.config, list(r.overrides))
                for r in refs]
        keys = [stack_key(cfg) for cfg in cfgs]
        fixed = parse_stack_size(self.stack_size)  # checked here: a bad value is one error line
        stacks = self._sizes(cfgs, keys) if fixed is None else stack_groups(keys, fixed)
        return stacks, [cfgs[stack[0]].trainer.get("omp_wait_policy") for stack in stacks]

    def _sizes(self, cfgs: list[DictConfig], keys: list[str]) -> list[list[int]]:
        """``stack_size=auto``: each group split by its measured member footprint (the
        launcher's torch import under the sweep's OpenMP policy)."""
        set_omp_wait_policy(cfgs[0].trainer.get("omp_wait_policy"))
        workers, memory = max(1, self.stack_workers()), self.stack_memory()
        stacks: list[list[int]] = []
        for group in stack_groups(keys, len(keys)):
            size, member = member_size(cfgs[group[0]], self.memory_fraction, len(group), workers,
                                       memory)
            room = "" if memory is None else f" of a job's {memory / 2**30:g} GiB"
            print(f"stack_size=auto: {member / 2**20:.1f} MiB per member{room} -> {size} per "
                  "stack", flush=True)
            stacks += split(group, size)
        return stacks


def print_stacks(stacks: list[list[int]], refs: list[JobRef]) -> None:
    """Each stack and its members, as Hydra lists a sweep's jobs."""
    for n, stack in enumerate(stacks):
        print(f"\tstack {n} ({len(stack)} member(s)):", flush=True)
        for i in stack:
            print(f"\t  #{refs[i].num} : {' '.join(filter_overrides(refs[i].overrides))}",
                  flush=True)


def cores() -> int:
    """This machine's cores (those this process may use)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
