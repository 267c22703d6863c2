"""Uncertainty sampling (Lewis & Gale 1994; Settles 2009 survey).

Each score is a pure function of softmax probabilities ``N x C``; higher means
more uncertain. Cost: one deterministic pass over the pool, O(N x C) memory.
"""

from __future__ import annotations

import numpy as np

from al_sim.strategies.base import ScoringStrategy


def least_confidence_score(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c``."""
    return 1.0 - np.max(probs, axis=1)


def margin_score(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: small margins between the two best classes score high."""
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy_score(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_c p_c log p_c`` in nats (``0 log 0 = 0``)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


class LeastConfidence(ScoringStrategy):
    """Least confidence: the images whose top class is least probable."""

    name = "least_confidence"
    score = staticmethod(least_confidence_score)


class Margin(ScoringStrategy):
    """Margin sampling (Scheffer et al. 2001): smallest gap between the two top classes."""

    name = "margin"
    score = staticmethod(margin_score)


class Entropy(ScoringStrategy):
    """Entropy sampling (Shannon entropy of the predictive distribution)."""

    name = "entropy"
    score = staticmethod(entropy_score)
