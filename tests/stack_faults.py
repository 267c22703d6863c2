"""A strategy that raises in round 1: a stack member that fails (tests/test_stack.py)."""

from __future__ import annotations

from al_sim.strategies.base import QueryContext, Selection, Strategy


class RaisingSampling(Strategy):
    """Fails at its first query, as a strategy with a bug would."""

    name = "raising"

    def select(self, ctx: QueryContext, k: int) -> Selection:
        raise RuntimeError("raising strategy: this member fails on purpose")
