"""How the OpenMP library torch loads makes its idle threads wait (issue 27): read once, when
torch is first imported, so whoever imports torch in a process sets it first."""

from __future__ import annotations

import os


def set_omp_wait_policy(policy: str | None) -> None:
    """``OMP_WAIT_POLICY`` for the OpenMP library torch loads, unless the user set it."""
    if policy is not None:
        os.environ.setdefault("OMP_WAIT_POLICY", policy.upper())
