"""Entry point: ``python -m al_sim.run [overrides]`` composes the config and runs one AL experiment.

Exit status: 0 on success or when a human oracle's batch waits for labels (the
MLflow run stays RUNNING; the printed command continues it), 2 on a user error
(one ``error:`` line naming the problem and the fix; the MLflow run marked
FAILED, except a partly labelled batch: still waiting), 130 on Ctrl-C and 143
on SIGTERM (both: the run marked KILLED and resumable).
In a sweep, a failing job is listed at the end and the sweep exits 1.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from al_sim.app.finished_jobs import job_params
from al_sim.app.sweep_callback import (
    close_failed_sweep,
    close_interrupted_sweep,
    mark_job_failed,
    sweep_context,
)
from al_sim.config.composition import composition_error_line, files_read
from al_sim.config.registry import (
    enabled_nodes,
    instantiate,
    register_configs,
)
from al_sim.core.events import CallbackList, LabelsPending, RunCallback, RunInfo
from al_sim.runtime.command_line import hydra_argv
from al_sim.runtime.errors import (
    EXIT_USER_ERROR,
    AlreadyFinishedError,
    ALSimError,
    ConfigError,
    LabelsIncompleteError,
    one_line,
    os_error_line,
    out_of_memory,
)
from al_sim.runtime.files import atomic_write
from al_sim.runtime.interrupts import interrupt
from al_sim.runtime.launcher_watch import (
    exit_if_orphaned,
    interrupt_reason,
    interrupted_status,
    job_in_progress,
    signal_reason,
    stop_workers,
    stopping,
    watch_launcher,
)
from al_sim.runtime.log_file import to_log_file
from al_sim.runtime.openmp import set_omp_wait_policy
from al_sim.runtime.run_lock import RunDirLock
from al_sim.tracking.contract import CONFIG_FILE, FULL_STRATEGY, JOB_TAG, redact

log = logging.getLogger("al_sim")


def run_name(cfg: DictConfig) -> str:
    """``<strategy>-<dataset>-seed<seed>`` as in the MLflow contract."""
    return f"{_strategy_tag(cfg)}-{cfg.dataset.name}-seed{cfg.seed}"


def _strategy_tag(cfg: DictConfig) -> str:
    return FULL_STRATEGY if cfg.budget.full else str(cfg.strategy.name)


def run_tags(cfg: DictConfig, sweep_id: str | None) -> dict[str, str]:
    """The run's tags: strategy, dataset, model, seed, budget (and sweep_id in a sweep)."""
    tags = {"strategy": _strategy_tag(cfg), "dataset": str(cfg.dataset.name),
            "model": str(cfg.model.name), "seed": str(cfg.seed), "budget": str(cfg.budget.name)}
    if sweep_id is not None:
        tags["sweep_id"] = sweep_id
        tags[JOB_TAG] = HydraConfig.get().job.override_dirname
    return tags


def build_callbacks(cfg: DictConfig) -> CallbackList:
    """The sinks of ``conf/callbacks`` that are enabled, in their config order."""
    built = []
    for key, node in enabled_nodes(cfg.get("callbacks")).items():
        callback = instantiate(node, _convert_="all")
        if not isinstance(callback, RunCallback):
            raise ConfigError(f"callbacks.{key}._target_={node._target_} is not an al_sim "
                              "RunCallback (al_sim.core.events.Callback)")
        built.append(callback)
    return CallbackList(built)


def job_threads(num_threads: int | None, parallel_jobs: int) -> int:
    """Torch threads for one job: ``num_threads`` if set, else this job's share of the cores."""
    if num_threads:
        return num_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    jobs = cores if parallel_jobs < 1 else parallel_jobs
    return max(1, cores // min(jobs, cores))


def _parallel_jobs() -> int:
    """How many jobs the launcher runs at once (1 outside a parallel sweep)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    return int(hydra_cfg.launcher.get("n_jobs", 1) or 1)


def _launcher_cpus() -> int | None:
    """The cores a cluster launcher reserved for this job (Ray ``num_cpus``, submitit
    ``cpus_per_task``), or None: then the job takes its share of this machine's cores."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    launcher = HydraConfig.get().launcher
    ray_cfg = launcher.get("ray")
    cpus = ray_cfg.get("remote", {}).get("num_cpus") if ray_cfg else launcher.get("cpus_per_task")
    return int(cpus) if cpus else None


def execute(cfg: DictConfig, run_dir: Path, launch_dir: Path, parallel_jobs: int = 1) -> float:
    """Run one experiment from a composed config (or continue it); returns its AULC."""
    # a job's own values (a swept group's keys included) and the constructors' knobs
    params = (job_params(cfg, HydraConfig.get().overrides.task, files_read(HydraConfig.get()))
              if HydraConfig.initialized() else job_params(cfg))
    lock = RunDirLock(run_dir).acquire()  # one owner per run dir, for the whole run
    try:
        return _execute_locked(cfg, run_dir, launch_dir, parallel_jobs, params)
    finally:
        lock.release()


def _execute_locked(cfg: DictConfig, run_dir: Path, launch_dir: Path, parallel_jobs: int,
                    params: dict[str, str]) -> float:
    set_omp_wait_policy(cfg.trainer.omp_wait_policy)  # read once, when torch loads OpenMP
    from al_sim.app.experiment import run_experiment  # the heavy imports (torch) start here
    from al_sim.sinks.checkpoint import find_resumable

    previous = find_resumable(run_dir, str(cfg.resume).lower(), params)
    atomic_write(run_dir / CONFIG_FILE, redact(OmegaConf.to_yaml(cfg, resolve=True)))
    sweep = sweep_context()
    info = RunInfo(run_dir=run_dir, launch_dir=launch_dir, name=run_name(cfg),
                   tags=run_tags(cfg, None if sweep is None else sweep.sweep_id),
                   params=params, parent=None if sweep is None else sweep.parent_run_id,
                   resume=None if previous is None else previous.state)
    if previous is not None:
        log.info(resume_line(run_dir, previous.state.round))
    callbacks = build_callbacks(cfg)
    threads = job_threads(cfg.trainer.num_threads or _launcher_cpus(), parallel_jobs)
    return run_experiment(cfg, info, callbacks, threads).aulc


def resume_line(run_dir: Path, last_round: int) -> str:
    """What a resume says; ``last_round``: the checkpoint's last finished round (-1: none)."""
    done = last_round + 1  # rounds count from 0
    return (f"resuming {run_dir} at round {done} "
            f"({'no round done yet' if done == 0 else f'{done} round(s) done'})")


def continue_command(run_dir: Path) -> str:
    """The command that continues this run: the same overrides, into the same run dir."""
    overrides = [str(o) for o in HydraConfig.get().overrides.task]
    if not any(o.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for o in overrides):
        overrides.append(f"hydra.run.dir={run_dir}")
    return " ".join(["python -m al_sim.run", *(shlex.quote(o) for o in overrides)])


def paused(pending: LabelsPending, run_dir: Path) -> None:
    """Tell the user where to label and how to continue; refuse a partly labelled batch."""
    if pending.partial:
        raise LabelsIncompleteError(
            f"round {pending.round}: {pending.missing} image(s) of the batch in "
            f"{pending.batch_dir} {pending.why}; label them (python -m al_sim.label "
            f"{run_dir}, or --import <file>), then run the same command again")
    print(f"waiting for labels: {pending}\n  then continue the run: "
          f"{continue_command(run_dir)}", flush=True)


def error_line(exc: BaseException) -> str | None:
    """The one line a user reads for ``exc``; None when it is a bug (keep the traceback)."""
    line = _error_line(exc)
    return None if line is None else one_line(line)  # Hydra's and OSError's texts too


def _error_line(exc: BaseException) -> str | None:
    if isinstance(exc, ALSimError):
        return f"error: {exc}"
    if (composing := composition_error_line(exc)) is not None:
        return composing
    if (memory := out_of_memory(exc)) is not None:
        return f"error: {memory}"
    if isinstance(exc, ConnectionError | TimeoutError):  # a socket, not a path
        return (f"error: {exc}; a service this run connects to (tracking server, cluster head) "
                "did not answer: check that it runs and that its address is right")
    if isinstance(exc, OSError):
        return os_error_line(exc, "set hydra.run.dir / hydra.sweep.dir (outputs) or "
                                  "tracking.uri (the store)")
    if isinstance(exc.__cause__, OSError):  # e.g. logging's "Unable to configure handler"
        return _error_line(exc.__cause__)
    return None


def main(cfg: DictConfig, failed: list[Exception]) -> float | None:
    """Hydra task: one run, or one job of a sweep (whose failure never stops the sweep).

    A single run's failure is appended to ``failed`` for :func:`cli` to report (raised
    here, Hydra would print a line of its own as well).
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    watched = hydra_cfg.mode == RunMode.MULTIRUN and watch_launcher()
    if watched and stopping():  # this worker was told to stop: it runs no more jobs
        line = "not run: its worker was stopped; run the sweep again to run it"
        print(f"{run_dir}: {line}", file=sys.stderr, flush=True)
        mark_job_failed(line)
        return None
    try:
        with job_in_progress(Path(hydra_cfg.sweep.dir)) if watched else nullcontext():
            try:
                return execute(cfg, run_dir, Path(hydra.utils.get_original_cwd()),
                               _parallel_jobs())
            except LabelsPending as pending:  # the sinks closed PAUSED: the run waits
                paused(pending, run_dir)
                return None
    except KeyboardInterrupt as exc:
        if not watched:
            raise
        exit_if_orphaned(exc)  # a worker whose launcher died ends here
        line = f"interrupted ({exc}): the run is marked KILLED; run the sweep again to resume it"
        print(line, file=sys.stderr, flush=True)
        mark_job_failed(line)
        return None
    except Exception as exc:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            failed.append(exc)
            to_log_file(error_line(exc) or f"error: {type(exc).__name__}: {exc}",
                        logging.ERROR)
            return None
        if isinstance(exc, AlreadyFinishedError):
            print(f"skipped: {exc}", file=sys.stderr, flush=True)
            return None
        shown = error_line(exc)
        if shown is None:
            log.exception("job failed")
        line = shown or f"error: {type(exc).__name__}: {exc}"
        print(line, file=sys.stderr, flush=True)
        mark_job_failed(line)
        return None


def _interrupted(signum: int, frame: object) -> None:
    stop_workers()  # a sweep's launcher: its workers first close their runs KILLED
    interrupt(signal_reason(signum))


def cli() -> None:
    """``python -m al_sim.run``: every user error as one ``error:`` line and exit status 2."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let errors reach us instead of a trace
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # hydra/launcher=al_ray: no telemetry
    signal.signal(signal.SIGTERM, _interrupted)  # timeout, docker, SLURM: as Ctrl-C is
    signal.signal(signal.SIGINT, _interrupted)
    register_configs()
    failed: list[Exception] = []

    def task(cfg: DictConfig) -> float | None:
        return main(cfg, failed)

    try:
        sys.argv[1:] = hydra_argv(sys.argv[1:])
        hydra.main(version_base="1.3", config_path="../conf", config_name="config")(task)()
        if failed:
            raise failed.pop()
    except KeyboardInterrupt as exc:
        by = interrupt_reason(exc)
        what = "the MLflow run is" if close_interrupted_sweep() is None else \
            "the sweep's MLflow runs are"
        print(f"interrupted ({by}): {what} marked KILLED; run the same command "
              "again to resume it", file=sys.stderr, flush=True)
        sys.exit(interrupted_status(by))
    except Exception as exc:
        line = error_line(exc)
        close_failed_sweep()  # a launcher that failed, even of a bug: its parent run ends too
        if line is None:
            raise
        print(line, file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    cli()
