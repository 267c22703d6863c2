"""A sweep job's settings as its run records them, and whether that run already finished.

A sweep run again (after lost jobs, a time limit, Ctrl-C) has jobs whose run finished: each
would start, import its libraries and, on a cluster, wait in the queue and hold a node, only
to say it is skipped. Its launcher asks here first, with the job's config composed as the job
would compose it: a job is not started when its run dir holds a finished checkpoint of the
same settings and ``resume`` is not ``false``, which is exactly when the job would skip itself.
Anything else (no checkpoint, other settings, an unreadable file) is left to the job to say.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from al_sim.app.sweep_callback import sweep_context
from al_sim.config.registry import flat_params, validate
from al_sim.tracking.contract import CHECKPOINT_FILE


def in_study_experiment(cfg: DictConfig) -> None:
    """Put a sweep job's run in the study's MLflow experiment, when the sweep chose one."""
    sweep = sweep_context()
    if sweep is not None and sweep.experiment and cfg.tracking.experiment != sweep.experiment:
        with open_dict(cfg):
            cfg.tracking.experiment = sweep.experiment


def job_params(cfg: DictConfig, overrides: Sequence[str] = (),
               files: Sequence[tuple[Path, str]] = ()) -> dict[str, str]:
    """A run's config checked (:func:`~al_sim.config.registry.validate`, which types the
    strategy and model from their constructors) and in its study's experiment, as the flat
    settings its run records and its checkpoint fingerprints."""
    in_study_experiment(cfg)
    validate(cfg, overrides, files)
    return flat_params(cfg)


def finished_run_dir(job_cfg: DictConfig) -> Path | None:
    """The job's run dir when it holds the finished run of these settings, else None.

    ``job_cfg``: the job's composed config, ``hydra`` node included, its number set."""
    run_dir = (Path(str(job_cfg.hydra.sweep.dir)) / str(job_cfg.hydra.sweep.subdir)).absolute()
    if not (run_dir / CHECKPOINT_FILE).is_file() or str(job_cfg.resume).lower() == "false":
        return None
    from al_sim.sinks.checkpoint import finished_with  # torch: only for a sweep run again

    config = HydraConfig.instance()
    launcher_cfg = config.cfg
    task_cfg = copy.deepcopy(job_cfg)  # as Hydra's run_job hands it to the job
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    try:
        config.set_config(job_cfg)  # ${hydra:...} resolves as in the job
        params = job_params(task_cfg)
    except Exception:  # noqa: BLE001 - not valid or resolvable: the job says what it finds
        return None
    finally:
        config.cfg = launcher_cfg
    return run_dir if finished_with(run_dir / CHECKPOINT_FILE, params) else None
