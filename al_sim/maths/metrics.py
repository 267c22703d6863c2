"""Per-round test metrics (accuracy, macro-F1, balanced accuracy, AUROC, log loss)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1, balanced accuracy, AUROC (binary or one-vs-rest macro) and loss.

    AUROC covers the classes present in the test labels (NaN when only one is).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    labels = np.arange(n_classes)
    y_pred = probs.argmax(axis=1)
    probs = np.clip(probs, 1e-12, 1.0)
    probs /= probs.sum(axis=1, keepdims=True)
    present = np.unique(y_true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on classes absent from y_pred
        out = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(
                f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
            ),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "loss": float(log_loss(y_true, probs, labels=labels)),
        }
        if len(present) < 2:
            out["auroc"] = float("nan")
        elif n_classes == 2:
            out["auroc"] = float(roc_auc_score(y_true, probs[:, 1]))
        elif len(present) == 2:  # two of several classes in the test labels: a binary AUROC
            score = probs[:, present[1]] / probs[:, present].sum(axis=1)
            out["auroc"] = float(roc_auc_score(y_true == present[1], score))
        else:
            sub = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
            out["auroc"] = float(
                roc_auc_score(y_true, sub, multi_class="ovr", average="macro", labels=present)
            )
    return out
