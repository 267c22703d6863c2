"""When to stop labelling: stopping signals from successive models' outputs. Numpy only.

Every function is pure, on arrays. The signals (logged as ``stop/<name>``):

* ``mean_uncertainty`` (baal, *low average uncertainty*): mean least-confidence
  ``1 - max p`` over the stop set's still-unlabelled images;
* ``overall_uncertainty`` (small-text ``OverallUncertainty``, Zhu et al. 2008): mean
  normalised entropy (``H / log C``, in [0, 1]) over the same images;
* ``kappa`` (small-text ``KappaAverage``, Bloodgood & Vijay-Shanker 2009, *stabilising
  predictions*): Cohen's kappa between successive models' predictions on the stop set,
  averaged over the last ``window`` pairs (NaN until there are ``window`` pairs);
  (``kappa_pair``, also logged, is the latest pair's kappa alone);
* ``f_change`` (small-text ``DeltaFScore``, Altschuler & Bloodgood 2019): the change in
  predicted F-score, ``1 - F1`` of the new model's predictions scored against the previous
  model's (of the positive class with two classes or per finding, as the paper; macro over
  the classes with more), the largest over the last ``window`` pairs (NaN until there are
  ``window``; ``f_change_pair``, also logged, is the latest pair's), so ``f_change<e`` holds
  when every pair of the window changed less than ``e``, as the paper's rule;
* ``class_change`` (small-text ``ClassificationChange``, Zhu et al. 2008): the share of
  stop-set predictions that changed since the previous model;
* ``plateau`` (baal early stopping on a metric): the gain of the monitored metric over
  the last ``window`` rounds, ``max(last window) - max(before)``.

A rule (``budget.stop_when``) is ``<signal><op><number>`` with op one of ``>= <= > <``;
several rules joined by ``,`` stop at the first that holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SIGNALS = ("mean_uncertainty", "overall_uncertainty", "kappa", "f_change", "class_change",
           "plateau")
PREFIX = "stop/"
KAPPA_PAIR = "kappa_pair"  # also logged: kappa of this model vs the previous one (no average)
F_CHANGE_PAIR = "f_change_pair"  # also logged: f_change of this model vs the previous one
_OPS = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}
_RULE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
NAN = float("nan")


class StopRuleError(ValueError):
    """A ``stop_when`` rule that cannot be parsed or names an unknown signal."""


@dataclass(frozen=True)
class StopRule:
    """``signal op threshold``: holds when the signal's value satisfies the comparison."""

    signal: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the rule (never for NaN: a signal not yet defined)."""
        return not math.isnan(value) and bool(_OPS[self.op](value, self.threshold))

    def __str__(self) -> str:
        return f"{self.signal}{self.op}{self.threshold:g}"


def parse_rules(text: str) -> list[StopRule]:
    """Rules from ``"kappa>=0.99, plateau<0.005"``; raises StopRuleError naming the fix."""
    rules = []
    for part in text.split(","):
        match = _RULE.match(part)
        if not match:
            raise StopRuleError(f"malformed stop rule {part.strip()!r}: write "
                                "<signal><op><number>, e.g. kappa>=0.99 "
                                f"(op one of {' '.join(_OPS)})")
        name, op, number = match.groups()
        if name not in SIGNALS:
            raise StopRuleError(f"unknown stopping signal {name!r} in {part.strip()!r}; "
                                f"known: {', '.join(SIGNALS)}")
        rules.append(StopRule(name, op, float(number)))
    return rules


def first_holding(rules: Sequence[StopRule], signals: dict[str, float]) -> StopRule | None:
    """The first rule whose signal (``stop/<name>`` in ``signals``) satisfies it, or None."""
    for rule in rules:
        if rule.holds(signals.get(PREFIX + rule.signal, NAN)):
            return rule
    return None


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max p`` per row."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy per row divided by ``log C``: 0 for one-hot, 1 for uniform."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    n_classes = p.shape[1]
    return -(p * np.log(p)).sum(axis=1) / math.log(n_classes) if n_classes > 1 else p[:, 0] * 0


def cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa of two label vectors; 1.0 when both are one identical constant."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    observed = float(np.mean(a == b))
    expected = float(np.sum(np.bincount(a, minlength=n_classes) *
                            np.bincount(b, minlength=n_classes))) / len(a) ** 2
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def f_change(previous: np.ndarray, current: np.ndarray, n_classes: int) -> float:
    """``1 -`` F1 of ``current`` against ``previous``: of the positive class (1) with two classes
    (NaN when neither predicts it: no F to compare), else macro over the classes either
    predicts."""
    previous, current = np.asarray(previous), np.asarray(current)
    scores = []
    for c in (1,) if n_classes == 2 else range(n_classes):
        both = int(np.sum((previous == c) & (current == c)))
        either = int(np.sum(previous == c)) + int(np.sum(current == c))
        if either:
            scores.append(2.0 * both / either)
    return 1.0 - float(np.mean(scores)) if scores else NAN


def class_change(previous: np.ndarray, current: np.ndarray) -> float:
    """Share of positions whose predicted class differs."""
    return float(np.mean(np.asarray(previous) != np.asarray(current)))


def plateau_gain(values: Sequence[float], window: int) -> float:
    """``max(values[-window:]) - max(values[:-window])``; NaN with ``window`` or fewer values."""
    if len(values) <= window:
        return NAN
    return float(np.max(values[-window:]) - np.max(values[:-window]))


@dataclass
class StopMonitor:
    """Computes every signal after each round from the stop set's predicted probabilities.

    ``window`` pairs of rounds are averaged for ``kappa`` and bound ``f_change``; ``window``
    rounds are compared for ``plateau``. Its state (last predictions, the pairs' kappas and
    F changes, the metric) is rebuilt by :meth:`restore` on resume.
    """

    n_classes: int
    window: int = 3
    previous: np.ndarray | None = None
    kappas: list[float] = field(default_factory=list)
    deltas: list[float] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)

    def update(self, probs: np.ndarray, unlabeled: np.ndarray, metric: float) -> dict[str, float]:
        """Signals after a round: ``probs`` on the stop set, ``unlabeled`` its mask, the metric."""
        probs = np.asarray(probs, dtype=np.float64)
        preds = probs.argmax(axis=1)
        rest = probs[np.asarray(unlabeled, dtype=bool)]
        out = {"mean_uncertainty": float(least_confidence(rest).mean()) if len(rest) else 0.0,
               "overall_uncertainty": float(normalised_entropy(rest).mean()) if len(rest) else 0.0,
               "kappa": NAN, "f_change": NAN, "class_change": NAN}
        if self.previous is not None:
            self.kappas.append(cohen_kappa(self.previous, preds, self.n_classes))
            out[KAPPA_PAIR] = self.kappas[-1]
            if len(self.kappas) >= self.window:  # as the paper: a full window, never fewer
                out["kappa"] = float(np.mean(self.kappas[-self.window:]))
            self.deltas.append(f_change(self.previous, preds, self.n_classes))
            out[F_CHANGE_PAIR] = self.deltas[-1]
            if len(self.deltas) >= self.window:  # NaN in the window: no rule holds
                out["f_change"] = float(np.max(self.deltas[-self.window:]))
            out["class_change"] = class_change(self.previous, preds)
        self.metric.append(float(metric))
        out["plateau"] = plateau_gain(self.metric, self.window)
        self.previous = preds
        return {PREFIX + k: v for k, v in out.items()}

    def restore(self, previous_probs: np.ndarray, signals: Sequence[dict[str, float]],
                metric: Sequence[float]) -> None:
        """Continue after a resume: the last model's stop-set outputs, past signals and metric."""
        self.previous = np.asarray(previous_probs).argmax(axis=1)
        self.kappas = [float(s[PREFIX + KAPPA_PAIR]) for s in signals if PREFIX + KAPPA_PAIR in s]
        self.deltas = [float(s[PREFIX + F_CHANGE_PAIR]) for s in signals
                       if PREFIX + F_CHANGE_PAIR in s]
        self.metric = [float(m) for m in metric]


def stop_set(n_pool: int, size: int, seed: int) -> np.ndarray:
    """A fixed random subset of the pool (ascending indices), ``min(size, n_pool)`` images."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_pool, size=min(size, n_pool), replace=False))
