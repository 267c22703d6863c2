"""Schemas derived from constructor signatures: a class's keyword arguments are its knobs.

A strategy, a model or a callback states its knobs once, as typed keyword
arguments with defaults, and checks their ranges in its constructor. The
config node that builds it (``_target_`` plus knobs) is typed against that
signature here: unknown keys and ill-typed values fail with OmegaConf's
message, and knobs the YAML leaves out get the constructor's default.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import types
import typing
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from al_sim.runtime.errors import ConfigError

_SCALARS = (int, float, bool, str, Path)


def locate(target: str, where: str = "") -> Any:
    """The object a dotted ``_target_`` names; ConfigError naming it (as ``<where>._target_``)
    when it does not exist."""
    try:
        return _locate(target)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from exc.__cause__


def _locate(target: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"_target_={target} is not a dotted path to a class "
                          "(package.module.Class); check the module and class name")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"_target_={target} cannot be found ({exc}); check the module and "
                          "class name") from exc


def _node_type(hint: Any) -> Any:
    """The closest type OmegaConf can check for a Python type hint (``Any`` when none is)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SCALARS:
        return hint
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = [_node_type(a) for a in rest]
        if len(rest) == len(args):  # no None: a union of alternatives, e.g. list | tuple
            return inner[0] if len(set(map(str, inner))) == 1 else Any
        return typing.Optional[inner[0]] if len(inner) == 1 else Any  # noqa: UP045
    if origin in (list, tuple, typing.Sequence, Iterable) or hint in (list, tuple):
        item = _node_type(args[0]) if args else Any
        return list[item] if item in _SCALARS else list[Any]  # type: ignore[valid-type]  # a runtime type, for OmegaConf
    return Any


@cache
def signature_schema(target: str, supplied: tuple[str, ...] = ()) -> type:
    """A dataclass of ``target``'s keyword arguments (less those the caller ``supplied``)."""
    obj = locate(target)
    fn = obj.__init__ if inspect.isclass(obj) else obj
    hints = typing.get_type_hints(fn)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    for name, param in inspect.signature(obj).parameters.items():
        if name in supplied or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = MISSING if param.default is param.empty else param.default
        if isinstance(default, list | tuple):
            spec = dataclasses.field(default_factory=functools.partial(list, default))
        else:
            spec = dataclasses.field(default=default)
        fields.append((name, _node_type(hints.get(name, Any)), spec))
    return dataclasses.make_dataclass(f"{getattr(obj, '__name__', 'target')}Schema", fields)


def typed_node(node: DictConfig, where: str, supplied: tuple[str, ...] = ()) -> DictConfig:
    """``node`` checked against its ``_target_``'s signature, defaults filled in."""
    target = node.get("_target_")
    if not target:
        raise ConfigError(f"{where} has no _target_; name the class that builds it")
    locate(str(target), where)  # cached below; here to say which group's _target_ is wrong
    schema = OmegaConf.structured(signature_schema(str(target), supplied))
    try:
        merged = OmegaConf.merge(schema, node)
    except Exception as exc:  # OmegaConf's ValidationError / ConfigKeyError
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]} (knobs of {target}: "
                          f"{', '.join(k for k in schema if k != '_target_')})") from exc
    assert isinstance(merged, DictConfig)  # a structured schema merged with a mapping
    return merged
