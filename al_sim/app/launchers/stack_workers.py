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
from hydra.core.utils import JobReturn

from al_sim.app.launchers.joblib_workers import AlJoblibLauncher
from al_sim.app.launchers.stack_plan import (
    Member,
    StackPlanner,
    pop_stack_knobs,
    print_stacks,
    run_stack,
)
from al_sim.app.lost_jobs import report_lost
from al_sim.runtime.oom_kills import OomWatch


def _run_stack(members: list[Member], lockstep: bool, omp_wait_policy: str | None,
               *args: Any) -> list[tuple[int, JobReturn]]:
    """One stack in this joblib worker, each member run as joblib runs a job."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    return run_stack(members, lockstep, omp_wait_policy,
                     lambda num, overrides: execute_job(num, overrides, *args))


class AlStackLauncher(StackPlanner, AlJoblibLauncher):
    """``hydra/launcher=al_stack``: the stack's knobs (``conf/hydra/launcher/stack/``), the
    other settings joblib's."""

    def __init__(self, **params: Any) -> None:
        self.stack_size, self.memory_fraction, self.lockstep = pop_stack_knobs(params)
        super().__init__(**params)

    def stack_workers(self) -> int:
        n_jobs = int(self.joblib.get("n_jobs") or 1)  # joblib's -1: one per core
        return n_jobs if n_jobs >= 1 else os.cpu_count() or 1

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        from al_sim.app.launchers.common import in_order, joblib_setup, unfinished

        folder, batch, cfg = joblib_setup(self, job_overrides, initial_job_idx)
        refs = unfinished(batch)
        if not refs:
            return in_order(batch)
        stacks, policies = self.plan(refs)
        print_stacks(stacks, refs)
        state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        oom = OomWatch()
        try:
            for done in Parallel(**cfg, return_as="generator_unordered")(
                    delayed(_run_stack)([(i, refs[i].num, list(refs[i].overrides)) for i in stack],
                                        self.lockstep, policy, self.hydra_context, self.config,
                                        self.task_function, state)
                    for stack, policy in zip(stacks, policies, strict=True)):
                results.update(done)
        except TerminatedWorkerError as exc:
            first, cause = str(exc).splitlines()[0][:200], oom.cause()
            for i, ref in enumerate(refs):
                if i not in results:
                    report_lost(folder, ref, f"its stack's worker died{cause} ({first})")
                    results[i] = ref.returned()
        print(f"{len(refs)} job(s) ran as {len(stacks)} stack(s)", file=sys.stderr, flush=True)
        return in_order(batch, refs, results)
