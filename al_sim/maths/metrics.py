"""Per-round test metrics: single-label (accuracy, macro-F1, balanced accuracy, AUROC, log loss)
and multi-label (macro AUROC, macro AP, macro-F1 at 0.5, per-finding AUROC)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
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


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray,
                       names: Sequence[str]) -> dict[str, float]:
    """Multi-label test metrics from ``N x F`` 0/1 labels and per-finding probabilities.

    ``auroc``: macro AUROC over the findings with both outcomes in the test labels (the
    primary metric); ``average_precision``: macro AP over the same findings;
    ``f1_macro``: macro-F1 at 0.5 over all findings; ``balanced_accuracy``: mean per-finding
    balanced accuracy at 0.5; ``accuracy``: exact-match (subset) accuracy; ``loss``: mean
    binary cross-entropy; ``auroc/<finding>``: per finding (NaN when it is all 0 or all 1).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    pred = (p >= 0.5).astype(np.int64)
    both = [f for f in range(y.shape[1]) if 0 < y[:, f].sum() < len(y)]
    per_auroc = np.full(y.shape[1], np.nan)
    per_ap = np.full(y.shape[1], np.nan)
    per_bacc = np.empty(y.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in both:
            per_auroc[f] = roc_auc_score(y[:, f], p[:, f])
            per_ap[f] = average_precision_score(y[:, f], p[:, f])
        for f in range(y.shape[1]):
            per_bacc[f] = balanced_accuracy_score(y[:, f], pred[:, f]) if f in both else float(
                np.mean(y[:, f] == pred[:, f]))
        out = {
            "accuracy": float(np.mean((y == pred).all(axis=1))),
            "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
            "balanced_accuracy": float(per_bacc.mean()),
            "auroc": float(np.mean(per_auroc[both])) if both else float("nan"),
            "loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1.0 - p))),
            "average_precision": float(np.mean(per_ap[both])) if both else float("nan"),
        }
    out.update({f"auroc/{metric_name(n)}": float(v) for n, v in zip(names, per_auroc, strict=True)})
    return out


def metric_name(name: str) -> str:
    """``name`` as a metric-key part MLflow accepts (letters, digits, ``_ - . space``)."""
    return re.sub(r"[^\w\-. ]", "_", str(name))
