"""One label per image from several annotators' answers: majority vote or Dawid-Skene.

Answers are an ``n_images x n_annotators`` integer array, ``MISSING`` (-1) where an
annotator did not answer. Column order is the annotators' priority: a tie goes to the
first-listed annotator's answer among the tied classes, so a deterministic result never
depends on class numbering. Tied images are *flagged* for adjudication, and with
``flag_below`` also low-agreement ones (the winning label's share of the answers, or its
Dawid-Skene posterior, below it); the tie-break stands only where nobody adjudicates.
Dawid-Skene (1979) is crowd-kit's implementation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MISSING = -1
AGGREGATIONS = ("majority", "dawid_skene")


@dataclass(frozen=True)
class Aggregate:
    """The aggregated label per image and which images are flagged for adjudication."""

    labels: np.ndarray  # (n,) int64
    flagged: np.ndarray  # (n,) bool: the best classes tied, or agreement below flag_below


def _checked(answers: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.asarray(answers)
    if out.ndim != 2 or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"answers must be an n_images x n_annotators integer array, got "
                         f"shape {out.shape} of {out.dtype}")
    if ((out < MISSING) | (out >= n_classes)).any():
        raise ValueError(f"answers must be class indices in [0, {n_classes}) or {MISSING}")
    if len(out) and (out == MISSING).all(axis=1).any():
        raise ValueError("every image needs at least one answer")
    return out.astype(np.int64)


def vote_counts(answers: np.ndarray, n_classes: int) -> np.ndarray:
    """``n x n_classes``: how many annotators gave each class to each image."""
    answers = _checked(answers, n_classes)
    counts = np.zeros((len(answers), n_classes), dtype=np.int64)
    rows, cols = np.nonzero(answers != MISSING)
    np.add.at(counts, (rows, answers[rows, cols]), 1)
    return counts


def _pick(support: np.ndarray, answers: np.ndarray, flag_below: float | None) -> Aggregate:
    """Argmax of ``support`` per row; ties go to the first annotator answering a tied class.

    Flagged: ties, and rows whose winning share of ``support`` is below ``flag_below``.
    """
    share = support / support.sum(axis=1, keepdims=True)
    best = share.max(axis=1, keepdims=True)
    tied_classes = np.isclose(share, best, rtol=0.0, atol=1e-12)
    labels = np.argmax(tied_classes, axis=1)
    tied = tied_classes.sum(axis=1) > 1
    flagged = tied | (best[:, 0] < flag_below) if flag_below is not None else tied
    for i in np.flatnonzero(tied):
        for given in answers[i]:
            if given != MISSING and tied_classes[i, given]:
                labels[i] = given
                break
    return Aggregate(labels.astype(np.int64), flagged)


def majority_vote(answers: np.ndarray, n_classes: int, flag_below: float | None = None
                  ) -> Aggregate:
    """The most frequent answer per image; ties flagged and broken by annotator order."""
    answers = _checked(answers, n_classes)
    return _pick(vote_counts(answers, n_classes).astype(np.float64), answers, flag_below)


def dawid_skene(answers: np.ndarray, n_classes: int, flag_below: float | None = None,
                n_iter: int = 100, tol: float = 1e-5) -> Aggregate:
    """Dawid-Skene EM (crowd-kit): each annotator's confusion matrix is estimated, so a
    consistently wrong annotator's answers count as evidence for what they confuse."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    answers = _checked(answers, n_classes)
    rows, cols = np.nonzero(answers != MISSING)
    frame = pd.DataFrame({"task": rows, "worker": cols, "label": answers[rows, cols]})
    model = DawidSkene(n_iter=n_iter, tol=tol)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="crowdkit")  # its pandas deprecations
        model.fit(frame)
    assert model.probas_ is not None  # set by fit
    probas = model.probas_.reindex(index=range(len(answers)),
                                   columns=range(n_classes)).fillna(0.0)
    return _pick(probas.to_numpy(dtype=np.float64), answers, flag_below)


AGGREGATORS: dict[str, Callable[[np.ndarray, int, float | None], Aggregate]] = {
    "majority": majority_vote, "dawid_skene": dawid_skene}


def aggregate(method: str, answers: np.ndarray, n_classes: int,
              flag_below: float | None = None) -> Aggregate:
    """``method`` (one of ``AGGREGATIONS``) applied to ``answers``."""
    if method not in AGGREGATORS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {method!r}")
    return AGGREGATORS[method](answers, n_classes, flag_below)
