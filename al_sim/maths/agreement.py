"""Inter-annotator agreement on an ``n_images x n_annotators`` answer array (``-1``: no answer).

Cohen's kappa (scikit-learn) for two annotators, Fleiss' kappa (statsmodels) for three or
more, Krippendorff's alpha (the ``krippendorff`` package, nominal; missing answers allowed)
for any number. A statistic that is undefined (every answer the same class, too few
images) is NaN, never a made-up 1.0.
"""

from __future__ import annotations

import warnings

import numpy as np

from al_sim.maths.aggregation import MISSING, vote_counts

COHEN, FLEISS, ALPHA = "cohen_kappa", "fleiss_kappa", "krippendorff_alpha"


def cohen_kappa(a: np.ndarray, b: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa of two annotators on the images both answered."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a), np.asarray(b)
    both = (a != MISSING) & (b != MISSING)
    if both.sum() < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a single class seen: undefined, NaN below
        return float(cohen_kappa_score(a[both], b[both], labels=list(range(n_classes)),
                                       replace_undefined_by=np.nan))


def fleiss_kappa(answers: np.ndarray, n_classes: int) -> float:
    """Fleiss' kappa over the images every annotator answered."""
    from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss

    answers = np.asarray(answers)
    complete = answers[(answers != MISSING).all(axis=1)]
    if len(complete) < 2 or complete.shape[1] < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(_fleiss(vote_counts(complete, n_classes), method="fleiss"))
    return value if np.isfinite(value) else float("nan")


def krippendorff_alpha(answers: np.ndarray, n_classes: int) -> float:
    """Krippendorff's alpha (nominal) over every answer given."""
    import krippendorff

    answers = np.asarray(answers)
    data = np.where(answers == MISSING, np.nan, answers.astype(np.float64)).T  # raters x units
    if np.unique(data[~np.isnan(data)]).size < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal",
                                         value_domain=list(range(n_classes))))
    return value if np.isfinite(value) else float("nan")


def agreement(answers: np.ndarray, n_classes: int) -> dict[str, float]:
    """The statistics that fit the number of annotators: none for one; Cohen's kappa for
    two, Fleiss' kappa for more; Krippendorff's alpha for two or more."""
    answers = np.asarray(answers)
    k = answers.shape[1] if answers.ndim == 2 else 0
    if k < 2:
        return {}
    out = ({COHEN: cohen_kappa(answers[:, 0], answers[:, 1], n_classes)} if k == 2
           else {FLEISS: fleiss_kappa(answers, n_classes)})
    out[ALPHA] = krippendorff_alpha(answers, n_classes)
    return out
