"""Entry point: ``python -m al_sim.run [overrides]`` composes the config and runs one AL experiment.

Exit status: 0 on success, 2 on a user error (one ``error:`` line naming the
problem and the fix; the MLflow run marked FAILED), 130 on Ctrl-C (KILLED).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from threadpoolctl import threadpool_limits

from al_sim.artifacts import RunDirWriter
from al_sim.checkpoint import CHECKPOINT_FILE, AlreadyFinishedError, Checkpointer, find_resumable
from al_sim.config import flatten, instantiate, register_configs, validate
from al_sim.data.base import ALDataset
from al_sim.data.transforms import Preprocess
from al_sim.errors import ALSimError, ConfigError
from al_sim.loop import Callback, Seeds, run_active_learning
from al_sim.models import build_model
from al_sim.oracle import Oracle
from al_sim.progress import ProgressPrinter
from al_sim.strategies.base import Strategy
from al_sim.sweep import mark_job_failed, sweep_context
from al_sim.training import Trainer, resolve_device

log = logging.getLogger("al_sim")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

register_configs()


def run_name(cfg: DictConfig) -> str:
    """``<strategy>-<dataset>-seed<seed>`` as in the MLflow contract."""
    return f"{_strategy_tag(cfg)}-{cfg.dataset.name}-seed{cfg.seed}"


def _strategy_tag(cfg: DictConfig) -> str:
    return "full" if cfg.budget.full else str(cfg.strategy.name)


def build_dataset(cfg: DictConfig) -> ALDataset:
    """The configured dataset (``cfg.dataset._target_``)."""
    dataset = instantiate(cfg.dataset, _convert_="object")
    if not isinstance(dataset, ALDataset):
        raise ConfigError(f"dataset._target_={cfg.dataset._target_} did not return an ALDataset")
    return dataset


def build_strategy(cfg: DictConfig) -> Strategy:
    """The configured query strategy (``cfg.strategy._target_``)."""
    strategy = instantiate(cfg.strategy, _convert_="all")
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy._target_={cfg.strategy._target_} is not an al_sim Strategy")
    return strategy


def _tracker(cfg: DictConfig, launch_dir: Path, writer: RunDirWriter,
             params: dict[str, str]) -> Callback | None:
    if not cfg.tracking.enabled:
        return None
    from al_sim.tracking import MLflowTracker, default_uri

    sweep = sweep_context()
    tags = {"strategy": _strategy_tag(cfg), "dataset": str(cfg.dataset.name),
            "model": str(cfg.model.name), "seed": str(cfg.seed), "budget": str(cfg.budget.name)}
    if sweep is not None:
        tags["sweep_id"] = sweep.sweep_id
    artifact_location = cfg.tracking.artifact_location or (launch_dir / "mlartifacts").as_uri()
    return MLflowTracker(
        uri=cfg.tracking.uri or default_uri(launch_dir),
        experiment=cfg.tracking.experiment,
        run_name=run_name(cfg),
        tags=tags,
        params=params,
        writer=writer,
        artifact_location=artifact_location,
        parent_run_id=None if sweep is None else sweep.parent_run_id,
        retries=cfg.tracking.retries,
    )


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


def execute(cfg: DictConfig, run_dir: Path, launch_dir: Path, parallel_jobs: int = 1) -> float:
    """Run one experiment from a composed config (or continue it); returns its AULC."""
    validate(cfg)
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    previous = find_resumable(run_dir, str(cfg.resume).lower(), params)
    run_dir.mkdir(parents=True, exist_ok=True)
    if previous is None:  # a stale checkpoint must not outlive a restart
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    config_yaml = run_dir / "config.yaml"
    config_yaml.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    threads = job_threads(cfg.trainer.num_threads, parallel_jobs)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # numpy/BLAS too (core-set, BADGE, metrics)
    writer = RunDirWriter(run_dir, grids=cfg.tracking.query_grids,
                          max_grid_images=cfg.tracking.max_grid_images, title=run_name(cfg))
    progress = ProgressPrinter(run_name(cfg), enabled=cfg.progress)
    checkpointer = Checkpointer(run_dir, params)
    tracker = _tracker(cfg, launch_dir, writer, params)
    if tracker is not None:
        if previous is not None and previous.run_id:
            checkpointer.run_id = tracker.resume(previous.run_id, config_yaml)
        else:
            checkpointer.run_id = tracker.start(config_yaml)
    if previous is not None:
        checkpointer.on_checkpoint(previous.state)  # now carrying this attempt's run id
        log.info("resuming %s after round %d", run_dir, previous.state.round)
    try:
        dataset = build_dataset(cfg)
        preprocess = Preprocess(OmegaConf.to_object(cfg.dataset.preprocess),
                                channels=dataset.image_shape[0])
        trainer = Trainer(OmegaConf.to_object(cfg.trainer), preprocess,
                          resolve_device(cfg.trainer.device))
        strategy = build_strategy(cfg)
        oracle = Oracle(dataset.pool_y, dataset.n_classes, cfg.oracle.noise_rate,
                        seed=Seeds.derive(cfg.seed).oracle)

        def model_factory(seed: int):  # noqa: ANN202
            return build_model(cfg.model, dataset.image_shape[0], dataset.n_classes, seed)

        if previous is not None:
            writer.restore(previous.state.result, dataset)
            progress.skip(len(previous.state.result.rounds))
        callbacks = [writer, *([tracker] if tracker else []), progress, checkpointer]
        result = run_active_learning(dataset, model_factory, strategy, oracle, trainer,
                                     OmegaConf.to_object(cfg.budget), cfg.seed, callbacks,
                                     resume=None if previous is None else previous.state)
    except KeyboardInterrupt:
        progress.close()
        if tracker is not None:
            tracker.end_unfinished("KILLED", "interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        progress.close()
        if tracker is not None:
            tracker.end_unfinished("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    return result.aulc


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: one run, or one job of a sweep."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    launch_dir = Path(hydra.utils.get_original_cwd())
    np.set_printoptions(precision=4)
    try:
        return execute(cfg, run_dir, launch_dir, _parallel_jobs())
    except AlreadyFinishedError as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            print(f"skipped: {exc}", file=sys.stderr, flush=True)
            return None
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except ALSimError as exc:
        message = f"error: {exc}"
        log.error(message)
        print(message, file=sys.stderr, flush=True)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            mark_job_failed(message)
            return None
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted: the MLflow run is marked KILLED", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def cli() -> None:
    """``python -m al_sim.run``: Hydra's errors and OS errors as one ``error:`` message."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let them reach us instead of a trace
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        cause = f"\n{exc.__cause__}" if exc.__cause__ and str(exc.__cause__) not in str(exc) else ""
        print(f"error: {exc}{cause}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check that the path exists and is writable "
              "(hydra.run.dir / hydra.sweep.dir for output dirs)", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    cli()
