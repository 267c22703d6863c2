"""Who answers which image of a batch labelled by several named annotators. Torch-free.

Stored in ``batch.json`` (``panel``) when the batch is written, so the page, an import
and the run agree on it: the readers (in priority order: a majority tie goes to the
first-listed), how many answer each image, each image's readers, the adjudicator and the
aggregation knobs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Panel:
    """The named annotators of one batch and what each is asked."""

    readers: list[str]
    per_image: int
    aggregation: str = "majority"
    adjudicator: str | None = None
    flag_below: float | None = None
    idle_cap_s: float = 120.0
    assigned: dict[str, list[str]] = field(default_factory=dict)  # image -> its readers

    @property
    def roster(self) -> list[str]:
        """Everyone who may answer: the readers, then the adjudicator."""
        return [*self.readers, *([self.adjudicator] if self.adjudicator else [])]

    def images_of(self, reader: str, images: list[str]) -> list[str]:
        """The images ``reader`` is asked, in pick order."""
        return [image for image in images if reader in self.assigned.get(image, [])]

    def to_dict(self) -> dict:
        """For ``batch.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Panel:
        """From ``batch.json`` (KeyError / TypeError / ValueError when damaged)."""
        flag = data.get("flag_below")
        return cls([str(r) for r in data["readers"]], int(data["per_image"]),
                   str(data["aggregation"]), None if data.get("adjudicator") is None
                   else str(data["adjudicator"]), None if flag is None else float(flag),
                   float(data["idle_cap_s"]),
                   {str(k): [str(r) for r in v] for k, v in data["assigned"].items()})


def assign(images: list[str], readers: list[str], per_image: int,
           round_: int) -> dict[str, list[str]]:
    """``per_image`` distinct readers per image, taken in turn so each reads about as many
    (the start moves with the round, so nobody is always first)."""
    n = len(readers)
    out = {}
    for i, image in enumerate(images):
        start = (i * per_image + round_) % n
        out[image] = [readers[(start + j) % n] for j in range(per_image)]
    return out
