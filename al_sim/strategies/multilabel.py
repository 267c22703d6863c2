"""Multi-label scoring: single-label scores per finding, reduced over findings; CVIRS.

A multi-label model gives one sigmoid ``p_f`` per finding. Each finding is a
two-class decision ``[1 - p_f, p_f]``, so every single-label score (entropy,
margin, least confidence, BALD) applies per finding, giving ``N x F``; the
``reduction`` (``mean`` or ``max``, baal's choice) makes one score per image.

CVIRS (Reyes, Morell & Ventura 2018, "Effective active learning strategy for
multi-label learning"; small-text's ``CategoryVectorInconsistencyAndRanking``)
multiplies two scores per unlabelled image: the *ranking* of its per-finding
margins ``|2 p_f - 1|`` among the unlabelled images (most uncertain first), and the
*category vector inconsistency*: the mean distance of its predicted finding vector
to the labelled images' vectors (the normalised entropy distance of the paper,
1 where the Hamming distance is 1). Where small-text's code departs from the paper
we follow the paper: small-text ranks with ``argsort`` positions instead of ranks,
takes margins as ``|p_f - sum p|``, and returns the Hamming distance it computed the
entropy distance beside (see tests/test_multilabel_strategies.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from al_sim.runtime.errors import ConfigError

REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda s: s.mean(axis=1),
    "max": lambda s: s.max(axis=1),
}
_EPS = 1e-8  # small-text's epsilon in the entropy distance


def check_reduction(reduction: str) -> str:
    """``reduction`` if known; ConfigError naming the choices otherwise."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"strategy.reduction must be one of {', '.join(REDUCTIONS)}, "
                          f"got {reduction!r}; set strategy.reduction={next(iter(REDUCTIONS))}")
    return reduction


def as_decisions(probs: np.ndarray) -> np.ndarray:
    """Per-finding sigmoids ``... x F`` as two-class rows ``... x F x 2``."""
    p = np.asarray(probs, dtype=np.float64)
    return np.stack([1.0 - p, p], axis=-1)


def finding_scores(score: Callable[[np.ndarray], np.ndarray], probs: np.ndarray) -> np.ndarray:
    """``score`` (of ``M x C`` rows) applied to each finding of ``N x F`` sigmoids: ``N x F``."""
    n, f = np.shape(probs)
    return score(as_decisions(probs).reshape(n * f, 2)).reshape(n, f)


def finding_mc_scores(score: Callable[[np.ndarray], np.ndarray], mc: np.ndarray) -> np.ndarray:
    """``score`` (of ``M x T x C`` MC samples) per finding of ``N x T x F`` sigmoids: ``N x F``."""
    n, t, f = np.shape(mc)
    rows = as_decisions(mc).transpose(0, 2, 1, 3).reshape(n * f, t, 2)
    return score(rows).reshape(n, f)


def reduce_findings(scores: np.ndarray, reduction: str) -> np.ndarray:
    """One score per image from ``N x F`` per-finding scores."""
    return REDUCTIONS[reduction](np.asarray(scores, dtype=np.float64))


def margin_ranking(probs: np.ndarray) -> np.ndarray:
    """CVIRS's ranking score in [0, 1]: ``sum_f (N - rank_f) / (F (N - 1))``, rank 1 for the
    smallest margin ``|2 p_f - 1|`` of finding ``f`` among the ``N`` images (ties averaged)."""
    p = np.asarray(probs, dtype=np.float64)
    n, f = p.shape
    if n < 2:
        return np.ones(n)
    from scipy.stats import rankdata  # here: scipy.stats costs every run ~0.7 s of start-up

    ranks = rankdata(np.abs(2.0 * p - 1.0), axis=0)
    return (n - ranks).sum(axis=1) / (f * (n - 1))


def _h(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    ratio = num / (den + _EPS)
    return -ratio * np.log2(ratio + _EPS)


def entropy_distance(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Normalised entropy distance between 0/1 vectors, ``len(pred) x len(labels)``; 1 where
    the vectors differ in every finding (Hamming distance 1)."""
    pred = np.asarray(pred, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    f = pred.shape[1]
    a = pred @ labels.T
    b = (1 - pred) @ labels.T
    c = pred @ (1 - labels).T
    d = (1 - pred) @ (1 - labels).T
    h_pred = (_h(pred.sum(1), f) + _h(f - pred.sum(1), f))[:, None]
    h_lab = (_h(labels.sum(1), f) + _h(f - labels.sum(1), f))[None, :]
    joint = _h(b + c, f) + _h(a + d, f)
    joint += (b + c) / f * (_h(b, b + c) + _h(c, b + c))
    joint += (a + d) / f * (_h(a, a + d) + _h(d, a + d))
    dist = (2 * joint - h_pred - h_lab) / (joint + _EPS)
    dist[(b + c) == f] = 1.0
    return np.clip(dist, 0.0, 1.0)


def vector_inconsistency(pred: np.ndarray, labels: np.ndarray, chunk_size: int) -> np.ndarray:
    """Mean entropy distance of each predicted vector to the labelled vectors."""
    out = np.empty(len(pred))
    for start in range(0, len(pred), chunk_size):
        out[start:start + chunk_size] = entropy_distance(pred[start:start + chunk_size],
                                                         labels).mean(axis=1)
    return out


def cvirs_score(probs: np.ndarray, labeled_y: np.ndarray, threshold: float = 0.5,
                chunk_size: int = 2048) -> np.ndarray:
    """CVIRS per unlabelled image: ranking score x category vector inconsistency."""
    pred = (np.asarray(probs) > threshold).astype(np.float64)
    return margin_ranking(probs) * vector_inconsistency(pred, labeled_y, chunk_size)
