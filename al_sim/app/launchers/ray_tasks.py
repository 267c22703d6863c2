"""A Ray launcher that waits for each task on its own.

hydra-ray-launcher calls ``ray.get`` on the tasks in order and raises at the first lost
one (``NodeDiedError``, ``WorkerCrashedError``): a traceback, exit 1, every run left
RUNNING. Here a task that ends with a Ray error is reported lost (:mod:`al_sim.app.lost_jobs`)
while the others run on, and an interrupted launcher cancels the tasks it started. A
relative ``hydra.sweep.dir`` is the launch dir's, not the Ray node's working directory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from al_sim.app.launchers.common import (
    cancelled_on_interrupt,
    in_order,
    job_refs,
    launcher_settings,
    sweep_dir,
    unfinished,
)
from al_sim.app.lost_jobs import JobRef, report_lost
from al_sim.runtime.errors import ClusterError
from al_sim.tracking.contract import CLIENT_TOKEN_ENV

# what MLflow's client authenticates with, carried to Ray's workers when set here
CREDENTIALS = (CLIENT_TOKEN_ENV, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
RAY_CLIENT = "ray://"  # Ray Client addresses connect through their own protocol and checks
RAY_FIX = ("start it (ray start --head), set RAY_ADDRESS=<head host>:<port> "
           "(hydra.launcher.ray.init.address), or run here with hydra/launcher=al_joblib")

# A started task and the jobs it runs (indices into the batch); its result as their returns.
Returns = Callable[[Any], dict[int, JobReturn]]


def with_credentials(init: DictConfig) -> DictConfig:
    """``ray.init``'s settings with the MLflow credentials of this shell (the server's token,
    a basic-auth login) added to the job's ``runtime_env.env_vars``: Ray's workers have the
    environment of ``ray start``, not of the sweep's command. A value set there is kept."""
    found = {k: os.environ[k] for k in CREDENTIALS if os.environ.get(k)}
    if not found:
        return init
    given = OmegaConf.select(init, "runtime_env.env_vars")
    own = dict(given) if isinstance(given, DictConfig) else {}
    merged = OmegaConf.merge(init, {"runtime_env": {"env_vars": {**found, **own}}})
    assert isinstance(merged, DictConfig)
    return merged


class AlRayLauncher(RayLauncher):
    """``hydra/launcher=al_ray``."""

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        poll_s, _, connect_s = launcher_settings(self.config)
        folder = sweep_dir(self.config)
        batch = job_refs(self.config, self.hydra_context, job_overrides, initial_job_idx)
        refs = unfinished(batch)
        if not refs:
            return in_order(batch)
        address = self.ray_cfg.init.get("address")
        check_ray_address(address, connect_s)
        try:
            start_ray(with_credentials(self.ray_cfg.init))
        except ConnectionError as exc:  # ray.init's "no running Ray instance" (address auto)
            raise ClusterError(f"no Ray cluster to join at {address} ({exc}); {RAY_FIX}") from exc
        tasks = self._start(refs, folder)

        def cancel() -> list[JobRef]:
            for task in tasks:
                ray.cancel(task, force=True)
            return [refs[i] for unit, _ in tasks.values() for i in unit]

        with cancelled_on_interrupt(cancel, "Ray tasks"):
            results = _wait(tasks, refs, folder, poll_s)
        return in_order(batch, refs, results)

    def job_config(self, ref: JobRef, folder: Path) -> DictConfig:
        """A job's config as it runs on a node: absolute sweep dir, its number and id."""
        assert self.config is not None and self.hydra_context is not None
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                     list(ref.overrides))
        with open_dict(job_cfg):
            job_cfg.hydra.sweep.dir = str(folder.resolve())  # not the node's cwd
            job_cfg.hydra.job.id = f"job_id_for_{ref.num}"
            job_cfg.hydra.job.num = ref.num
        return job_cfg

    def _start(self, refs: list[JobRef], folder: Path) -> dict[Any, tuple[list[int], Returns]]:
        """One Ray task per job."""
        from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray

        # set by Hydra's setup() before launching
        assert self.task_function is not None and self.hydra_context is not None
        tasks: dict[Any, tuple[list[int], Returns]] = {}
        for i, ref in enumerate(refs):
            print(f"\t#{ref.num} : {' '.join(filter_overrides(ref.overrides))}", flush=True)
            task = launch_job_on_ray(self.hydra_context, self.ray_cfg.remote,
                                     self.job_config(ref, folder), self.task_function,
                                     Singleton.get_state())
            tasks[task] = ([i], _one(i))
        return tasks


def check_ray_address(address: object, timeout_s: float) -> None:
    """ClusterError, with the fix, when the Ray head at ``host:port`` does not accept a
    connection in ``timeout_s`` (ray.init would wait on it for minutes). ``auto`` (ray.init
    says at once when no cluster runs here), ``local``, none and ``ray://`` pass."""
    text = str(address or "").strip()
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or text.startswith(RAY_CLIENT):
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as exc:
        raise ClusterError(f"the Ray cluster at {text} cannot be reached in {timeout_s:g} s "
                           f"({exc}); {RAY_FIX}") from exc


def _one(i: int) -> Returns:
    """The result of job ``i``'s own task."""
    def returns(value: Any) -> dict[int, JobReturn]:
        return {i: value}
    return returns


def _wait(tasks: dict[Any, tuple[list[int], Returns]], refs: list[JobRef], folder: Path,
          poll_s: float) -> dict[int, JobReturn]:
    """Each task's result as it ends; a task lost with its worker or node is reported (each
    job it ran)."""
    import ray
    from ray.exceptions import RayError

    results: dict[int, JobReturn] = {}
    while tasks:
        ready, _ = ray.wait(list(tasks), num_returns=1, timeout=poll_s)
        for task in ready:
            unit, returns = tasks.pop(task)
            try:
                results.update(returns(ray.get(task)))
            except RayError as exc:
                first = next((line for line in str(exc).splitlines() if line.strip()), "")
                what = "" if len(unit) == 1 else f" (its stack's {len(unit)} jobs)"
                for i in unit:
                    report_lost(folder, refs[i], f"Ray task {type(exc).__name__}: {first}{what}")
                    results[i] = refs[i].returned()
    return results
