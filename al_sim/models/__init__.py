"""Models exposing ``features()`` and logits; ``al_sim.app.components.build_model`` builds them
from ``conf/model``."""

from al_sim.models.base import ALModel

__all__ = ["ALModel"]
