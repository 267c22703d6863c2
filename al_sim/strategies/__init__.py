"""Query strategies; ``conf/strategy/<name>.yaml`` names each class by ``_target_``."""

from al_sim.strategies.base import ModelView, QueryContext, Selection, Strategy

__all__ = ["ModelView", "QueryContext", "Selection", "Strategy"]
