"""A config that does not compose, or has keys its schema lacks: the one line a user reads.

A typo'd override (``budget.round=3``) fails Hydra's composition, whose message suggests
appending it (``+budget.round=3``); appended, it composed and the run ignored it. Both end
here as one line naming the key, the closest real one and the node's keys.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra.errors import HydraException, OverrideParseException
from omegaconf import BooleanNode, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from al_sim.runtime.errors import ALSimError, ConfigError

HYDRA = "hydra"  # Hydra's own node at the top of a config being composed: not al_sim's to check
RUN_CONFIG = "conf/config.yaml"  # the top-level file of python -m al_sim.run
TARGET = "_target_"  # a node that builds a strategy, model or sink: its keys are the knobs

# OmegaConf's debugging lines and Hydra's search path: said to a developer, not to a user
_NOT_FOR_USERS = ("full_key:", "reference_type=", "object_type=")
_SEARCH_PATH = "Config search path:"


def one_line(text: str) -> str:
    """A Hydra or OmegaConf message as one line: an indented list under a ``...:`` header
    joined onto it (``Available options in 'strategy': badge, bald, ...``), the rest by
    ``; ``, the debugging details and Hydra's config search path left out."""
    parts: list[str] = []
    listing = False
    for raw in text.split(_SEARCH_PATH)[0].splitlines():
        line = raw.strip()
        if not line or line.startswith(_NOT_FOR_USERS):
            continue
        if listing and raw[:1] in (" ", "\t"):
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            continue
        parts.append(line)
        listing = line.endswith(":")
    return "; ".join(parts)


def unknown_key_message(path: str, known: Iterable[object], table: bool = False,
                        top: str = RUN_CONFIG) -> str:
    """``path`` is not a key of its node, whose keys are ``known``; ``table``: the node is
    an open table that takes new entries (with ``+``); ``top``: the top-level config file."""
    parent, _, key = path.rpartition(".")
    names = sorted(str(k) for k in known
                   if not str(k).startswith("_") and (parent or str(k) != HYDRA))
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    where = f"{parent} has" if parent else "the config has"
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    parts = path.split(".")
    group = (top if not parent else
             f"conf/{'/'.join(parts[:2 if parts[0] == HYDRA and len(parts) > 2 else 1])}/")
    keys = f"its keys: {', '.join(names)}; " if names else ""
    add = f"; a new entry is added with +{path}=<value>" if table else ""
    return (f"{path} is not a setting: {where} no key '{key}' ({group}); {hint}{keys}"
            f"fix or drop the override{add}")


def unknown_keys(node: DictConfig, path: str = "", skip: Collection[str] = ()
                 ) -> Iterator[tuple[str, list[str]]]:
    """(dotted key, the node's keys) for every key of a dataclass-typed node, at any depth,
    that its dataclass does not declare (added with ``+``); the top-level keys in ``skip`` (and
    Hydra's own node) are not looked into."""
    kind = OmegaConf.get_type(node)
    declared = [f.name for f in dataclasses.fields(kind)] \
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None
    for key in node:
        name = str(key)
        if not path and (name == HYDRA or name in skip):
            continue
        if declared is not None and name not in declared:
            yield f"{path}{name}", declared
        child = node._get_node(name)  # the node itself: its value may be an interpolation
        if isinstance(child, DictConfig):
            yield from unknown_keys(child, f"{path}{name}.")


def check_known_keys(node: DictConfig, path: str = "", top: str = RUN_CONFIG,
                     skip: Collection[str] = ()) -> None:
    """ConfigError naming the first key ``node`` (at ``path``) has that its schema lacks;
    ``skip``: top-level groups checked elsewhere, or per job."""
    for key, known in unknown_keys(node, f"{path}." if path else "", skip):
        raise ConfigError(unknown_key_message(key, known, top=top))


def composition_error_line(exc: BaseException, top: str = RUN_CONFIG) -> str | None:
    """The ``error:`` line for a config Hydra or OmegaConf refused (an unknown key, option or
    ill-typed value); None when ``exc`` is not one of theirs."""
    if not isinstance(exc, HydraException | OmegaConfBaseException):
        return None
    inner = exc.__cause__
    while inner is not None:  # our own refusal, wrapped by Hydra's instantiate: ours alone
        if isinstance(inner, ALSimError):
            return f"error: {inner}"
        inner = inner.__cause__
    if (unknown := _override_key_message(exc, top)) is not None:
        return f"error: {unknown}"
    if isinstance(exc, OverrideParseException):  # Hydra's message names no override
        return (f"error: cannot parse the override {exc.override!r} "
                f"({one_line(exc.message).split('; See https')[0]}); give one key=value per "
                "argument and quote a value holding spaces or brackets, e.g. "
                "'budget.stop_when=\"kappa>=0.99\"'")
    cause = exc.__cause__
    extra = f"\n{cause}" if cause and str(cause) not in str(exc) else ""
    key = getattr(cause, "full_key", None) or getattr(exc, "full_key", None)
    fix = f"; fix the value of {key}" if key else ""
    return f"error: {one_line(f'{exc}{extra}')}{fix}"


def _override_key_message(exc: BaseException, top: str) -> str | None:
    """Hydra's "Could not override" of a key the config lacks, in our words; else None."""
    cause = exc.__cause__
    if not isinstance(cause, ConfigKeyError | ConfigAttributeError):
        return None
    parent, path = getattr(cause, "parent_node", None), getattr(cause, "full_key", None)
    if not isinstance(parent, DictConfig) or not path:
        return None
    kind = OmegaConf.get_type(parent)
    typed = isinstance(kind, type) and dataclasses.is_dataclass(kind)
    return unknown_key_message(str(path), parent.keys(), top=top,
                               table=not typed and TARGET not in parent)


BOOL_WORDS = ("true", "false", "yes", "no", "y", "n", "on", "off", "1", "0")  # OmegaConf: bools


def _reads_as_bool(value: object) -> bool:
    """Whether ``value`` is a true/false value: a bool, 0/1 or a bool word; null and an
    interpolation are left to OmegaConf's own checks when the value is read."""
    if value is None or isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return True
    return isinstance(value, str) and ("${" in value or value.lower() in BOOL_WORDS)


def _is_bool_knob(config: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` is a true/false setting of ``config`` (not a group's choice,
    an appended key or one ``config`` lacks)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent, default=None) if parent else config
    return isinstance(node, DictConfig) and leaf in node and \
        isinstance(node._get_node(leaf), BooleanNode)


def check_bool_overrides(config: DictConfig, overrides: Iterable[str]) -> None:
    """ConfigError for an override giving a true/false setting anything but a bool word or
    0/1 (each value of a sweep too): OmegaConf reads any other integer, ``2`` or ``-1``, as
    true, so a mistyped value would run silently."""
    for key, value, given in non_bool_values(overrides):
        if _is_bool_knob(config, key):
            raise ConfigError(f"{key} is true or false, got {value!r} ({given}); set "
                              f"{key}=true or {key}=false")


def non_bool_values(overrides: Iterable[str]) -> Iterator[tuple[str, object, str | None]]:
    """(key, value, the override as given) of each value the overrides give that does not
    read as true/false, each value of a sweep too (an interval aside: a search space of
    floats, Hydra's sweeper refuses it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_delete() or override.is_interval_sweep():
            continue
        values = list(override.sweep_iterator()) if override.is_sweep_override() \
            else [override.value()]
        for value in values:
            if not _reads_as_bool(value):
                yield override.key_or_group, value, override.input_line


def swept_keys(overrides: Iterable[str]) -> set[str]:
    """The keys (a group's choice: the group) whose value the overrides sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group.partition("@")[0]
            for o in OverridesParser.create().parse_overrides(list(overrides))
            if o.is_sweep_override()}


def chosen_files(sources: Iterable[Any], choices: Mapping[str, Any], config_name: str | None
                 ) -> list[tuple[Path, str]]:
    """(file, package) of each config file on disk a composed run read: the primary config
    and each group's chosen option in Hydra's file search path (``hydra.runtime``)."""
    found = []
    wanted = [("", config_name)] if config_name else []
    wanted += [(str(g), str(c)) for g, c in choices.items()
               if c is not None and not str(g).startswith("_")]
    for source in sources:
        if source.get("schema") != "file":
            continue
        for group, choice in wanted:
            path = Path(str(source.get("path"))) / group / f"{choice}.yaml"
            if path.is_file():
                name = group.partition("@")[0]
                found.append((path, group.partition("@")[2] or name.replace("/", ".")))
    return found


def files_read(hydra: Any) -> list[tuple[Path, str]]:
    """:func:`chosen_files` of a composed config's Hydra node (``cfg.hydra`` or
    ``HydraConfig.get()``)."""
    return chosen_files(hydra.runtime.config_sources, hydra.runtime.choices,
                        hydra.job.config_name)


def check_bool_files(config: DictConfig, files: Iterable[tuple[Path, str]]) -> None:
    """ConfigError for a true/false setting a config file gives anything but a bool word or
    0/1, as :func:`check_bool_overrides` does for the command line (``enabled: 2`` in a
    YAML file was read as true too)."""
    for path, key, value in non_bool_file_values(files):
        if _is_bool_knob(config, key):
            raise ConfigError(f"{key} is true or false, got {value!r} in {path}; write "
                              f"true or false there")


def non_bool_file_values(files: Iterable[tuple[Path, str]]
                         ) -> Iterator[tuple[Path, str, object]]:
    """(file, dotted key, value) of each value the config files give that does not read as
    true/false, each key under the file's package."""
    import yaml

    for path, package in files:
        try:
            text = path.read_text()
            raw = yaml.safe_load(text)
        except (OSError, yaml.YAMLError):
            continue  # Hydra read it: its own errors are said where it reads it
        header = next((line.split("@package", 1)[1].strip() for line in text.splitlines()[:5]
                       if line.startswith("#") and "@package" in line), None)
        base = "" if header == "_global_" else package if header in (None, "_group_") \
            else header
        for key, value in _leaves(raw, base):
            if not _reads_as_bool(value):
                yield path, key, value


def _leaves(raw: object, prefix: str, top: bool = True) -> Iterator[tuple[str, object]]:
    """(dotted key, value) of each non-mapping value in a YAML file's mapping (its defaults
    list aside)."""
    if not isinstance(raw, dict):
        return
    for key, value in raw.items():
        if top and key == "defaults":
            continue
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from _leaves(value, full, top=False)
        else:
            yield full, value
