"""submitit launchers (SLURM, local) that wait for each job on its own.

hydra-submitit-launcher waits for the jobs in order and raises at the first one that
ended without a result (``scancel``, time limit, dead node): a traceback, the other
array tasks left running with nobody waiting, every run left RUNNING. Here a job with no
result is reported lost (:mod:`al_sim.app.lost_jobs`) and the launcher waits on for the
others; ``sbatch`` refusing the jobs is one ``error:`` line; an interrupted launcher
cancels its jobs. Without SLURM accounting (``sacct`` fails) a job that ``squeue`` no
longer lists and that left no result is lost after ``lost_grace_s``, not waited on forever.

In the job (on the node), SLURM's SIGTERM (``scancel``, preemption) closes the run KILLED
(submitit would ignore it), and a requeue (submitit's USR2 handler calling ``scontrol
requeue``) is an interruption, never a job failure, whatever the requeue call raises.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    BaseSubmititLauncher,
    LocalLauncher,
    SlurmLauncher,
)
from omegaconf import OmegaConf

from al_sim.app.launchers.common import (
    cancelled_on_interrupt,
    check_time_limit,
    in_order,
    job_refs,
    launcher_settings,
    sweep_dir,
    unfinished,
)
from al_sim.app.launchers.orphans import squeue_states
from al_sim.app.lost_jobs import JobRef, report_lost
from al_sim.runtime.errors import ConfigError
from al_sim.runtime.interrupts import interrupt
from al_sim.runtime.launcher_watch import EXIT_TERMINATED
from al_sim.runtime.oom_kills import OomWatch

_requeueing = threading.Event()
_INTERRUPTED = "interrupted ({}): the MLflow run is marked KILLED"  # the job's last words
_SAID = re.compile(r"^interrupted \((.*)\): the MLflow run is marked KILLED$", re.MULTILINE)
_LOG_TAIL = 65536  # bytes of a job's stderr log read for its last words


def _guard_signals() -> None:
    """In a SLURM job: SIGTERM interrupts the run; a requeue is an interruption."""
    if "SLURM_JOB_ID" not in os.environ or threading.current_thread() != threading.main_thread():
        return
    import submitit
    from submitit.core.utils import UncompletedJobError

    usr_sig = submitit.JobEnvironment()._usr_sig()  # USR2: time limit near, or preemption
    requeue = signal.getsignal(usr_sig)

    def on_term(signum: int, frame: object) -> None:
        if not _requeueing.is_set():  # scontrol requeue's own SIGTERM: on_usr ends the job
            interrupt("SIGTERM from SLURM (scancel, preemption or node shutdown)")

    def on_usr(signum: int, frame: FrameType | None) -> None:
        _requeueing.set()
        try:
            if callable(requeue):
                requeue(signum, frame)  # checkpoint, scontrol requeue, sys.exit
        except SystemExit:
            interrupt("requeued by SLURM (time limit or preemption); it resumes when it restarts")
        except UncompletedJobError as exc:  # submitit's "Job not requeued because: ..."
            interrupt(f"time limit or preemption, not requeued: {str(exc).rstrip('.')}; raise "
                      "hydra.launcher.timeout_min or max_num_timeout, and the sweep run again "
                      "resumes it")
        except BaseException as exc:  # noqa: BLE001 - any failure of the requeue call
            interrupt(f"time limit or preemption; requeue: {type(exc).__name__}: {exc}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(usr_sig, on_usr)


class _Waiting(BaseSubmititLauncher):
    """Submits like hydra-submitit-launcher, then waits for each job on its own."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """On the node: run the job; an interrupted job ends the process, its run KILLED."""
        return on_node(lambda: BaseSubmititLauncher.__call__(self, *args, **kwargs))

    def _units(self, refs: list[JobRef]) -> list[list[int]]:
        """What each submitted job runs, as indices into ``refs``: here one job each."""
        for ref in refs:
            print(f"\t#{ref.num} : {' '.join(filter_overrides(ref.overrides))}", flush=True)
        return [[i] for i in range(len(refs))]

    def _arguments(self, units: list[list[int]], refs: list[JobRef]) -> list[tuple]:
        """The arguments of each submitted job's ``__call__`` on the node."""
        return [(list(refs[i].overrides), "hydra.sweep.dir", refs[i].num,
                 f"job_id_for_{refs[i].num}", Singleton.get_state()) for [i] in units]

    def _returns(self, unit: list[int], value: Any) -> dict[int, JobReturn]:
        """A submitted job's result as its jobs' returns, by index into the batch."""
        return {unit[0]: value}

    def _executor(self) -> Any:
        """hydra-submitit-launcher's executor, parameters and all."""
        import submitit

        init_keys = {"max_num_timeout"}
        init = {"folder": self.params["submitit_folder"]}
        init.update({f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
            if k not in init_keys | {"submitit_folder"}})
        return executor

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        self._poll_s, self._grace_s, self._connect_s = launcher_settings(self.config)
        self._check_time_limit()
        folder = sweep_dir(self.config)
        batch = job_refs(self.config, self.hydra_context, job_overrides, initial_job_idx)
        refs = unfinished(batch)
        if not refs:
            return in_order(batch)
        units = self._units(refs)
        self._oom = OomWatch()  # a local job killed on this host: by the OOM killer?
        try:
            jobs = self._executor().map_array(
                self, *zip(*self._arguments(units, refs), strict=True))
        except submitit.core.utils.FailedJobError as exc:
            detail = " ".join(str(exc).split())[-400:]
            raise ConfigError(
                f"{self._EXECUTOR} refused the sweep's jobs ({detail}); fix the resources in "
                "hydra.launcher.* (mem_gb, partition, timeout_min, cpus_per_task, gpus_per_node)"
            ) from None
        pending = dict(zip(range(len(jobs)), jobs, strict=True))

        def cancel() -> list[JobRef]:
            if self._EXECUTOR == "slurm":  # one bounded scancel for all: slurmctld may be down
                scancel([str(job.job_id) for job in pending.values()], self._connect_s)
                return [refs[i] for u in list(pending) for i in units[u]]
            out = []
            for u, job in list(pending.items()):
                try:
                    job.cancel(check=False)
                    out += [refs[i] for i in units[u]]
                except Exception:  # noqa: BLE001,S112 - a job that ended meanwhile
                    continue
            return out

        what = "SLURM jobs" if self._EXECUTOR == "slurm" else "submitit jobs"
        with cancelled_on_interrupt(cancel, what):
            results = self._wait(jobs, units, refs, pending, folder)
        return in_order(batch, refs, results)

    def _check_time_limit(self) -> None:
        """A time limit shorter than submitit's warning would requeue every attempt at once."""
        check_time_limit(self.params.get("timeout_min", 0), self.params.get("signal_delay_s", 0),
                         slurm=self._EXECUTOR == "slurm")

    def _wait(self, jobs: list, units: list[list[int]], refs: list[JobRef], pending: dict,
              folder: Path) -> dict[int, JobReturn]:
        results: dict[int, JobReturn] = {}
        unknown_since: dict[int, float] = {}
        while pending:
            watcher = type(jobs[0]).watcher if self._EXECUTOR == "slurm" else None
            if watcher is not None:
                watcher.update()  # one sacct call for every job of the array
            gone = None
            for u, job in list(pending.items()):
                if job.done():
                    del pending[u]
                    results.update(self._outcome(job, units[u], refs, folder))
                    continue
                if watcher is None or job.state.upper() != "UNKNOWN":
                    unknown_since.pop(u, None)
                    continue
                gone = squeue_states() if gone is None else gone
                if gone is not None and job.job_id not in gone:
                    since = unknown_since.setdefault(u, time.monotonic())
                    if time.monotonic() - since > self._grace_s:
                        del pending[u]
                        results.update(self._lost(units[u], refs, folder, (
                            f"SLURM job {job.job_id} ended with no result (no SLURM "
                            "accounting: sacct cannot tell why)")))
            if pending:
                time.sleep(self._poll_s)
        return results

    def _outcome(self, job: Any, unit: list[int], refs: list[JobRef], folder: Path
                 ) -> dict[int, JobReturn]:
        """The job's result, or a lost job's report for each job it ran."""
        from submitit.core.utils import UncompletedJobError

        if getattr(job, "_process", None) is not None and not all(
                job.task(k).paths.result_pickle.exists() for k in range(job.num_tasks)):
            # a local job's process has ended on this host: a result it wrote would be here
            # already, so submitit's wait for a shared file system's lag (15 s) only delays
            return self._lost(unit, refs, folder, self._no_result(job))
        try:
            return self._returns(unit, job.results()[0])
        except UncompletedJobError:  # cancelled, timed out, killed, node failure
            return self._lost(unit, refs, folder, self._no_result(job))
        except Exception as exc:  # noqa: BLE001 - the job itself raised (FailedJobError)
            lines = [line for line in str(exc).splitlines() if line.strip()]
            why = f"raised {lines[-1].strip() if lines else type(exc).__name__}"
        return self._lost(unit, refs, folder, f"{self._EXECUTOR} job {job.job_id} {why}")

    def _no_result(self, job: Any) -> str:
        """Why a job that ended without a result is lost, with a local job's exit status."""
        process = getattr(job, "_process", None)
        code = "" if process is None else f", exit status {process.poll()}"
        oom = "" if process is None else self._oom.cause()  # a SLURM job: sacct's state says
        said = last_words(job)
        said = f"; in the job: {said}" if said else ""
        return (f"{self._EXECUTOR} job {job.job_id} ended with no result ({job.state}{code}){oom}"
                f"{said}")

    def _lost(self, unit: list[int], refs: list[JobRef], folder: Path, why: str
              ) -> dict[int, JobReturn]:
        """Each job of a lost submitted job reported lost."""
        what = "" if len(unit) == 1 else f" (its stack's {len(unit)} jobs)"
        for i in unit:
            report_lost(folder, refs[i], why + what)
        return {i: refs[i].returned() for i in unit}


def on_node(run: Callable[[], Any]) -> Any:
    """On the node, a job's (or stack's) run: SIGTERM and requeues interrupt it, and an
    interrupted run ends the process (its MLflow run closed KILLED)."""
    _guard_signals()
    try:
        return run()
    except KeyboardInterrupt as exc:
        print(_INTERRUPTED.format(exc), file=sys.stderr, flush=True)
        sys.exit(EXIT_TERMINATED)


def last_words(job: Any) -> str:
    """Why the job's run was interrupted, as it wrote to its stderr log ("" if it did not)."""
    try:
        path = Path(job.paths.stderr)
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - _LOG_TAIL))
            tail = log.read().decode(errors="replace")
    except (AttributeError, OSError, ValueError):  # no log (yet), or not a submitit job
        return ""
    found = _SAID.findall(tail)
    return found[-1] if found else ""


def scancel(job_ids: list[str], timeout_s: float) -> bool:
    """Cancel SLURM jobs ``job_ids`` with one ``scancel``, waiting at most ``timeout_s``
    (submitit's own cancel runs one unbounded ``scancel`` per job: with slurmctld down, each
    waits out SLURM's message timeouts). False, after saying so, when it did not succeed."""
    if not job_ids:
        return True
    try:
        done = subprocess.run(["scancel", *job_ids], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if done.returncode == 0:
            return True
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        why = f"no answer in {timeout_s:g} s (hydra.callbacks.sweep.connect_timeout_s)"
    except OSError as exc:
        why = str(exc)
    print(f"note: scancel {' '.join(job_ids)} failed ({why}); the jobs may still be queued or "
          f"running: check with squeue -j {','.join(job_ids)} and cancel them once SLURM "
          "answers", file=sys.stderr, flush=True)
    return False


class AlSlurmLauncher(_Waiting, SlurmLauncher):
    """``hydra/launcher=al_submitit_slurm``."""

    _EXECUTOR = "slurm"


class AlLocalLauncher(_Waiting, LocalLauncher):
    """``hydra/launcher=al_submitit_local``."""

    _EXECUTOR = "local"
