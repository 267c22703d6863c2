"""A joblib launcher that keeps every job that finished when a worker dies.

hydra-joblib-launcher collects the results once all jobs are done: a worker killed
(``kill -9``, the out-of-memory killer) makes loky raise ``TerminatedWorkerError``, a
traceback that loses every result. loky then stops the whole pool (its other workers
too), so here every job without a result is reported lost (:mod:`al_sim.app.lost_jobs`),
its run KILLED, and the jobs that finished keep their results; re-running resumes the lost.
"""

from __future__ import annotations

from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from al_sim.app.launchers.common import in_order, joblib_setup, unfinished
from al_sim.app.lost_jobs import report_lost
from al_sim.runtime.oom_kills import OomWatch


def _numbered(i: int, *args: Any) -> tuple[int, JobReturn]:
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    return i, execute_job(*args)


class AlJoblibLauncher(JoblibLauncher):
    """``hydra/launcher=al_joblib``."""

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        folder, batch, cfg = joblib_setup(self, job_overrides, initial_job_idx)
        refs = unfinished(batch)
        if not refs:
            return in_order(batch)
        for ref in refs:
            print(f"\t#{ref.num} : {' '.join(filter_overrides(ref.overrides))}", flush=True)
        state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        oom = OomWatch()
        try:
            for i, ret in Parallel(**cfg, return_as="generator_unordered")(
                    delayed(_numbered)(i, ref.num, list(ref.overrides), self.hydra_context,
                                       self.config, self.task_function, state)
                    for i, ref in enumerate(refs)):
                results[i] = ret
        except TerminatedWorkerError as exc:
            first, cause = str(exc).splitlines()[0][:200], oom.cause()
            for i, ref in enumerate(refs):
                if i not in results:
                    report_lost(folder, ref, f"a joblib worker died{cause}, loky stops the "
                                             f"pool ({first})")
                    results[i] = ref.returned()
        return in_order(batch, refs, results)
