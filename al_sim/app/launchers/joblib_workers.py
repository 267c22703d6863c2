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
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from al_sim.app.launchers.common import job_refs, sweep_dir
from al_sim.app.lost_jobs import report_lost


def _numbered(i: int, *args: Any) -> tuple[int, JobReturn]:
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    return i, execute_job(*args)


class AlJoblibLauncher(JoblibLauncher):
    """``hydra/launcher=al_joblib``."""

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        folder = sweep_dir(self.config)
        refs = job_refs(self.config, self.hydra_context, job_overrides, initial_job_idx)
        cfg = self.joblib
        cfg["backend"] = "loky"  # as the plugin: threads do not work with Hydra
        process_joblib_cfg(cfg)
        for ref in refs:
            print(f"\t#{ref.num} : {' '.join(filter_overrides(ref.overrides))}", flush=True)
        state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        try:
            for i, ret in Parallel(**cfg, return_as="generator_unordered")(
                    delayed(_numbered)(i, ref.num, list(ref.overrides), self.hydra_context,
                                       self.config, self.task_function, state)
                    for i, ref in enumerate(refs)):
                results[i] = ret
        except TerminatedWorkerError as exc:
            first = str(exc).splitlines()[0][:200]
            for i, ref in enumerate(refs):
                if i not in results:
                    report_lost(folder, ref, f"a joblib worker died, loky stops the pool ({first})")
                    results[i] = ref.returned()
        return [results[i] for i in range(len(refs))]
