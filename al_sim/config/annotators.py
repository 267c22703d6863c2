"""Schema of ``oracle=panel``: simulated annotators, each with an error model and a cost model.

Checks that need the dataset's class count (lengths of per-class lists, the shape
of a confusion matrix) run when the panel is built (``al_sim.core.panel_oracle``), still
before any training.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from omegaconf import MISSING

from al_sim.config.checks import fraction, positive
from al_sim.maths.aggregation import AGGREGATIONS
from al_sim.runtime.errors import ConfigError

PANEL = "panel"
# Annotator names become metric keys (cost/expert_seconds/<name>) and file columns.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# What a reader reads, as the keys of oracle.seconds_factor: 2D images or volumes (CT, MRI).
IMAGE, VOLUME = "image", "volume"


@dataclass
class AnnotatorConf:
    """One simulated reader.

    Error model, at most one of: ``noise_rate`` (a uniformly drawn other class for this
    share of answers), ``noise_per_class`` (that share per true class: readers miss rare
    findings more often), ``confusion`` (rows: true class, columns: the answer's
    probability). Cost model: ``seconds_per_image``, or ``seconds_per_class`` by true class.
    """

    name: str = MISSING
    noise_rate: float = 0.0
    noise_per_class: list[float] | None = None
    confusion: list[list[float]] | None = None
    seconds_per_image: float = 30.0
    seconds_per_class: list[float] | None = None


@dataclass
class PanelOracleConf:
    """``k`` simulated annotators read every queried image; their answers are aggregated.

    ``adjudicator``: the name of one of ``annotators`` who does not read every image but
    answers the images the aggregation flags (ties, and with ``flag_below`` images whose
    label has less than that share of the answers, or of the Dawid-Skene posterior);
    without one, ties are broken by annotator order (``al_sim.maths.aggregation``).
    """

    name: str = PANEL
    annotators: list[AnnotatorConf] = field(default_factory=list)
    aggregation: str = "majority"
    adjudicator: str | None = None
    flag_below: float | None = None  # also flag images whose agreement is below this share
    # every reader's seconds times this, by what is read (conf/oracle/panel.yaml)
    seconds_factor: dict[str, float] = field(
        default_factory=lambda: {IMAGE: 1.0, VOLUME: 3.5})

    def __post_init__(self) -> None:
        check_aggregation(self.aggregation, self.flag_below)
        check_seconds_factor(self.seconds_factor)
        if self.name != PANEL:
            raise ConfigError(f"oracle.name must be {PANEL} with the panel schema, got "
                              f"{self.name!r} (choose the group: oracle=simulated|human|panel)")
        if not self.annotators:
            raise ConfigError("oracle.annotators is empty; list at least one annotator "
                              "(name, noise_rate, seconds_per_image), see conf/oracle/panel.yaml")
        names = [a.name for a in self.annotators]
        for i, annotator in enumerate(self.annotators):
            check_annotator(annotator, f"oracle.annotators[{i}]")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"oracle.annotators: the name {twice[0]!r} is given twice; each "
                              "annotator needs their own name")
        if self.adjudicator is not None and self.adjudicator not in names:
            raise ConfigError(f"oracle.adjudicator={self.adjudicator} is not an annotator; name "
                              f"one of oracle.annotators ({', '.join(names)}) or set "
                              "oracle.adjudicator=null")
        if len(self.readers) == 0:
            raise ConfigError("oracle.annotators holds only the adjudicator; add at least one "
                              "annotator who reads every image")

    @property
    def readers(self) -> list[AnnotatorConf]:
        """The annotators who read every queried image (all but the adjudicator)."""
        return [a for a in self.annotators if a.name != self.adjudicator]

    @property
    def adjudicator_conf(self) -> AnnotatorConf | None:
        """The adjudicator's own error and cost model, if there is one."""
        return next((a for a in self.annotators if a.name == self.adjudicator), None)


def check_aggregation(aggregation: str, flag_below: float | None) -> None:
    """ConfigError for an unknown ``oracle.aggregation`` or a ``flag_below`` outside (0, 1]."""
    if flag_below is not None:
        positive("oracle", flag_below=flag_below)
        if flag_below > 1:
            raise ConfigError(f"oracle.flag_below is a share of answers in (0, 1], got "
                              f"{flag_below}; e.g. oracle.flag_below=0.75")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"oracle.aggregation must be one of {', '.join(AGGREGATIONS)}, "
                          f"got {aggregation!r}")


def check_seconds_factor(factors: dict[str, float]) -> None:
    """ConfigError unless ``oracle.seconds_factor`` gives a number > 0 for images and volumes."""
    keys = sorted(map(str, factors))
    if keys != sorted((IMAGE, VOLUME)):
        raise ConfigError(f"oracle.seconds_factor must give exactly {IMAGE} and {VOLUME}, got "
                          f"{', '.join(keys) or 'nothing'}; e.g. "
                          f"oracle.seconds_factor={{{IMAGE}:1.0,{VOLUME}:5.0}}")
    for key in keys:
        positive("oracle.seconds_factor", **{key: factors[key]})


def check_annotator(annotator: AnnotatorConf, where: str) -> None:
    """ConfigError (one line, naming ``where``) for a bad name, error model or cost model."""
    if not NAME_PATTERN.fullmatch(str(annotator.name)):
        raise ConfigError(f"{where}.name={annotator.name!r} must be 1-64 letters, digits, "
                          "'_', '.' or '-' (it names metrics and file columns)")
    positive(where, seconds_per_image=annotator.seconds_per_image)
    for c, seconds in enumerate(annotator.seconds_per_class or []):
        positive(where, **{f"seconds_per_class[{c}]": seconds})
    fraction(where, noise_rate=annotator.noise_rate)
    for c, rate in enumerate(annotator.noise_per_class or []):
        fraction(where, False, **{f"noise_per_class[{c}]": rate})
    models = [annotator.noise_rate > 0, annotator.noise_per_class is not None,
              annotator.confusion is not None]
    if sum(models) > 1:
        raise ConfigError(f"{where}: give one error model (noise_rate, noise_per_class or "
                          "confusion), not several")
    for r, row in enumerate(annotator.confusion or []):
        if any(not math.isfinite(p) or p < 0 for p in row) or not math.isclose(
                sum(row), 1.0, abs_tol=1e-6):
            raise ConfigError(f"{where}.confusion[{r}] must hold probabilities >= 0 summing "
                              f"to 1 (the answers given for true class {r}), got {list(row)}")
