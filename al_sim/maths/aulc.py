"""The area under a learning curve, normalised to [0, 1]. Numpy only."""

from __future__ import annotations

import numpy as np


def aulc(n_labeled: np.ndarray, values: np.ndarray) -> float:
    """Area under ``values`` vs ``n_labeled`` (trapezoids), divided by the x-range.

    With values in [0, 1] the result is in [0, 1]; a single point gives its value.
    """
    x = np.asarray(n_labeled, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("aulc needs as many values as labelled counts, at least one")
    if len(x) == 1:
        return float(y[0])
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = x[-1] - x[0]
    if span <= 0:
        return float(y.mean())
    return float(np.trapezoid(y, x) / span)
