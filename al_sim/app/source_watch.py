"""Fails a run whose data files change under it, checked after every round."""

from __future__ import annotations

from al_sim.core.events import ALResult, RoundResult, RunCallback
from al_sim.data.base import ALDataset
from al_sim.data.sources import SourceFile, check_unchanged


class SourceWatch(RunCallback):
    """After each round (before its checkpoint) and at the end: the dataset's files
    (``ALDataset.sources``) still hold what the run read, or a DataError names the file."""

    def __init__(self) -> None:
        self.files: list[SourceFile] = []

    def on_run_start(self, dataset: ALDataset, rounds: int) -> None:
        self.files = list(dataset.sources)

    def on_round_end(self, result: RoundResult) -> None:
        check_unchanged(self.files, f"after round {result.round}")

    def on_run_end(self, result: ALResult) -> None:
        check_unchanged(self.files, "at the end of the run")
