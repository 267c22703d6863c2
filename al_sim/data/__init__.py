"""Data sources; each returns an :class:`al_sim.data.base.ALDataset`."""

from al_sim.data.base import ALDataset

__all__ = ["ALDataset"]
