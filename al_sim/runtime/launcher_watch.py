"""Sweep jobs in worker processes stop cleanly with their launcher, as a Ctrl-C stops a run.

Hydra's joblib launcher (and submitit's local one) run jobs in child processes of
the launching process. Killed with SIGKILL, the launcher cannot stop them: they
would go on for minutes, writing into a sweep nobody waits for. So the launcher
names itself and its sweep dir in the environment (:func:`announce_launcher`);
a job started in a direct child of it watches that parent (:func:`watch_launcher`)
and, once the launcher is gone, interrupts itself: its MLflow run is closed KILLED
and the worker exits; the next run of the same sweep command resumes the job.

A worker that gets SIGTERM or SIGINT (SLURM, docker, ``kill``, Ctrl-C) closes its
running job's run KILLED too, and runs no further job. A launcher that gets
SIGTERM or Ctrl-C first sends its workers SIGTERM and waits, up to a grace
period, until no job is in progress (:func:`stop_workers`): joblib would SIGKILL
them mid-round and leave their runs RUNNING. Jobs in progress are files
``<sweep dir>/.al_sim_running/<pid>`` (:func:`job_in_progress`).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from al_sim.runtime.interrupts import interrupt, lost

LAUNCHER_ENV = "AL_SIM_LAUNCHER"  # "<pid>:<poll seconds>", set by the launching process
RUNNING_DIR = ".al_sim_running"
SIGTERM_REASON = "SIGTERM"
SIGINT_REASON = "Ctrl-C"
EXIT_TERMINATED = 143  # 128 + SIGTERM, what shells and schedulers expect
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
_SIGTERM_IGNORED = 1 << (signal.SIGTERM - 1)  # its bit in /proc/<pid>/status SigIgn

_gone = threading.Event()  # the launcher died
_interrupting = threading.Event()  # this worker got its stop signal
_job_running = threading.Event()
_started = threading.Event()
_launcher_state: list[tuple[float, Path]] = []  # in the launching process: (grace_s, sweep dir)


def announce_launcher(poll_s: float, grace_s: float, sweep_dir: Path) -> None:
    """In the launching process: let the job processes it starts find and watch it."""
    os.environ[LAUNCHER_ENV] = f"{os.getpid()}:{poll_s:g}"
    _launcher_state[:] = [(grace_s, Path(sweep_dir))]


def _launcher() -> tuple[int, float] | None:
    pid, _, poll = os.environ.get(LAUNCHER_ENV, "").partition(":")
    try:
        return int(pid), float(poll)
    except ValueError:
        return None


def _children() -> list[int]:
    """Live direct children of this process that do not ignore SIGTERM (Linux ``/proc``)."""
    me, out = str(os.getpid()), []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
        except OSError:  # the process ended while we looked
            continue
        if fields.get("PPid", "").strip() == me and not fields.get("State", "").startswith("Z") \
                and not int(fields.get("SigIgn", "0"), 16) & _SIGTERM_IGNORED:
            out.append(int(status.parent.name))
    return out


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds, Linux ``/proc``); None if it is gone,
    a zombie, or ``/proc`` cannot say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                    .splitlines() if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None if fields[0] == "Z" else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def jobs_in_progress(sweep_dir: Path) -> list[int]:
    """Processes whose sweep job is in progress: a marker's pid, alive and started before
    the marker was made (a killed worker's marker stays; its pid may be another's by now)."""
    folder = sweep_dir / RUNNING_DIR
    busy = []
    for marker in list(folder.glob("[0-9]*")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            started = _started_at(int(marker.name))
            if started is not None and started <= marker.stat().st_mtime + 1:
                busy.append(int(marker.name))
    return sorted(busy)


def stop_workers() -> int:
    """In an interrupted launcher: SIGTERM its workers, wait (a grace period) for their jobs.

    Returns how many jobs were still in progress after the grace period (0 outside a
    launcher of worker processes).
    """
    launcher = _launcher()
    if not _launcher_state or launcher is None or launcher[0] != os.getpid():
        return 0
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    grace_s, sweep_dir = _launcher_state[0]
    deadline = time.monotonic() + grace_s
    while (busy := jobs_in_progress(sweep_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(busy)


def signal_reason(signum: int) -> str:
    """What a stop by signal ``signum`` is called in the lines al_sim prints."""
    return SIGTERM_REASON if signum == signal.SIGTERM else SIGINT_REASON


def interrupt_reason(exc: KeyboardInterrupt) -> str:
    """What stopped the process: the reason a signal handler raised ``exc`` with, else Ctrl-C
    (Python's own KeyboardInterrupt carries none)."""
    return str(exc) or SIGINT_REASON


def interrupted_status(reason: str) -> int:
    """The exit status of a process stopped for ``reason``: 143 for SIGTERM, else 130."""
    return EXIT_TERMINATED if reason == SIGTERM_REASON else EXIT_INTERRUPTED


def gone_reason() -> str:
    """Why a watched job was interrupted: its launcher is gone."""
    launcher = _launcher()
    return f"the sweep's launcher (pid {launcher[0] if launcher else '?'}) exited"


def _interrupted(signum: int, frame: object) -> None:
    if _interrupting.is_set() and not lost():
        return  # already stopping: a second signal must not break the run's clean close
    _interrupting.set()
    if _gone.is_set() and not _job_running.is_set():
        os._exit(EXIT_TERMINATED)  # an idle orphan: nothing to close
    if _job_running.is_set():
        interrupt(gone_reason() if _gone.is_set() else signal_reason(signum))


def _watch(pid: int, poll_s: float) -> None:
    while os.getppid() == pid:
        time.sleep(poll_s)
    _gone.set()
    if _interrupting.is_set() and not _job_running.is_set():
        os._exit(EXIT_TERMINATED)  # already stopped and idle: nothing left to close
    _thread.interrupt_main(signal.SIGTERM)


def watch_launcher() -> bool:
    """In a job: when it runs in a direct child of the launcher, start watching it (once).

    Returns whether this process is watched. Jobs run by the launcher itself
    (the basic launcher) or by other hosts' workers (Ray, SLURM) are not.
    """
    launcher = _launcher()
    if launcher is None or os.getpid() == launcher[0] or os.getppid() != launcher[0]:
        return False
    if threading.current_thread() is not threading.main_thread():
        return False  # signal handlers can only be set from the main thread
    if not _started.is_set():
        _started.set()
        signal.signal(signal.SIGTERM, _interrupted)
        signal.signal(signal.SIGINT, _interrupted)
        threading.Thread(target=_watch, args=launcher, daemon=True,
                         name="al_sim-launcher-watch").start()
    return True


def stopping() -> bool:
    """Whether this worker was told to stop: it starts no further job."""
    return _interrupting.is_set() or _gone.is_set()


@contextlib.contextmanager
def job_in_progress(sweep_dir: Path) -> Iterator[None]:
    """Mark this worker's job as in progress (for :func:`stop_workers`) while it runs."""
    marker = sweep_dir / RUNNING_DIR / str(os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    _job_running.set()
    try:
        yield
    finally:
        _job_running.clear()
        marker.unlink(missing_ok=True)


def exit_if_orphaned(exc: KeyboardInterrupt) -> None:
    """After a watched job was interrupted (its run closed KILLED): end the worker if orphaned."""
    if _gone.is_set():
        print(f"interrupted ({exc}): the MLflow run is marked KILLED; run the sweep command "
              "again to resume it", file=sys.stderr, flush=True)
        os._exit(EXIT_TERMINATED)
