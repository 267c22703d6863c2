"""Sweeps: one MLflow parent run per multirun, a ``sweep_id`` for its jobs, failures counted.

``SweepCallback`` is a Hydra callback (registered in ``conf/config.yaml``). It
runs in the launching process; it writes ``al_sim_sweep.json`` into the sweep
directory so every job, in-process or in a joblib worker, finds its parent run.
Before a single run it checks the typed config groups, so a bad value or data path
fails before Hydra makes the run dir.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

from al_sim.app.launchers.orphans import refuse_beside_orphans, wait_for_workers
from al_sim.app.lost_jobs import LOST_DIR, lost_jobs
from al_sim.app.sweep_checks import check_sweep_config, warn_unbounded_launcher
from al_sim.app.sweep_parent import SweepParent, close_parent, open_parent
from al_sim.config.checks import positive
from al_sim.config.composition import check_bool_files, check_bool_overrides, files_read
from al_sim.config.registry import validate_schemas
from al_sim.config.schema import DEFAULT_EXPERIMENT
from al_sim.runtime.errors import EXIT_USER_ERROR, ALSimError, ConfigError, os_error_line
from al_sim.runtime.files import atomic_write
from al_sim.runtime.launcher_watch import announce_launcher
from al_sim.tracking.contract import (
    LOST_JOBS_TAG,
    ROLE_TAG,
    SWEEP_ID_TAG,
    SWEEP_ROLE,
    SWEEP_STRATEGY,
    default_artifact_location,
    tracking_uri,
    where_to_look,
)

log = logging.getLogger("al_sim")
SWEEP_FILE = "al_sim_sweep.json"
FAILED_DIR = "failed_jobs"
EXIT_SWEEP_FAILED = 1
EXIT_JOBS_LOST = 3  # no job failed, some were lost: re-running the command resumes them


@dataclass
class SweepContext:
    """What a job of a sweep needs to know about its sweep."""

    sweep_id: str
    parent_run_id: str | None
    experiment: str | None = None  # the study's MLflow experiment, when the sweep chose it


def _sweep_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.sweep.dir)


def sweep_context() -> SweepContext | None:
    """The current job's sweep, or None outside a multirun."""
    sweep_dir = _sweep_dir()
    if sweep_dir is None:
        return None
    data = _earlier_sweep(sweep_dir / SWEEP_FILE)
    if data:
        return SweepContext(data.get("sweep_id", str(sweep_dir)), data.get("parent_run_id"),
                            data.get("experiment"))
    return SweepContext(str(sweep_dir), None)


def study_experiment(config: DictConfig) -> str:
    """The sweep's MLflow experiment: ``tracking.experiment`` when the user or an
    ``experiment=`` config set it, else one named after the sweep dir (studies kept apart)."""
    given = str(config.tracking.experiment)
    on_command_line = any(o.lstrip("+~").split("=", 1)[0] == "tracking.experiment"
                          for o in config.hydra.overrides.task)
    if given != DEFAULT_EXPERIMENT or on_command_line:
        return given
    return str(config.hydra.sweep.dir)


def close_interrupted_sweep(status: str = "KILLED") -> str | None:
    """After a sweep was interrupted (KILLED) or its launcher failed (FAILED): end its parent
    run with ``status``; its id, or None (no sweep)."""
    parent = close_parent()
    if parent is None:
        return None
    from al_sim.tracking.store import end_run

    end_run(parent.uri, parent.run_id, status=status)
    return parent.run_id


def close_failed_sweep() -> None:
    """The open sweep's parent run marked FAILED; a store that refuses is said, not raised (the
    sweep's own failure is what the user must read)."""
    try:
        close_interrupted_sweep("FAILED")
    except Exception as exc:  # noqa: BLE001 - any store failure: told, then the first error
        print(f"note: the sweep's parent MLflow run could not be marked FAILED ({exc}); it "
              "stays RUNNING until the sweep runs again", file=sys.stderr, flush=True)


def _earlier_sweep(path: Path) -> dict[str, str]:
    """What an earlier launch into this sweep dir recorded (its id, parent run, experiment)."""
    if not path.exists():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a sweep record ({exc}); delete it to start the sweep "
                          "under a new parent run, or give hydra.sweep.dir a new folder") from None
    if not isinstance(earlier, dict) or not all(
            isinstance(v, str | None) for v in earlier.values()):
        raise ConfigError(f"{path} is not a sweep record (a JSON object of strings); delete "
                          "it, or give hydra.sweep.dir a new folder")
    return earlier


def mark_job_failed(message: str) -> None:
    """Record that the current sweep job failed, so the sweep exits non-zero."""
    sweep_dir = _sweep_dir()
    if sweep_dir is None:
        return
    job = HydraConfig.get().job
    atomic_write(sweep_dir / FAILED_DIR / f"{job.num}.txt", f"{job.override_dirname}\n{message}\n")


class SweepCallback(Callback):
    """Creates the sweep's parent run before the jobs and closes it after them."""

    def __init__(self, launcher_poll_s: float = 1.0, interrupt_grace_s: float = 30.0,
                 status_poll_s: float = 10.0, lost_grace_s: float = 120.0,
                 connect_timeout_s: float = 10.0) -> None:
        positive("hydra.callbacks.sweep", launcher_poll_s=launcher_poll_s,
                 interrupt_grace_s=interrupt_grace_s, status_poll_s=status_poll_s,
                 lost_grace_s=lost_grace_s, connect_timeout_s=connect_timeout_s)
        # the last three: read by al_sim.app.launchers (launchers.common.launcher_settings)
        self._poll_s, self._grace_s = launcher_poll_s, interrupt_grace_s
        self._parent: SweepParent | None = None  # the one it opened (None: tracking off)
        self._experiment_id = ""
        self._experiment = ""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run's typed groups are checked before Hydra makes its run dir: a wrong
        value or data path (``dataset.root``) fails in seconds and leaves nothing behind."""
        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        try:
            check_bool_overrides(task, config.hydra.overrides.task)
            check_bool_files(task, files_read(config.hydra))
            validate_schemas(task)
        except ALSimError as exc:  # Hydra turns a callback's exception into a warning
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
        except Exception:  # noqa: BLE001 - e.g. a ${hydra:} value: the run's own check reports it
            pass

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Checks, the sweep dir and its parent run; any failure stops the sweep here (Hydra
        would only warn about a callback's exception, then launch jobs that all fail)."""
        try:
            self._start(config)
        except (ALSimError, OSError) as exc:
            line = f"error: {exc}" if isinstance(exc, ALSimError) else os_error_line(
                exc, "set hydra.sweep.dir")
            print(line, file=sys.stderr, flush=True)
            close_failed_sweep()
            raise SystemExit(EXIT_USER_ERROR) from None
        except Exception:  # a bug: its traceback, and no sweep
            traceback.print_exc()
            close_failed_sweep()
            raise SystemExit(1) from None

    def _start(self, config: DictConfig) -> None:
        check_sweep_config(config)  # before the sweep dir, any job dir or MLflow run
        # jobs of an earlier launch still out: nothing is submitted, no run touched
        refuse_beside_orphans(config.hydra.launcher, str(config.hydra.sweep.dir))
        wait_for_workers(Path(config.hydra.sweep.dir), self._grace_s)
        warn_unbounded_launcher(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        announce_launcher(self._poll_s, self._grace_s, sweep_dir)  # workers stop with us
        sweep_dir.mkdir(parents=True, exist_ok=True)
        for earlier_try in (FAILED_DIR, LOST_DIR):
            shutil.rmtree(sweep_dir / earlier_try, ignore_errors=True)
        earlier = _earlier_sweep(sweep_dir / SWEEP_FILE)
        sweep_id = earlier.get("sweep_id", str(sweep_dir))
        parent_id = earlier.get("parent_run_id")
        experiment = earlier.get("experiment") or (  # a re-run keeps its sweep's experiment
            str(config.tracking.experiment) if parent_id else study_experiment(config))
        if config.tracking.enabled:
            parent_id = self._open_parent(config, sweep_id, parent_id, experiment)
        atomic_write(sweep_dir / SWEEP_FILE, json.dumps(
            {"sweep_id": sweep_id, "parent_run_id": parent_id, "experiment": experiment}))

    def _open_parent(self, config: DictConfig, sweep_id: str, parent_id: str | None,
                     experiment: str) -> str:
        """Create the sweep's parent run (or restart it on a re-run); its id."""
        from al_sim.tracking.store import experiment_of, restart_run, start_parent_run

        launch_dir = Path(os.getcwd())
        uri = tracking_uri(config.tracking.uri, launch_dir)
        if parent_id:  # a re-run of this sweep dir: its jobs stay under the same parent
            restart_run(uri, parent_id)
        else:
            artifacts = default_artifact_location(config.tracking.artifact_location,
                                                  launch_dir, uri)
            parent_id = start_parent_run(uri, experiment, artifacts,
                                         name=f"sweep {sweep_id}",
                                         tags={SWEEP_ID_TAG: sweep_id, ROLE_TAG: SWEEP_ROLE,
                                               "strategy": SWEEP_STRATEGY},
                                         configured=bool(config.tracking.artifact_location))
        self._parent = open_parent(uri, parent_id)
        self._experiment_id = experiment_of(uri, parent_id)
        self._experiment = experiment
        return parent_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed_dir = sweep_dir / FAILED_DIR
        failures = sorted(failed_dir.glob("*.txt")) if failed_dir.exists() else []
        lost = lost_jobs(sweep_dir)
        listing = "; ".join(f"job {num} [{name}]: {why}" for num, name, why in lost)
        if (parent := self._parent) is not None:
            from al_sim.tracking.store import end_run, tag_run

            self._log_summaries()
            try:  # the jobs' own results and the exit status below must not depend on it
                tag_run(parent.uri, parent.run_id, LOST_JOBS_TAG, listing[:5000] if lost else None)
                end_run(parent.uri, parent.run_id,
                        status="FAILED" if failures or lost else "FINISHED")
            except ALSimError as exc:
                print(f"note: the sweep's parent MLflow run {parent.run_id} could not be "
                      f"closed ({exc}); it stays RUNNING until the sweep runs again",
                      file=sys.stderr, flush=True)
            close_parent()
        print(f"sweep results: {sweep_dir.resolve()} (one dir per job)", file=sys.stderr,
              flush=True)
        if self._parent is not None:
            hint = where_to_look(self._parent.uri, self._experiment_id,
                                 ui_port=config.tracking.get("ui_port"),
                                 compared=self._job_runs())
            print(f"  parent {hint}\n"
                  f"  next: python -m al_sim.compare sweep_id={config.hydra.sweep.dir}",
                  file=sys.stderr, flush=True)
        if lost:
            print(f"error: {len(lost)} sweep job(s) lost, their MLflow runs KILLED ({listing}); "
                  "run the same command again to resume them", file=sys.stderr, flush=True)
        if failures:
            print(f"error: {len(failures)} sweep job(s) failed:", file=sys.stderr)
            for path in failures:
                overrides, message = (path.read_text().splitlines() + ["", ""])[:2]
                print(f"  job {path.stem} [{overrides}]: {message}", file=sys.stderr)
            sys.exit(EXIT_SWEEP_FAILED)
        if lost:
            sys.exit(EXIT_JOBS_LOST)

    def _job_runs(self) -> list[str]:
        """The sweep's job runs (for the compare link); none when the store cannot say."""
        from al_sim.tracking.store import child_run_ids

        assert self._parent is not None
        try:
            return child_run_ids(self._parent.uri, self._experiment_id, self._parent.run_id,
                                 ROLE_TAG)
        except ALSimError:
            return []

    def _log_summaries(self) -> None:
        """One summary run per strategy (mean ± std curves) under the parent; never fatal."""
        from al_sim.report.summary_runs import log_sweep_summaries

        assert self._parent is not None
        try:
            ids = log_sweep_summaries(self._parent.uri, self._experiment, self._parent.run_id)
        except ALSimError as exc:
            print(f"warning: no summary runs for the sweep: {exc}", file=sys.stderr)
            return
        if ids:
            print(f"logged {len(ids)} summary run(s) (mean ± std per strategy) under MLflow run "
                  f"{self._parent.run_id}")
