"""Lost sweep jobs: a job its launcher learned was cancelled, timed out, preempted or on a
dead node, with no result. Every al_sim launcher (``al_sim.app.launchers``) reports each one
here as soon as it learns of it:

- one line on the launcher's console naming the job, why, and its MLflow run;
- that run marked KILLED (resumable: re-running the sweep command resumes it);
- a file ``<sweep dir>/lost_jobs/<num>.txt``, so the sweep's parent ends FAILED with the list
  (:mod:`al_sim.app.sweep_callback`).

The other jobs run on. The launching process knows the sweep's parent run; a job's own run
is found under it by its ``al_sim.job`` tag (its overrides), so no shared disk is needed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from al_sim.app.sweep_parent import open_sweep
from al_sim.runtime.errors import ALSimError
from al_sim.runtime.files import atomic_write
from al_sim.tracking.contract import JOB_TAG

LOST_DIR = "lost_jobs"
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class JobRef:
    """One job of a sweep as its launcher submitted it."""

    num: int
    overrides: tuple[str, ...]
    name: str  # Hydra's override_dirname: the job's ``al_sim.job`` tag
    finished_in: Path | None = None  # its run dir, when that holds its finished run

    def returned(self) -> JobReturn:
        """What the launcher hands Hydra for a lost or skipped job: no result, not an
        exception (a job that skips itself returns the same)."""
        ret = JobReturn(overrides=list(self.overrides), status=JobStatus.COMPLETED)
        ret.return_value = None
        return ret


def kill_run(job: JobRef) -> tuple[str, str] | None:
    """Mark the job's RUNNING MLflow run KILLED; its id and status before (None: no run yet,
    or no tracking). A run that ended (a stack's finished member) keeps its status."""
    parent = open_sweep()
    if parent is None or "'" in job.name:
        return None
    from al_sim.tracking.store import kill_job_run

    return kill_job_run(parent.uri, parent.run_id, job.name, PARENT_TAG, JOB_TAG)


def report_lost(sweep_dir: Path, job: JobRef, why: str) -> None:
    """Say that ``job`` is lost and why, mark its run KILLED, and record it for the sweep."""
    try:
        killed = kill_run(job)
        run = ("no MLflow run yet" if killed is None else f"MLflow run {killed[0]} marked KILLED"
               if killed[1] == "RUNNING" else f"MLflow run {killed[0]} stays {killed[1]}")
    except ALSimError as exc:
        run = f"its MLflow run could not be marked KILLED ({exc})"
    why = " ".join(why.split())[:300]
    print(f"lost: job {job.num} [{job.name}]: {why}; {run}", file=sys.stderr, flush=True)
    atomic_write(sweep_dir / LOST_DIR / f"{job.num}.txt", f"{job.name}\n{why}\n{run}\n")


def lost_jobs(sweep_dir: Path) -> list[tuple[int, str, str]]:
    """The sweep's lost jobs: (number, overrides, why), by job number."""
    folder = sweep_dir / LOST_DIR
    found = []
    for path in folder.glob("*.txt") if folder.is_dir() else []:
        name, why = (path.read_text().splitlines() + ["", ""])[:2]
        found.append((int(path.stem), name, why))
    return sorted(found)
