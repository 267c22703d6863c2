"""Schema of ``oracle=human``: one expert, or named annotators with several answers per image.

With ``annotators`` listed, each queried image goes to ``annotators_per_image`` of them
(each on their own page, with their own token); the round's label is the aggregate
(``al_sim.maths.aggregation``), an ``adjudicator`` answers the flagged images and wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from al_sim.config.annotators import NAME_PATTERN, check_aggregation
from al_sim.config.checks import positive
from al_sim.runtime.errors import ConfigError

HUMAN = "human"


@dataclass
class HumanOracleConf:
    """A real expert (``annotators`` empty) or a panel of named people.

    ``image_size``: images smaller than this are shown enlarged to it (pixels).
    ``idle_cap_s``: an answer costs the time since the same annotator's previous answer,
    at most this (a break costs no more); it makes ``cost/expert_seconds``.
    """

    name: str = HUMAN
    noise_rate: float = 0.0  # refused: kept so that oracle.noise_rate=... gets a clear line
    image_size: int = 256
    annotators: list[str] = field(default_factory=list)
    annotators_per_image: int = 1
    aggregation: str = "majority"
    adjudicator: str | None = None
    flag_below: float | None = None
    idle_cap_s: float = 120.0

    def __post_init__(self) -> None:
        if self.name != HUMAN:
            raise ConfigError(f"oracle.name must be {HUMAN} with the human schema, got "
                              f"{self.name!r} (choose the group: oracle=simulated|human|panel)")
        if self.noise_rate:
            raise ConfigError("oracle.noise_rate simulates annotation errors; a human oracle "
                              "makes its own: drop oracle.noise_rate with oracle=human")
        positive("oracle", image_size=self.image_size, idle_cap_s=self.idle_cap_s,
                 annotators_per_image=self.annotators_per_image)
        check_aggregation(self.aggregation, self.flag_below)
        names = [str(n) for n in self.annotators]
        for i, name in enumerate(names):
            if not NAME_PATTERN.fullmatch(name):
                raise ConfigError(f"oracle.annotators[{i}]={name!r} must be 1-64 letters, "
                                  "digits, '_', '.' or '-' (it names metrics and file columns)")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"oracle.annotators: the name {twice[0]!r} is given twice; each "
                              "annotator needs their own name")
        readers = self.readers
        if self.adjudicator is not None and self.adjudicator not in names:
            raise ConfigError(f"oracle.adjudicator={self.adjudicator} is not an annotator; name "
                              f"one of oracle.annotators ({', '.join(names) or 'none listed'}) "
                              "or set oracle.adjudicator=null")
        if self.annotators_per_image > max(len(readers), 1):
            raise ConfigError(
                f"oracle.annotators_per_image={self.annotators_per_image} needs as many "
                f"annotators who read every image, got {len(readers)} "
                f"({', '.join(readers) or 'none'}); name them, e.g. "
                "oracle.annotators=[alice,bob] (the adjudicator does not count)")

    @property
    def readers(self) -> list[str]:
        """The named annotators who read queried images (all but the adjudicator)."""
        return [str(n) for n in self.annotators if n != self.adjudicator]

    @property
    def panel(self) -> bool:
        """Whether named annotators label (else: one expert, the login name or --annotator)."""
        return bool(self.annotators)
