"""What every al_sim launcher shares: the sweep's job list, cancelling on an interrupt."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, open_dict

from al_sim.app.lost_jobs import JobRef, kill_run
from al_sim.runtime.errors import ConfigError


def job_refs(config: DictConfig, hydra_context, job_overrides: Sequence[Sequence[str]],
             first: int) -> list[JobRef]:
    """The jobs of this batch: number, overrides, ``al_sim.job`` tag (override_dirname), and
    the run dir of each whose run already finished (:mod:`al_sim.app.finished_jobs`)."""
    from al_sim.app.finished_jobs import finished_run_dir  # it imports the sweep's callback

    refs = []
    for idx, overrides in enumerate(job_overrides):
        job_cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job_cfg):
            job_cfg.hydra.job.num = first + idx  # its run dir's name, as the job sets it
        refs.append(JobRef(first + idx, tuple(overrides), str(job_cfg.hydra.job.override_dirname),
                           finished_run_dir(job_cfg)))
    return refs


def unfinished(refs: Sequence[JobRef]) -> list[JobRef]:
    """The jobs to start: each whose run finished is skipped, with the line the job says."""
    for ref in refs:
        if ref.finished_in is not None:
            from al_sim.sinks.checkpoint import already_finished

            print(f"skipped: job {ref.num} [{ref.name}]: {already_finished(ref.finished_in)}",
                  file=sys.stderr, flush=True)
    return [ref for ref in refs if ref.finished_in is None]


def in_order(batch: Sequence[JobRef], started: Sequence[JobRef] = (),
             results: Mapping[int, JobReturn] | None = None) -> list[JobReturn]:
    """What Hydra gets for ``batch``: the return of each job ``started`` (``results`` by its
    index there), a skipped job's as a job that skipped itself returns."""
    by_num = {started[i].num: ret for i, ret in (results or {}).items()}
    return [by_num[ref.num] if ref.num in by_num else ref.returned() for ref in batch]


def joblib_setup(launcher: Any, job_overrides: Sequence[Sequence[str]],
                 first: int) -> tuple[Path, list[JobRef], dict[str, Any]]:
    """What a joblib-based launcher does first: Hydra's globals and logging, the sweep dir
    (created), the batch's jobs, and the joblib settings (loky: threads do not work with
    Hydra), as the joblib plugin does."""
    from hydra.core.utils import configure_log, setup_globals
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    assert launcher.config is not None and launcher.hydra_context is not None
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    check_n_jobs(launcher.joblib.get("n_jobs"))
    folder = sweep_dir(launcher.config)
    refs = job_refs(launcher.config, launcher.hydra_context, job_overrides, first)
    cfg = launcher.joblib
    cfg["backend"] = "loky"
    process_joblib_cfg(cfg)
    return folder, refs, cfg


def check_n_jobs(n_jobs: Any) -> None:
    """``hydra.launcher.n_jobs`` as joblib takes it: a whole number of workers, not 0
    (negative: all cores but ``-n_jobs - 1``), or null for one; ConfigError otherwise."""
    if n_jobs is None or (isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs):
        return
    raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} is not a number of worker processes; "
                      "set hydra.launcher.n_jobs=2 (jobs at once), or -1 for one per core")


def check_time_limit(timeout_min: Any, signal_delay_s: Any, slurm: bool) -> None:
    """``hydra.launcher.timeout_min`` as a submitit launcher needs it: minutes > 0 and, on
    SLURM, longer than the requeue signal's ``signal_delay_s``; ConfigError otherwise."""
    if isinstance(timeout_min, bool) or not isinstance(timeout_min, int | float) \
            or timeout_min <= 0:
        raise ConfigError(f"hydra.launcher.timeout_min={timeout_min} is not a time limit: "
                          "every job would be stopped at its start; set it to the minutes a "
                          "job may run, e.g. hydra.launcher.timeout_min=60")
    timeout_s = 60 * timeout_min
    if slurm and isinstance(signal_delay_s, int | float) and timeout_s <= signal_delay_s:
        raise ConfigError(
            f"hydra.launcher.timeout_min={timeout_s // 60:g} is not longer than "
            f"hydra.launcher.signal_delay_s={signal_delay_s}: submitit signals a requeue that "
            "long before the limit, so every attempt would be requeued at once; raise "
            "timeout_min or lower signal_delay_s")


def launcher_settings(config: DictConfig) -> tuple[float, float, float]:
    """(status_poll_s, lost_grace_s, connect_timeout_s) from ``hydra.callbacks.sweep``: how
    often a cluster launcher asks how its jobs are doing, how long a job the scheduler no
    longer knows may stay without a result before it counts as lost, how long a cluster's
    head may take to accept a connection."""
    sweep = config.hydra.callbacks.get("sweep")
    if sweep is None:
        raise ConfigError("al_sim's launchers read their timings from hydra.callbacks.sweep "
                          "(conf/config.yaml), which this config removed; keep it (al_sim's "
                          "sweep callback) and override its keys instead")
    return (float(sweep.status_poll_s), float(sweep.lost_grace_s),
            float(sweep.connect_timeout_s))


def sweep_dir(config: DictConfig) -> Path:
    """The sweep's directory (created)."""
    path = Path(str(config.hydra.sweep.dir))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cancelled_on_interrupt(cancel: Callable[[], list[JobRef]], what: str) -> Iterator[None]:
    """On Ctrl-C / SIGTERM while waiting: ``cancel()`` the jobs still out, mark their runs
    KILLED, and say so (only when there were some)."""
    try:
        yield
    except KeyboardInterrupt:
        cancelled = cancel()
        for job in cancelled:
            with contextlib.suppress(Exception):
                kill_run(job)
        if cancelled:
            names = ", ".join(str(job.num) for job in cancelled)
            print(f"cancelled {len(cancelled)} {what} of the sweep (job {names})",
                  file=sys.stderr, flush=True)
        raise
