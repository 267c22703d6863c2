"""The schemas in Hydra's ConfigStore, and the checks a composed config passes before a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from al_sim.config.data import FolderDatasetConf, MedMNISTDatasetConf, SyntheticDatasetConf
from al_sim.config.derive import typed_node
from al_sim.config.schema import (
    BudgetConf,
    CompareConf,
    Config,
    TrackingConf,
    TrainerConf,
)
from al_sim.errors import ALSimError, ConfigError

RESUME_MODES = ("auto", "true", "false")
# Arguments a model receives from the data rather than from its config (input_size: the
# image side, given only to models whose constructor takes it).
MODEL_SUPPLIED = ("in_channels", "n_classes", "input_size")
ENABLED = "enabled"  # a callback node with enabled: false is not built


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent); hidden ``_schema_*`` names."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="_schema", node=Config)
    cs.store(group="dataset", name="_schema_synthetic", node=SyntheticDatasetConf)
    cs.store(group="dataset", name="_schema_medmnist", node=MedMNISTDatasetConf)
    cs.store(group="dataset", name="_schema_folder", node=FolderDatasetConf)
    cs.store(group="budget", name="_schema_budget", node=BudgetConf)
    cs.store(group="trainer", name="_schema_trainer", node=TrainerConf)
    cs.store(group="tracking", name="_schema_tracking", node=TrackingConf)
    cs.store(name="_compare_schema", node=CompareConf)


def _retype(cfg: DictConfig, key: str, node: DictConfig) -> None:
    with open_dict(cfg):
        cfg[key] = node


def validate(cfg: DictConfig) -> None:
    """Check every group (types, ranges); ConfigError names the field.

    Imports the strategy and model modules to read their signatures and builds
    each once, so their constructors' own checks run before any data is read.
    """
    for key in ("dataset", "budget", "trainer", "tracking", "oracle"):
        node = cfg[key]
        if OmegaConf.get_type(node) is not dict:  # an untyped group: its loader checks it
            OmegaConf.to_object(node)
    _retype(cfg, "strategy", typed_node(cfg.strategy, "strategy"))
    _retype(cfg, "model", typed_node(cfg.model, "model", MODEL_SUPPLIED))
    # The constructors own the range checks: build each once (cheap: no data, no training).
    instantiate(cfg.strategy, _convert_="all")
    instantiate(cfg.model, in_channels=1, n_classes=2, _convert_="all")
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is not None:
            checked = typed_node(_without(node, ENABLED), f"callbacks.{key}")
            if ENABLED in node:
                with open_dict(checked):
                    checked[ENABLED] = node[ENABLED]
            _retype(cfg.callbacks, key, checked)
    if str(cfg.resume).lower() not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {', '.join(RESUME_MODES)}, got {cfg.resume!r}")


def _without(node: DictConfig, key: str) -> DictConfig:
    values = OmegaConf.to_container(node, resolve=True)
    return OmegaConf.create({k: v for k, v in values.items() if k != key})


def enabled_nodes(group: DictConfig | None) -> dict[str, DictConfig]:
    """The nodes of a group of callbacks that are set and not ``enabled: false``, by key."""
    out = {}
    for key, node in (group or {}).items():
        if node is not None and node.get(ENABLED, True):
            out[str(key)] = _without(node, ENABLED)
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
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
    return flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising al_sim's own errors as they are.

    Hydra wraps whatever a target raises; a user error from a loader must
    still reach the CLI as one clear line.
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
        raise
