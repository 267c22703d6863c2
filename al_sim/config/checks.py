"""Range checks shared by the schemas and the components: one ConfigError line naming the field.

Every check also refuses NaN and infinities.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from al_sim.runtime.errors import ConfigError


def _finite(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value}; "
                          f"set {owner}.{name}=<n>")


def finite(owner: str, **values: int | float) -> None:
    """Each value must be a finite number."""
    for name, value in values.items():
        _finite(owner, name, value)


def positive(owner: str, **values: int | float) -> None:
    """Each value must be a finite number > 0."""
    for name, value in values.items():
        _finite(owner, name, value)
        if value <= 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value}; set {owner}.{name}=<n>")


def non_negative(owner: str, **values: int | float) -> None:
    """Each value must be a finite number >= 0."""
    for name, value in values.items():
        _finite(owner, name, value)
        if value < 0:
            raise ConfigError(f"{owner}.{name} must be >= 0, got {value}; set {owner}.{name}=<n>")


def fraction(owner: str, low_open: bool = False, **values: float) -> None:
    """Each value must lie in [0, 1) (or (0, 1) with ``low_open``)."""
    for name, value in values.items():
        _finite(owner, name, value)
        ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
        if not ok:
            bound = "(0, 1)" if low_open else "[0, 1)"
            raise ConfigError(f"{owner}.{name} must be in {bound}, got {value}; set "
                              f"{owner}.{name}=<a fraction in {bound}>")


def set_default(owner: str, conf: Any, name: str) -> str:
    """``set <owner>.<name>=<default>``: the fix a message offers, the value as typed on the
    command line and taken from the schema (conf/ writes the same, tests/test_config.py)."""
    spec = next(f for f in dataclasses.fields(conf) if f.name == name)
    if spec.default_factory is not dataclasses.MISSING:
        return f"set {owner}.{name}={_typed(spec.default_factory())}"
    return f"set {owner}.{name}={_typed(spec.default)}"


def _typed(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return f"[{','.join(_typed(v) for v in value)}]"
    return str(value)
