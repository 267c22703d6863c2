"""A panel of simulated annotators: each answers with its own error model and costs its own time.

Each reader answers every queried image (an answer drawn from its confusion-matrix row
of the image's true class, from its own generator spawned from the run's oracle seed);
the round's label is the aggregate (``al_sim.maths.aggregation``); an adjudicator, if
set, answers the flagged images and their answer wins. Seconds are counted per
annotator from the cost model (by the image's true class, times the panel's
``seconds_factor`` for what is read: an image or a volume), cumulatively.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from al_sim.config.annotators import IMAGE, VOLUME, AnnotatorConf, PanelOracleConf
from al_sim.maths.aggregation import aggregate
from al_sim.maths.agreement import agreement
from al_sim.runtime.errors import ConfigError
from al_sim.strategies.base import ModelView
from al_sim.tracking.contract import AGREEMENT_PREFIX, EXPERT_SECONDS, FLAGGED

DAWID_SKENE = "dawid_skene"


@dataclass(frozen=True)
class Reader:
    """One simulated reader: ``confusion[t, a]`` = P(answer a | true class t);
    ``seconds[t]``: the time to read an image of true class t."""

    name: str
    confusion: np.ndarray
    seconds: np.ndarray

    @classmethod
    def from_conf(cls, conf: AnnotatorConf, n_classes: int, where: str) -> Reader:
        """The reader ``conf`` describes, checked against the dataset's ``n_classes``."""
        for key in ("noise_per_class", "seconds_per_class"):
            values = getattr(conf, key)
            if values is not None and len(values) != n_classes:
                raise ConfigError(f"{where}.{key} has {len(values)} values but the dataset has "
                                  f"{n_classes} classes; give one per class")
        if conf.confusion is not None:
            confusion = np.asarray(conf.confusion, dtype=np.float64)
            if confusion.shape != (n_classes, n_classes):
                raise ConfigError(f"{where}.confusion must be {n_classes} x {n_classes} (true "
                                  f"class x answer), got {list(confusion.shape)}")
        else:
            rates = np.asarray(conf.noise_per_class if conf.noise_per_class is not None
                               else [conf.noise_rate] * n_classes, dtype=np.float64)
            off = rates / max(n_classes - 1, 1)
            confusion = np.repeat(off[:, None], n_classes, axis=1)
            np.fill_diagonal(confusion, 1.0 - rates if n_classes > 1 else 1.0)
        seconds = np.asarray(conf.seconds_per_class if conf.seconds_per_class is not None
                             else [conf.seconds_per_image] * n_classes, dtype=np.float64)
        return cls(str(conf.name), confusion, seconds)

    def answer(self, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One answer per image of true class ``truth`` (one uniform draw each)."""
        cumulative = np.cumsum(self.confusion[truth], axis=1)
        drawn = rng.random(len(truth))[:, None]
        return np.minimum((drawn >= cumulative).sum(axis=1), self.confusion.shape[1] - 1)


class PanelOracle:
    """``readers`` answer every queried image; their aggregate is the label."""

    def __init__(self, truth: np.ndarray, n_classes: int, readers: list[Reader],
                 aggregation: str = "majority", adjudicator: Reader | None = None,
                 seed: int = 0, flag_below: float | None = None) -> None:
        self._truth = np.asarray(truth, dtype=np.int64)
        self._n_classes, self._aggregation = n_classes, aggregation
        self._flag_below = flag_below
        self.readers, self.adjudicator = list(readers), adjudicator
        streams = np.random.SeedSequence(seed).spawn(len(self.readers) + 1)
        self._rngs = [np.random.default_rng(s) for s in streams]  # the last: the adjudicator
        self.n_annotated = 0
        names = [a.name for a in self.readers] + ([adjudicator.name] if adjudicator else [])
        self.seconds = dict.fromkeys(names, 0.0)  # cumulative, per annotator
        self._asked = np.zeros(0, dtype=np.int64)  # every image read so far, in order ...
        self._given = np.zeros((0, len(self.readers)), dtype=np.int64)  # ... and the answers
        self.last_agreement: dict[str, float] = {}
        self.last_flagged = np.zeros(0, dtype=bool)  # last round: flagged per image
        self.last_answers: dict[str, np.ndarray] = {}  # last round: answers per annotator

    @classmethod
    def from_conf(cls, conf: PanelOracleConf, truth: np.ndarray, n_classes: int,
                  seed: int, volumes: bool = False) -> PanelOracle:
        """The panel ``conf`` describes (ConfigError for a model that does not fit the data);
        ``volumes``: the pool holds volumes, whose reading time is ``seconds_factor.volume``
        times the readers' seconds (images: ``seconds_factor.image`` times)."""
        factor = float(conf.seconds_factor[VOLUME if volumes else IMAGE])
        built = {a.name: Reader.from_conf(a, n_classes, f"oracle.annotators[{i}]")
                 for i, a in enumerate(conf.annotators)}
        built = {name: replace(r, seconds=r.seconds * factor) for name, r in built.items()}
        return cls(truth, n_classes, [built[a.name] for a in conf.readers], conf.aggregation,
                   built.get(conf.adjudicator or ""), seed, conf.flag_below)

    @property
    def total_seconds(self) -> float:
        """Expert seconds spent so far, every annotator together."""
        return float(sum(self.seconds.values()))

    def truth(self, indices: np.ndarray) -> np.ndarray:
        """The true labels (for logging only: the loop learns from :meth:`query`)."""
        return self._truth[np.asarray(indices, dtype=np.int64)]

    def seconds_of(self, indices: np.ndarray) -> float:
        """The readers' time to read ``indices`` (an adjudicator's is known only after)."""
        truth = self.truth(indices)
        return float(sum(a.seconds[truth].sum() for a in self.readers))

    def expected_seconds(self, probs: np.ndarray) -> np.ndarray:
        """The readers' expected time per image under class probabilities ``probs`` (N x C)."""
        return np.asarray(probs, dtype=np.float64) @ sum(a.seconds for a in self.readers)

    def query(self, indices: np.ndarray, round_: int = 0, model: ModelView | None = None
              ) -> np.ndarray:
        """The aggregated labels for ``indices``; records seconds, agreement and flags."""
        indices = np.asarray(indices, dtype=np.int64)
        truth = self.truth(indices)
        given = np.stack([a.answer(truth, rng) for a, rng in zip(self.readers, self._rngs,
                                                                  strict=False)], axis=1)
        for reader in self.readers:
            self.seconds[reader.name] += float(reader.seconds[truth].sum())
        self._asked = np.concatenate([self._asked, indices])
        self._given = np.concatenate([self._given, given])
        if self._aggregation == DAWID_SKENE:  # confusions estimated on every answer so far
            agg = aggregate(DAWID_SKENE, self._given, self._n_classes, self._flag_below)
            labels, flagged = agg.labels[-len(indices):], agg.flagged[-len(indices):]
        else:
            agg = aggregate(self._aggregation, given, self._n_classes, self._flag_below)
            labels, flagged = agg.labels, agg.flagged
        labels = labels.copy()
        self.last_answers = {a.name: given[:, i] for i, a in enumerate(self.readers)}
        if self.adjudicator is not None:
            judge, judged = self.adjudicator, np.full(len(indices), -1, dtype=np.int64)
            if flagged.any():
                judged[flagged] = judge.answer(truth[flagged], self._rngs[-1])
                labels[flagged] = judged[flagged]
                self.seconds[judge.name] += float(judge.seconds[truth[flagged]].sum())
            self.last_answers[judge.name] = judged
        self.last_flagged = np.asarray(flagged, dtype=bool)
        self.last_agreement = agreement(given, self._n_classes) if len(indices) else {}
        self.n_annotated += len(indices)
        return labels

    def round_costs(self) -> dict[str, float]:
        """``cost/expert_seconds`` (cumulative) and ``cost/expert_seconds/<annotator>``."""
        out = {EXPERT_SECONDS: self.total_seconds}
        out.update({f"{EXPERT_SECONDS}/{name}": s for name, s in self.seconds.items()})
        return out

    def round_agreement(self) -> dict[str, float]:
        """``agreement/<statistic>`` of the last round's answers and how many were flagged."""
        out = {f"{AGREEMENT_PREFIX}{k}": v for k, v in self.last_agreement.items()}
        out[FLAGGED] = float(self.last_flagged.sum())
        return out

    def round_answers(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The last round's answers per annotator (-1: not asked) and its flagged mask."""
        return dict(self.last_answers), self.last_flagged.copy()

    def state(self) -> dict:
        """Everything a resumed run needs (plain values: the checkpoint loads weights-only)."""
        return {"n_annotated": self.n_annotated, "seconds": dict(self.seconds),
                "rngs": [r.bit_generator.state for r in self._rngs],
                "asked": self._asked.tolist(), "given": self._given.tolist()}

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state`."""
        self.n_annotated = int(state["n_annotated"])
        self.seconds = {k: float(v) for k, v in state["seconds"].items()}
        for rng, saved in zip(self._rngs, state["rngs"], strict=True):
            rng.bit_generator.state = saved
        self._asked = np.asarray(state["asked"], dtype=np.int64)
        self._given = np.asarray(state["given"], dtype=np.int64).reshape(-1, len(self.readers))
