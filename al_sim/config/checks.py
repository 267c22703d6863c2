"""Range checks shared by the schemas and the components: one ConfigError line naming the field.

Every check also refuses NaN and infinities.
"""

from __future__ import annotations

import math

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
