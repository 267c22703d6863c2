"""The schemas in Hydra's ConfigStore, and the checks a composed config passes before a run."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf, open_dict

from al_sim.config.annotators import PANEL, PanelOracleConf
from al_sim.config.composition import (
    check_bool_files,
    check_bool_overrides,
    check_known_keys,
    non_bool_file_values,
    non_bool_values,
    swept_keys,
)
from al_sim.config.data import (
    FolderDatasetConf,
    MedMNISTDatasetConf,
    SyntheticChestDatasetConf,
    SyntheticDatasetConf,
    SyntheticVolumeDatasetConf,
)
from al_sim.config.derive import locate, typed_node
from al_sim.config.human import HumanOracleConf
from al_sim.config.schema import (
    RESUME_MODES,
    BudgetConf,
    CompareConf,
    Config,
    OracleConf,
    TrackingConf,
    TrainerConf,
)
from al_sim.runtime.errors import ALSimError, ConfigError

T = TypeVar("T")

# Arguments a model receives from the data rather than from its config (input_size: the
# image side, given only to models whose constructor takes it).
MODEL_SUPPLIED = ("in_channels", "n_classes", "input_size")
ENABLED = "enabled"  # a callback node with enabled: false is not built
STRATEGY_CONF = Path(__file__).resolve().parents[2] / "conf" / "strategy"  # the built-in ones


SCHEMA_GROUPS = ("dataset", "budget", "trainer", "tracking", "oracle")  # dataclass-typed
SCHEMAS = "_schemas"  # schemas live in their own groups: never listed among a group's options


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore and al_sim's resolvers (idempotent)."""
    from hydra.core.config_store import ConfigStore

    # ${al_sim.pid:} in conf/config.yaml's hydra.run.dir: runs started in the same second
    # (a shell loop with &) get their own dirs; cached, so one process names one dir
    OmegaConf.register_new_resolver("al_sim.pid", lambda: str(os.getpid()), use_cache=True,
                                    replace=True)

    cs = ConfigStore.instance()
    cs.store(name="_schema", node=Config)
    cs.store(group=f"{SCHEMAS}/dataset", name="synthetic", node=SyntheticDatasetConf)
    cs.store(group=f"{SCHEMAS}/dataset", name="synthetic_chest", node=SyntheticChestDatasetConf)
    cs.store(group=f"{SCHEMAS}/dataset", name="synthetic_volume",
             node=SyntheticVolumeDatasetConf)
    cs.store(group=f"{SCHEMAS}/dataset", name="medmnist", node=MedMNISTDatasetConf)
    cs.store(group=f"{SCHEMAS}/dataset", name="folder", node=FolderDatasetConf)
    cs.store(group=f"{SCHEMAS}/budget", name="budget", node=BudgetConf)
    cs.store(group=f"{SCHEMAS}/trainer", name="trainer", node=TrainerConf)
    cs.store(group=f"{SCHEMAS}/tracking", name="tracking", node=TrackingConf)
    cs.store(group=f"{SCHEMAS}/oracle", name="oracle", node=OracleConf)
    cs.store(group=f"{SCHEMAS}/oracle", name="panel", node=PanelOracleConf)
    cs.store(group=f"{SCHEMAS}/oracle", name="human", node=HumanOracleConf)
    cs.store(name="_compare_schema", node=CompareConf)


def _retype(cfg: DictConfig, key: str, node: DictConfig) -> None:
    with open_dict(cfg):
        cfg[key] = node


def validate_schemas(cfg: DictConfig, groups: Sequence[str] = SCHEMA_GROUPS) -> None:
    """The typed groups' own checks (types, ranges, data paths such as ``dataset.root``):
    cheap and without side effects, so they can run before Hydra makes the run dir. A key a
    group's schema lacks (appended with ``+``) is refused, not ignored."""
    for key in groups:
        node = cfg[key]
        check_known_keys(node, key)
        if OmegaConf.get_type(node) is not dict:  # an untyped group: its loader checks it
            OmegaConf.to_object(node)


def type_targets(cfg: DictConfig) -> None:
    """The strategy, the model and each enabled sink typed by their constructors' signatures
    (ConfigError for a knob a constructor lacks or a value of the wrong type)."""
    _retype(cfg, "strategy", typed_node(cfg.strategy, "strategy"))
    _retype(cfg, "model", typed_node(cfg.model, "model", MODEL_SUPPLIED))
    for key, node in enabled_nodes(cfg.get("callbacks")).items():  # a disabled sink is not read
        checked = typed_node(node, f"callbacks.{key}")
        if ENABLED in cfg.callbacks[key]:
            with open_dict(checked):
                checked[ENABLED] = True
        _retype(cfg.callbacks, key, checked)


def check_typed_bool_overrides(cfg: DictConfig, overrides: Sequence[str],
                               files: Sequence[tuple[Path, str]] = ()) -> None:
    """Before a sweep: :func:`check_bool_overrides` and :func:`check_bool_files` for the
    strategy's and model's own knobs, which only their constructors type. A group is typed
    (its module imported: torch, for the model) only when an override or a config file gives
    one of its keys a value that is not true/false, and not when its choice is swept (each
    job's class differs: each job checks)."""
    keys = {key for key, _, _ in non_bool_values(overrides)}
    keys |= {key for _, key, _ in non_bool_file_values(files)}
    groups = {key.partition(".")[0] for key in keys if "." in key}
    groups &= {"strategy", "model"} - swept_keys(overrides)
    if not groups:
        return
    view = OmegaConf.create({})
    for group in sorted(groups):
        view[group] = typed_node(cfg[group], group, MODEL_SUPPLIED if group == "model" else ())
    check_bool_overrides(view, overrides)
    check_bool_files(view, files)


def validate(cfg: DictConfig, overrides: Sequence[str] = (),
             files: Sequence[tuple[Path, str]] = ()) -> None:
    """Check every group (types, ranges); ConfigError names the field. ``overrides``: the
    command line's, ``files``: the config files read, (file, package) each; their true/false
    values are checked (typed nodes read 2 as true).

    Imports the strategy and model modules to read their signatures and builds
    each once, so their constructors' own checks run before any data is read.
    """
    check_known_keys(cfg, skip=SCHEMA_GROUPS)  # nothing appended is ignored; the typed
    validate_schemas(cfg)  # groups' keys are checked here
    type_targets(cfg)
    check_bool_files(cfg, files)  # the strategy's, model's and sinks' typed now too
    check_bool_overrides(cfg, overrides)
    # The constructors own the range checks: build each once (cheap: no data, no training).
    instantiate(cfg.strategy, _convert_="all")
    instantiate(cfg.model, in_channels=1, n_classes=2, _convert_="all")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {cfg.seed}; set seed=0")
    _check_names(cfg)
    _check_strategy_name(cfg.strategy)
    _check_cost_model(cfg)
    if str(cfg.resume).lower() not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {', '.join(RESUME_MODES)}, got {cfg.resume!r}; "
                          f"set resume={Config.resume}")


def _check_cost_model(cfg: DictConfig) -> None:
    """Knobs that need expert time per image need an oracle with a cost model (the panel)."""
    if cfg.oracle.name == PANEL:
        return
    if cfg.budget.get("cost_limit") is not None:
        raise ConfigError(f"budget.cost_limit counts expert seconds, but oracle={cfg.oracle.name} "
                          "has no cost model; use oracle=panel (a panel of one is one reader) "
                          "or set budget.cost_limit=null")
    if cfg.strategy.get("cost_aware"):
        raise ConfigError(f"strategy.cost_aware divides by an image's expected expert seconds, "
                          f"but oracle={cfg.oracle.name} has no cost model; use oracle=panel or "
                          "set strategy.cost_aware=false")


def _check_names(cfg: DictConfig) -> None:
    """The groups' names tag, name and group the runs (in MLflow and the report): not blank."""
    for group in ("dataset", "model", "strategy", "budget"):
        name = cfg[group].get("name")
        if isinstance(name, str) and not name.strip():
            raise ConfigError(f"{group}.name is blank, but runs are named, tagged and compared "
                              f"by it; give it a name or drop the {group}.name override")


@functools.cache
def _builtin_strategies() -> tuple[tuple[str, object, object], ...]:
    """(file stem, ``name``, ``_target_``) of each strategy file in ``conf/strategy``."""
    out = []
    for path in sorted(STRATEGY_CONF.glob("*.yaml")):
        known = OmegaConf.load(path)
        assert isinstance(known, DictConfig)  # a strategy file is a mapping
        out.append((path.stem, known.get("name"), known.get("_target_")))
    return tuple(out)


def _check_strategy_name(node: DictConfig) -> None:
    """``strategy.name`` may not name another built-in strategy than its ``_target_`` builds."""
    for stem, name, target in _builtin_strategies():
        if name == node.name and target != node._target_:
            raise ConfigError(
                f"strategy.name={node.name} is the name of {target}, but "
                f"strategy._target_={node._target_}; runs would be tagged and compared as "
                f"{node.name}: use strategy={stem}, or give this strategy its own name"
            )


def _without(node: DictConfig, key: str) -> DictConfig:
    values = OmegaConf.to_container(node, resolve=True)
    assert isinstance(values, dict)  # a DictConfig's container
    return OmegaConf.create({k: v for k, v in values.items() if k != key})


def enabled_nodes(group: DictConfig | None) -> dict[str, DictConfig]:
    """The nodes of a group of callbacks that are set and not ``enabled: false``, by key."""
    out = {}
    for name, node in (group or {}).items():
        key = str(name)
        if node is None:
            continue
        enabled = node.get(ENABLED, True)
        if not isinstance(enabled, bool):  # "no" or "off" would read as on
            raise ConfigError(f"callbacks.{key}.{ENABLED} must be true or false, got "
                              f"{enabled!r}; set callbacks.{key}.{ENABLED}=false")
        if enabled:
            out[key] = _without(node, ENABLED)
    return out


def flatten(tree: Mapping[Any, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists keep their string form."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat ``key -> string`` params (enums by name)."""
    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(values, dict)  # a DictConfig's container
    return flatten(values)


def to_object(node: DictConfig, schema: type[T]) -> T:
    """A validated config node as its schema's dataclass instance."""
    obj = OmegaConf.to_object(node)
    if not isinstance(obj, schema):
        raise ConfigError(f"{node._key()} is not a {schema.__name__} node; check its defaults list")
    return obj


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising al_sim's own errors as they are.

    Hydra wraps whatever a target raises; a user error from a loader must
    still reach the CLI as one clear line, and anything else surfaces as what
    the target raised (Hydra's "Error in call to target" is never the message).
    """
    import hydra
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, ALSimError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        if exc.__cause__ is not None and str(exc).startswith("Error in call to target"):
            raise exc.__cause__ from None  # what the target raised, not Hydra's wrapper around it
        if str(exc).startswith("Error locating target") and isinstance(node, DictConfig):
            locate(str(node.get("_target_")), where=node._get_full_key(None))  # says why
        raise
