"""What a sweep checks before it launches anything: its size, the groups it sweeps, the
settings its jobs share (appended keys a schema lacks, the shared dataset's paths), and a
local launcher that would start more jobs than cores.

A mistake every job shares is one ``error:`` line and exit 2 before the sweep dir, any job
or MLflow run exists, as a single run's is; a swept group's settings are checked per job.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys

from omegaconf import DictConfig, OmegaConf

from al_sim.app.launchers.common import check_n_jobs, check_time_limit
from al_sim.app.launchers.stack_plan import STACK_KNOBS
from al_sim.config.composition import (
    check_bool_files,
    check_bool_overrides,
    check_known_keys,
    files_read,
    unknown_key_message,
    unknown_keys,
)
from al_sim.config.derive import locate
from al_sim.config.registry import check_typed_bool_overrides, validate_schemas
from al_sim.runtime.errors import EXIT_USER_ERROR, ALSimError, ConfigError

log = logging.getLogger("al_sim")
LAUNCHER = "hydra.launcher"


def _sweep_overrides(config: DictConfig) -> list[str]:
    """The command line's overrides and ``hydra.sweeper.params`` the command line leaves."""
    given = list(config.hydra.overrides.task)
    params = config.hydra.sweeper.get("params") or {}
    given_keys = {o.split("=", 1)[0].lstrip("+~") for o in given}
    return given + [f"{k}={v}" for k, v in params.items() if k not in given_keys]


def sweep_size(config: DictConfig) -> int:
    """How many jobs the sweep's command line and ``hydra.sweeper.params`` make."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    size = 1
    for override in OverridesParser.create().parse_overrides(_sweep_overrides(config)):
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def swept_groups(overrides: list[str]) -> set[str]:
    """The top-level groups whose value or choice a sweep's overrides sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group.split(".")[0].split("/")[0]
            for o in OverridesParser.create().parse_overrides(overrides)
            if o.is_sweep_override()}


def check_no_repeats(overrides: list[str]) -> None:
    """A value swept twice (``seed=0,1,1``) would run the same job twice, and the report would
    count the copy as another seed: ConfigError naming the repeat."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            continue
        values = list(override.sweep_string_iterator())
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            key = override.get_key_element()
            raise ConfigError(f"the sweep repeats {', '.join(f'{key}={v}' for v in repeated)} "
                              f"({override.input_line}): the same job would run twice and "
                              "count twice in the report; drop the repeat")


def check_sweep_config(config: DictConfig) -> None:
    """The settings every job of the sweep shares, checked once before anything launches:
    no appended key a schema lacks (outside swept groups, whose schema may change per job),
    and the shared dataset's own checks (``dataset.root`` exists, ...)."""
    overrides = _sweep_overrides(config)
    swept = swept_groups(overrides)
    try:  # the dataset's keys: by validate_schemas below, with its other checks
        check_no_repeats(overrides)
        check_launcher(config.hydra.launcher)
        check_sweeper(config.hydra.sweeper)
        check_known_keys(config, skip={*swept, "dataset"})
        files = files_read(config.hydra)
        check_bool_overrides(config, overrides)
        check_bool_files(config, files)
        check_typed_bool_overrides(config, overrides, files)  # the strategy's and model's own
        if "dataset" not in swept:
            validate_schemas(config, groups=("dataset",))
    except ALSimError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    except Exception:  # noqa: BLE001 - e.g. a ${hydra:} value: the jobs' own checks report it
        pass


def check_launcher(launcher: DictConfig) -> None:
    """The worker count and time limit of any launcher that has them, Hydra's own joblib and
    submitit launchers included (else joblib's ValueError, or submitit jobs that all end
    without a result, after the sweep started)."""
    target = str(launcher.get("_target_", ""))
    stack = _built_on(target, "StackPlanner")  # its knobs are beside its base's schema
    for key, known in unknown_keys(launcher, f"{LAUNCHER}."):  # appended with +
        if not (stack and key.rpartition(".")[2] in STACK_KNOBS):
            raise ConfigError(unknown_key_message(key, known))
    if "n_jobs" in launcher:
        check_n_jobs(launcher.n_jobs)
    if _built_on(target, "JoblibLauncher"):  # Hydra's joblib launcher, al_joblib, al_stack
        if OmegaConf.get_type(launcher) is dict:  # no schema to have checked its keys
            _check_joblib_keys(launcher)
        _check_joblib_settings(launcher)
    if "timeout_min" in launcher:
        check_time_limit(launcher.timeout_min, launcher.get("signal_delay_s", 0),
                         slurm="slurm" in target.lower())


def check_sweeper(sweeper: DictConfig) -> None:
    """An untyped sweeper (al_sim's ``al_basic``) takes its constructor's keys: another one,
    appended with +, is named here, not a TypeError once the sweep has begun."""
    if OmegaConf.get_type(sweeper) is not dict:
        return  # a schema (Hydra's basic sweeper's) checked its keys
    try:
        cls = locate(str(sweeper.get("_target_", "")))
    except ConfigError:
        return  # Hydra names the sweeper it cannot find
    _refuse_unknown(sweeper, "hydra.sweeper", ["_target_", *inspect.signature(cls).parameters])


def _built_on(target: str, base_name: str) -> bool:
    """Whether the launcher class ``target`` is, or derives from, a class named ``base_name``."""
    try:
        cls = locate(target)
    except ConfigError:
        return False  # Hydra names the launcher it cannot find
    # by name: Hydra re-executes its plugin modules when it scans them, so the class that
    # al_sim's launchers subclass may not be the one importable now
    return any(base.__name__ == base_name for base in getattr(cls, "__mro__", ()))


def _check_joblib_keys(launcher: DictConfig) -> None:
    """An untyped launcher built on joblib's (al_stack) takes joblib's keys and the stack's:
    ConfigError for any other (joblib would pass it to its backend, which ignores it)."""
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    known = [f.name for f in dataclasses.fields(JobLibLauncherConf)] + list(STACK_KNOBS)
    _refuse_unknown(launcher, LAUNCHER, known)


def _refuse_unknown(node: DictConfig, path: str, known: list[str]) -> None:
    """ConfigError naming the first key of the untyped ``node`` (at ``path``) not in ``known``."""
    for key in map(str, node):
        if key not in known:
            raise ConfigError(unknown_key_message(f"{path}.{key}", known))


def _check_joblib_settings(launcher: DictConfig) -> None:
    """The joblib launcher's knobs as ``joblib.Parallel`` checks them when it is made (prefer,
    max_nbytes, backend, ...); ConfigError naming joblib's complaint."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel

    container = OmegaConf.to_container(launcher, resolve=True)
    assert isinstance(container, dict)
    settings = {str(k): v for k, v in container.items()
                if k != "_target_" and k not in STACK_KNOBS}  # the stack's own, checked apart
    process_joblib_cfg(settings)
    try:
        parallel = Parallel(**settings)
        _check_pre_dispatch(parallel.pre_dispatch, parallel.n_jobs)  # as joblib resolved them
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"a hydra.launcher setting is refused by joblib: "
                          f"{str(exc).rstrip('.')}; fix it "
                          "(conf/hydra/launcher/, or Hydra's joblib launcher docs)") from None


def _check_pre_dispatch(pre_dispatch: object, n_jobs: object) -> None:
    """``pre_dispatch`` as ``joblib.Parallel`` reads it only when it launches: ``all``, or a
    number or arithmetic of ``n_jobs`` (``'2*n_jobs'``) that comes to at least one job."""
    from joblib._utils import eval_expr  # joblib's own reader of pre_dispatch

    if pre_dispatch == "all":
        return
    amount = pre_dispatch
    if isinstance(pre_dispatch, str):
        workers = n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else os.cpu_count() or 1
        amount = eval_expr(pre_dispatch.replace("n_jobs", str(workers)))
    # joblib dispatches int(amount) jobs up front: below one, the sweep returns no job at all
    if isinstance(amount, bool) or not isinstance(amount, int | float) or int(amount) < 1:
        raise ValueError(f"pre_dispatch={pre_dispatch} must be 'all', or a number or an "
                         "expression of n_jobs such as '2*n_jobs' of at least 1")


def warn_unbounded_launcher(config: DictConfig) -> None:
    """submitit's local executor starts every job at once: say so when they outnumber cores."""
    if not str(config.hydra.launcher.get("_target_", "")).endswith((".LocalLauncher",
                                                                  ".AlLocalLauncher")):
        return
    jobs, cores = sweep_size(config), os.cpu_count() or 1
    if jobs > cores:
        log.warning("submitit_local starts all %d jobs at once on %d cores (it has no "
                    "array_parallelism); use hydra/launcher=joblib hydra.launcher.n_jobs=%d "
                    "to cap them", jobs, cores, cores)
