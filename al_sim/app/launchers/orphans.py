"""A launch of a sweep beside jobs of the same sweep that are still out: refused.

A SLURM job outlives the launcher that submitted it (a launcher killed with SIGKILL, a
lost login session): its array tasks keep running with nobody waiting. A second launch of
the same sweep command would submit those jobs again, into the same runs and job dirs.
So a sweep on SLURM first looks for its earlier jobs: submitit leaves one
``<id>_submitted.pkl`` per job in the sweep's ``submitit_folder`` (``%j`` = the job id),
and ``squeue`` says which of those ids are still queued or running. Any left: one
``error:`` line naming them and how to wait or cancel, before anything is submitted or
any MLflow run is touched.

A joblib or submitit-local worker watches its launcher and, once it is gone, closes its
run KILLED and exits (:mod:`al_sim.runtime.launcher_watch`): an orphan for a second or
two. A launch that finds one (or the jobs of a launch still running beside it) waits up
to ``interrupt_grace_s`` for them to end, then refuses, naming their processes.

Ray leaves none: it ends every task of a driver (the launcher) that exits, however it
exits; only detached actors outlive it, and al_sim's jobs are plain tasks.
"""

from __future__ import annotations

import getpass
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from al_sim.runtime.errors import ConfigError
from al_sim.runtime.launcher_watch import jobs_in_progress

SUBMITTED_SUFFIX = "_submitted.pkl"  # submitit's record of a submitted job, one per job
SQUEUE_TIMEOUT_S = 60
WORKER_POLL_S = 0.2


def squeue_states(user: str | None = None) -> dict[str, str] | None:
    """Job id -> state of the jobs SLURM still holds (array tasks as ``<job>_<task>``, one
    line each), ``user``'s only when given; None when ``squeue`` fails."""
    cmd = ["squeue", "-h", "-r", "-o", "%i %T", *(["-u", user] if user else [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_squeue(out)


def parse_squeue(out: str) -> dict[str, str]:
    """``squeue -h -r -o "%i %T"`` output as job id -> state."""
    states = {}
    for line in out.splitlines():
        job, _, state = line.strip().partition(" ")
        if job:
            states[job] = state.strip() or "?"
    return states


def submitted_jobs(submitit_folder: str) -> set[str]:
    """The job ids submitit recorded in a sweep's ``submitit_folder`` (a pattern with
    ``%j``, or ``%A``/``%a``/``%t``) by earlier launches."""
    pattern = submitit_folder
    for tag in ("%j", "%A", "%a", "%t"):
        pattern = pattern.replace(tag, "*")
    path = Path(pattern)
    anchor = Path(path.anchor) if path.is_absolute() else Path()
    return {p.name[:-len(SUBMITTED_SUFFIX)] for p in
            anchor.glob(str(path.relative_to(anchor) / f"*{SUBMITTED_SUFFIX}"))}


def still_out(submitted: Iterable[str], states: dict[str, str]) -> list[tuple[str, str]]:
    """(job id, state) of the sweep's earlier jobs that SLURM still lists, in id order."""
    out = [(job, states[job]) for job in submitted if job in states]
    return sorted(out, key=lambda js: [int(p) if p.isdigit() else -1 for p in
                                       js[0].split("_")])


def refusal(sweep_dir: str, orphans: list[tuple[str, str]]) -> str:
    """The error for a launch beside ``orphans``: which jobs, how to wait or cancel."""
    arrays = sorted({job.split("_", 1)[0] for job, _ in orphans}, key=int)
    listed = ", ".join(f"{job} {state}" for job, state in orphans)
    ids = " ".join(arrays)
    return (f"{len(orphans)} SLURM job(s) of this sweep ({sweep_dir}) from an earlier launch "
            f"are still queued or running ({listed}); launching again would run them twice "
            f"into the same runs. Wait until `squeue -j {','.join(arrays)}` lists none (the "
            f"next launch then resumes whatever they left unfinished), or cancel them with "
            f"`scancel {ids}`, then run the same command again")


def refuse_beside_orphans(launcher: dict, sweep_dir: str) -> None:
    """ConfigError when a SLURM sweep's jobs from an earlier launch are still out.

    ``launcher`` is ``hydra.launcher``; other launchers, a sweep never submitted, or a
    machine where ``squeue`` does not answer (``sbatch`` then reports why) pass."""
    target = str(launcher.get("_target_", ""))
    folder = launcher.get("submitit_folder")
    if not target.endswith("SlurmLauncher") or not folder:
        return
    submitted = submitted_jobs(str(folder))
    if not submitted:
        return
    states = squeue_states(getpass.getuser())
    orphans = still_out(submitted, states or {})
    if orphans:
        raise ConfigError(refusal(sweep_dir, orphans))


def wait_for_workers(sweep_dir: Path, grace_s: float) -> None:
    """Wait up to ``grace_s`` for worker processes of an earlier local launch (joblib,
    submitit-local) whose job is still in progress; ConfigError if some remain."""
    deadline = time.monotonic() + grace_s
    busy = jobs_in_progress(sweep_dir)
    if busy:
        print(f"waiting up to {grace_s:g} s for {len(busy)} job(s) of an earlier launch of "
              f"this sweep to stop (processes {' '.join(map(str, busy))})", file=sys.stderr,
              flush=True)
    while busy and time.monotonic() < deadline:
        time.sleep(WORKER_POLL_S)
        busy = jobs_in_progress(sweep_dir)
    if busy:
        pids = " ".join(map(str, busy))
        raise ConfigError(
            f"{len(busy)} job(s) of this sweep ({sweep_dir}) are still running in processes "
            f"{pids} (another launch of it, or workers of a launch that was killed); wait for "
            f"that launch to end, or stop them with `kill {pids}`, then run the same command "
            "again (it resumes their jobs)")
