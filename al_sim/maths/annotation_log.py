"""Several annotators' individual answers (image, annotator, label, when) as arrays.

The pieces the human side of several annotators per image needs, on plain
values: the ``images x annotators`` answer matrix that ``maths.aggregation`` and
``maths.agreement`` take (refusing an annotator who answered one image twice, or
one not on the roster), an adjudicator's answers applied to the flagged images
only, and each answer's expert seconds: time on the image, not the wall time
between sessions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from al_sim.maths.aggregation import MISSING
from al_sim.runtime.errors import LabelError


def answer_matrix(images: Sequence[str], annotators: Sequence[str], labels: Sequence[int],
                  image_order: Sequence[str], roster: Sequence[str]) -> np.ndarray:
    """``len(image_order) x len(roster)`` answers (``MISSING`` where none was given).

    LabelError (one line) for an unknown annotator, an image not in ``image_order``, or an
    annotator who answered the same image twice.
    """
    row = {name: i for i, name in enumerate(image_order)}
    col = {name: j for j, name in enumerate(roster)}
    out = np.full((len(image_order), len(roster)), MISSING, dtype=np.int64)
    for image, who, label in zip(images, annotators, labels, strict=True):
        if who not in col:
            raise LabelError(f"answer by unknown annotator {who!r} for {image!r}; the "
                             f"annotators are {', '.join(roster)}: add them to the roster or "
                             "drop the answer")
        if image not in row:
            raise LabelError(f"answer by {who} for {image!r}, which is not in the batch")
        i, j = row[image], col[who]
        if out[i, j] != MISSING:
            raise LabelError(f"{who} answered {image!r} twice ({out[i, j]} and {label}); each "
                             "annotator answers an image once: keep one answer")
        out[i, j] = int(label)
    return out


def adjudicate(labels: np.ndarray, flagged: np.ndarray, image_order: Sequence[str],
               rulings: Mapping[str, int]) -> np.ndarray:
    """``labels`` with the adjudicator's ``rulings`` (image -> label) on flagged images.

    LabelError for a ruling on an image that was not flagged (nothing is changed).
    """
    row = {name: i for i, name in enumerate(image_order)}
    out = np.array(labels, dtype=np.int64)
    for image, label in rulings.items():
        i = row.get(image)
        if i is None or not flagged[i]:
            flagged_names = [n for n, f in zip(image_order, flagged, strict=True) if f]
            raise LabelError(f"an adjudication for {image!r}, which was not flagged for "
                             f"adjudication (flagged: {', '.join(flagged_names) or 'none'}); "
                             "adjudicate flagged images only")
        out[i] = int(label)
    return out


def seconds_per_answer(annotators: Sequence[str], times: Sequence[datetime],
                       idle_cap_s: float) -> np.ndarray:
    """Each answer's expert seconds, in input order.

    An answer took the time since the same annotator's previous answer, capped at
    ``idle_cap_s`` (a break, or the night between sessions, costs no more than the cap).
    An annotator's first answer has no previous one: it counts as the median of their
    other answers' times (the cap when it is their only answer).
    """
    if not idle_cap_s > 0:
        raise ValueError(f"idle_cap_s must be > 0, got {idle_cap_s}")
    out = np.zeros(len(times), dtype=np.float64)
    by_annotator: dict[str, list[int]] = {}
    for k, who in enumerate(annotators):
        by_annotator.setdefault(who, []).append(k)
    for positions in by_annotator.values():
        ordered = sorted(positions, key=lambda k: times[k])
        gaps = [min((times[b] - times[a]).total_seconds(), idle_cap_s)
                for a, b in zip(ordered, ordered[1:], strict=False)]
        out[ordered[1:]] = gaps
        out[ordered[0]] = float(np.median(gaps)) if gaps else idle_cap_s
    return out
