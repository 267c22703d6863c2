"""``hydra/launcher=al_stack``: a sweep's jobs that share dataset, model, budget and trainer run
as stacks, each stack in one worker process (torch, the data and the model's code loaded once
per stack, not once per run); stacks run on ``n_jobs`` workers like the joblib launcher's jobs.

Each member is a whole run (its own seeds, strategy, run dir, checkpoint, MLflow child run),
run as a Hydra job with the same task function: a member that fails is that member's FAILED
run and the next member goes on; a worker that dies returns nothing for its stack, so each of
its members is reported lost (the running one's run KILLED); re-running the sweep resumes them.
With ``n_jobs=1`` joblib runs the stacks in the launcher's own process.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import DictConfig

from al_sim.app.launchers.joblib_workers import AlJoblibLauncher
from al_sim.app.launchers.stacking import (
    auto_stack_size,
    parse_stack_size,
    split,
    stack_groups,
    stack_key,
)
from al_sim.app.lost_jobs import JobRef, report_lost
from al_sim.runtime.openmp import set_omp_wait_policy


def _run_stack(members: list[tuple[int, int, list[str]]], lockstep: bool,
               omp_wait_policy: str | None, *args: Any) -> list[tuple[int, JobReturn]]:
    """One stack in this worker: each member ``(index, job number, overrides)`` as a job, one
    after another, or with ``lockstep`` (and two members or more) side by side, their
    trainings lock-stepped. The stack's ``trainer.omp_wait_policy`` is set before anything
    here imports torch (a run alone sets it the same way, before its own import)."""
    set_omp_wait_policy(omp_wait_policy)
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    from al_sim.app.components import shared_datasets
    from al_sim.app.launchers.lockstep_workers import run_lockstep

    with shared_datasets():
        if lockstep and len(members) > 1:  # one member has no one to train with
            return run_lockstep(members, lambda num, overrides: execute_job(num, overrides,
                                                                            *args))
        return [(i, execute_job(num, overrides, *args)) for i, num, overrides in members]


def member_size(job_cfg: DictConfig, fraction: float, jobs: int,
                workers: int) -> tuple[int, int]:
    """(members per stack, bytes per member) for ``stack_size=auto``: one member's footprint
    measured on a fresh model and a training batch, against the device's free memory."""
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
    return auto_stack_size(size, free_bytes(device), fraction, jobs, workers), size


class AlStackLauncher(AlJoblibLauncher):
    """``hydra/launcher=al_stack``: ``stack_size`` (a number or ``auto``), ``memory_fraction``
    (the share of free memory ``auto`` fills), ``lockstep`` (members train together); the
    other settings are joblib's."""

    def __init__(self, stack_size: Any = "auto", memory_fraction: float = 0.8,
                 lockstep: bool = False, **joblib: Any) -> None:
        super().__init__(**joblib)
        self.stack_size, self.memory_fraction = stack_size, float(memory_fraction)
        self.lockstep = bool(lockstep)

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
        launcher's torch import, and with ``n_jobs=1`` its stacks, under the sweep's policy)."""
        set_omp_wait_policy(cfgs[0].trainer.get("omp_wait_policy"))
        stacks: list[list[int]] = []
        for group in stack_groups(keys, len(keys)):
            n_jobs = int(self.joblib.get("n_jobs") or 1)  # joblib's -1: one per core
            workers = n_jobs if n_jobs >= 1 else os.cpu_count() or 1
            size, member = member_size(cfgs[group[0]], self.memory_fraction, len(group), workers)
            print(f"stack_size=auto: {member / 2**20:.1f} MiB per member -> {size} per stack",
                  flush=True)
            stacks += split(group, size)
        return stacks

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        from al_sim.app.launchers.common import joblib_setup

        folder, refs, cfg = joblib_setup(self, job_overrides, initial_job_idx)
        stacks, policies = self.plan(refs)
        for n, stack in enumerate(stacks):
            print(f"\tstack {n} ({len(stack)} member(s)):", flush=True)
            for i in stack:
                print(f"\t  #{refs[i].num} : {' '.join(filter_overrides(refs[i].overrides))}",
                      flush=True)
        state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        try:
            for done in Parallel(**cfg, return_as="generator_unordered")(
                    delayed(_run_stack)([(i, refs[i].num, list(refs[i].overrides)) for i in stack],
                                        self.lockstep, policy, self.hydra_context, self.config,
                                        self.task_function, state)
                    for stack, policy in zip(stacks, policies, strict=True)):
                results.update(done)
        except TerminatedWorkerError as exc:
            first = str(exc).splitlines()[0][:200]
            for i, ref in enumerate(refs):
                if i not in results:
                    report_lost(folder, ref, f"its stack's worker died ({first})")
                    results[i] = ref.returned()
        print(f"{len(refs)} job(s) ran as {len(stacks)} stack(s)", file=sys.stderr, flush=True)
        return [results[i] for i in range(len(refs))]
