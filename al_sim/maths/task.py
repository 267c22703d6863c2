"""The task type of a dataset and everything that follows from it, decided here once.

A dataset declares ``binary``, ``multiclass`` or ``multilabel`` (ordinal sets stay
multiclass). Single-label: labels are ``N`` ints, probabilities a softmax, the
loss cross-entropy, the primary metric balanced accuracy. Multi-label: labels an
``N x F`` 0/1 matrix (one column per finding; a row of -1 is not labelled yet),
probabilities a sigmoid per finding, the loss ``BCEWithLogits`` (per-finding
``pos_weight`` with ``trainer.class_weighted_loss``), the primary metric macro AUROC.
Torch-free: the trainer maps :attr:`Task.loss` and :attr:`Task.activation` to torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from al_sim.maths.sampling import flip_bits, flip_labels
from al_sim.runtime.errors import DataError

NO_FINDING = "No Finding"  # the ChestX-ray14 name of the empty finding set
LABEL_SEPARATOR = "|"  # between findings in a cell (queries.csv, manifests)


class TaskType(StrEnum):
    """What one image's label is: one of two classes, one of several, or a set of findings."""

    binary = "binary"
    multiclass = "multiclass"
    multilabel = "multilabel"


@dataclass(frozen=True)
class Task:
    """A task type with its output names (classes, or findings for multi-label)."""

    kind: TaskType
    names: tuple[str, ...]

    @classmethod
    def of(cls, kind: str | TaskType | None, names: Sequence[str]) -> Task:
        """The task ``kind`` over ``names``; without a kind, binary for 2 names, else multiclass."""
        names = tuple(str(n) for n in names)
        if kind is None:
            kind = TaskType.binary if len(names) == 2 else TaskType.multiclass
        try:
            kind = TaskType(kind)
        except ValueError:
            raise DataError(f"unknown task {kind!r}; use one of "
                            f"{', '.join(t.value for t in TaskType)}") from None
        if kind is TaskType.binary and len(names) != 2:
            raise DataError(f"a binary task needs 2 classes, got {len(names)}: {list(names)}")
        if not names:
            raise DataError(f"a {kind} task needs at least one class or finding name")
        return cls(kind, names)

    @property
    def multilabel(self) -> bool:
        """Whether an image carries a set of findings (sigmoid outputs)."""
        return self.kind is TaskType.multilabel

    @property
    def n_outputs(self) -> int:
        """Model outputs: one per class, or one per finding."""
        return len(self.names)

    @property
    def activation(self) -> str:
        """``softmax`` over classes or ``sigmoid`` per finding."""
        return "sigmoid" if self.multilabel else "softmax"

    @property
    def loss(self) -> str:
        """The training loss: ``cross_entropy`` or ``binary_cross_entropy_with_logits``."""
        return "binary_cross_entropy_with_logits" if self.multilabel else "cross_entropy"

    @property
    def primary_metric(self) -> str:
        """The comparison's default metric: macro AUROC over findings, else balanced accuracy."""
        return "test/auroc" if self.multilabel else "test/balanced_accuracy"

    def label_shape(self, n: int) -> tuple[int, ...]:
        """Shape of ``n`` labels: ``(n,)`` or ``(n, F)``."""
        return (n, self.n_outputs) if self.multilabel else (n,)

    def unknown(self, n: int) -> np.ndarray:
        """``n`` labels that are not known yet (-1)."""
        return np.full(self.label_shape(n), -1, dtype=np.int64)

    def known(self, labels: np.ndarray) -> np.ndarray:
        """Per image, whether its label is known."""
        labels = np.asarray(labels)
        return np.asarray((labels >= 0).all(axis=1) if self.multilabel else labels >= 0)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax rows or per-finding sigmoids of ``logits`` (numpy, float64)."""
        z = np.asarray(logits, dtype=np.float64)
        if self.multilabel:
            return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def metrics(self, y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """Per-round test metrics, keyed ``test/<metric>`` (and ``test/auroc/<finding>``)."""
        # sklearn loads here, not on import: the labelling tools use this module without it
        from al_sim.maths.metrics import classification_metrics, multilabel_metrics

        if self.multilabel:
            raw = multilabel_metrics(y_true, probs, self.names)
        else:
            raw = classification_metrics(y_true, probs)
        return {f"test/{k}": v for k, v in raw.items()}

    def flip(self, labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        """A noisy annotator's answers: a ``rate`` share of labels (finding bits) flipped."""
        if self.multilabel:
            return flip_bits(labels, rate, rng)
        return flip_labels(labels, rate, self.n_outputs, rng)

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """One stratum per image for stratified draws: the label itself, or for multi-label
        the image's rarest finding (``F`` for no finding), so every finding is drawn once
        when the draw is large enough."""
        labels = np.asarray(labels)
        if not self.multilabel:
            return labels
        counts = labels.clip(0).sum(axis=0)
        rarity = np.where(labels > 0, counts[None, :], np.iinfo(np.int64).max)
        return np.where((labels > 0).any(axis=1), rarity.argmin(axis=1), self.n_outputs)

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities as a list of single-label decisions, ``M x C``: each finding of each
        image as a 2-class row for multi-label (so stopping signals read them unchanged)."""
        if not self.multilabel:
            return probs
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        return np.stack([1.0 - p, p], axis=1)

    def describe(self, label: np.ndarray | int) -> str:
        """A label in words: the class name, or the findings joined by ``|`` (``No Finding``)."""
        if not self.multilabel:
            return self.names[int(label)]
        row = np.asarray(label)
        if (row < 0).any():
            return ""
        found = [n for n, bit in zip(self.names, row, strict=True) if bit > 0]
        return LABEL_SEPARATOR.join(found) or NO_FINDING

    def cell(self, label: np.ndarray | int) -> str | int:
        """A label for a CSV cell: the class index, or the finding bits joined by ``|``."""
        if not self.multilabel:
            return int(label)
        row = np.asarray(label)
        return "" if (row < 0).any() else LABEL_SEPARATOR.join(str(int(b)) for b in row)

    def check(self, labels: np.ndarray, where: str, unknown_ok: bool) -> np.ndarray:
        """``labels`` as int64 of this task's shape; DataError naming ``where`` otherwise."""
        y = np.asarray(labels, dtype=np.int64)
        if self.multilabel:
            if y.ndim != 2 or y.shape[1] != self.n_outputs:
                raise DataError(f"{where} labels: multi-label labels must be N x {self.n_outputs} "
                                f"(one 0/1 column per finding), got shape {y.shape}")
            ok = np.isin(y, (0, 1)) | (unknown_ok & (y == -1).all(axis=1, keepdims=True))
            if not ok.all():
                row = int(np.flatnonzero(~ok.all(axis=1))[0])
                raise DataError(f"{where} labels: finding labels must be 0 or 1 (row {row}: "
                                f"{y[row].tolist()})")
            return y
        if y.ndim != 1:
            raise DataError(f"{where} labels: single-label labels must be one class per image, got "
                            f"shape {y.shape}; declare task=multilabel for a set of findings")
        low = -1 if unknown_ok else 0
        if len(y) and (y.min() < low or y.max() >= self.n_outputs):
            raise DataError(f"{where} labels must be in [0, {self.n_outputs}), "
                            f"got range [{y.min()}, {y.max()}]")
        return y
