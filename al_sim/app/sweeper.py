"""Hydra's basic sweeper with each job's config composed once per sweep (al_sim's default).

Hydra composes a sweep job's config from the config files each time it is asked (about 0.1 s
of CPU for al_sim's groups): the basic sweeper once to check the batch, al_sim's launchers
again to skip finished jobs and to plan stacks, and a launcher that runs jobs in its own
process a last time. Here the first composition of a job is kept (its config files do not
change while the sweep runs) and every later request gets a copy of it, so each caller may
change its copy as before. ``kept_configs`` bounds the memory (about 0.2 MB a config): jobs
past it are composed at each use, as Hydra does. The loader a worker process gets keeps none.
"""

from __future__ import annotations

import copy
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigSource
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig

from al_sim.runtime.errors import ConfigError


class ComposedOnce(ConfigLoader):
    """A config loader that composes each sweep job's config once and hands out copies;
    everything else is the loader it wraps."""

    def __init__(self, loader: ConfigLoader, kept_configs: int = 0) -> None:
        self._loader, self._room = loader, kept_configs
        self._composed: dict[tuple[int, tuple[str, ...]], tuple[DictConfig, DictConfig]] = {}

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        """The job's config as the wrapped loader composes it, a copy of its first result."""
        key = (id(master_config), tuple(sweep_overrides))
        kept = self._composed.get(key)
        if kept is not None and kept[0] is master_config:
            return copy.deepcopy(kept[1])
        config = self._loader.load_sweep_config(master_config, list(sweep_overrides))
        if len(self._composed) < self._room:
            # kept with the master config, whose id then cannot become another config's
            self._composed[key] = (master_config, copy.deepcopy(config))
        return config

    def load_configuration(self, config_name: str | None, overrides: list[str],
                           run_mode: RunMode, from_shell: bool = True,
                           validate_sweep_overrides: bool = True) -> DictConfig:
        return self._loader.load_configuration(config_name, overrides, run_mode, from_shell,
                                               validate_sweep_overrides)

    def get_search_path(self) -> ConfigSearchPath:
        return self._loader.get_search_path()

    def get_sources(self) -> list[ConfigSource]:
        return self._loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self._loader.list_groups(parent_name)

    def get_group_options(self, group_name: str,
                          results_filter: ObjectType | None = ObjectType.CONFIG,
                          config_name: str | None = None,
                          overrides: list[str] | None = None) -> list[str]:
        return self._loader.get_group_options(group_name, results_filter, config_name,
                                              overrides)

    def compute_defaults_list(self, config_name: str | None, overrides: list[str],
                              run_mode: RunMode) -> Any:
        return self._loader.compute_defaults_list(config_name, overrides, run_mode)

    def __reduce__(self) -> tuple[type, tuple[ConfigLoader]]:
        return ComposedOnce, (self._loader,)  # a worker composes its job once: keeps none


class AlBasicSweeper(Sweeper):
    """``hydra/sweeper=al_basic``: the basic sweeper's grid and batches; its launcher shares
    the configs it composed."""

    def __init__(self, max_batch_size: int | None, kept_configs: int,
                 params: dict[str, str] | None = None) -> None:
        # Looked up now, not at import: Hydra's plugin scan executes its core plugins' modules
        # again, and BasicSweeper's super() names the class its module holds at the call.
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        if isinstance(kept_configs, bool) or not isinstance(kept_configs, int) or kept_configs < 0:
            raise ConfigError(f"hydra.sweeper.kept_configs={kept_configs!r} is not a number of "
                              "job configs; set hydra.sweeper.kept_configs=256 (0 keeps none)")
        self.basic, self.kept_configs = BasicSweeper(max_batch_size, params), kept_configs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        shared = HydraContext(
            config_loader=ComposedOnce(hydra_context.config_loader, self.kept_configs),
            callbacks=hydra_context.callbacks)
        self.basic.setup(hydra_context=shared, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.basic.sweep(arguments)
