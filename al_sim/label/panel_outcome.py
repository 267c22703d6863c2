"""A batch's answers by several named annotators, as the round's outcome. Torch-free.

From ``answers.csv``'s rows: the ``images x readers`` answer matrix (refusing an
unknown annotator, one answering twice, a reader answering an image not given to
them, an adjudication of an image that was not flagged), the aggregate, the images
flagged for adjudication (``adjudication.csv``, written once the readers are done), the
adjudicator's answers applied, agreement, and each annotator's expert seconds.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from al_sim.label.batch import Answer, Batch
from al_sim.label.panel import Panel
from al_sim.maths.aggregation import MISSING, aggregate
from al_sim.maths.agreement import ALPHA, FLEISS, agreement, fleiss_kappa, krippendorff_alpha
from al_sim.maths.annotation_log import adjudicate, answer_matrix, seconds_per_answer
from al_sim.runtime.errors import LabelError
from al_sim.runtime.files import atomic_write

ADJUDICATION_FILE, AGGREGATE_FILE = "adjudication.csv", "aggregate.csv"
ADJUDICATION_HEADER = ("image", "pool_index", "id", "answers", "provisional_label")
AGGREGATE_HEADER = ("image", "pool_index", "id", "label", "flagged", "decided_by", "answers")
DAWID_SKENE = "dawid_skene"


@dataclass
class Outcome:
    """Where a batch labelled by a panel stands, and its labels once the readers are done."""

    panel: Panel
    matrix: np.ndarray  # images x readers, class indices (MISSING: no answer)
    missing: int  # (image, reader) answers still missing
    missing_images: int  # images still waiting for one of their readers
    flagged: np.ndarray  # per image; only once the readers are done
    labels: np.ndarray  # the aggregate with the adjudicator's answers applied (readers done)
    rulings: dict[str, int] = field(default_factory=dict)  # the adjudicator's answers
    agreement: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per annotator, this batch

    @property
    def readers_done(self) -> bool:
        """Every reader answered every image given to them."""
        return self.missing == 0

    @property
    def waiting_rulings(self) -> int:
        """Flagged images the adjudicator has not answered yet (0 without an adjudicator)."""
        if self.panel.adjudicator is None or not self.readers_done:
            return 0
        return int(self.flagged.sum()) - len(self.rulings)

    @property
    def complete(self) -> bool:
        """Whether the run can take the batch."""
        return self.readers_done and self.waiting_rulings == 0


def _panel(batch: Batch) -> Panel:
    if batch.panel is None:
        raise LabelError(f"{batch.dir} is labelled by one expert, not by named annotators")
    return batch.panel


def checked_rows(batch: Batch, rows: list[tuple[str, Answer]]) -> None:
    """LabelError (one line) for an answer by someone not on the batch's roster or a reader
    answering an image not given to them; nothing is changed."""
    panel = _panel(batch)
    for image, answer in rows:
        who = answer.annotator
        if who not in panel.roster:
            raise LabelError(f"answer by unknown annotator {who!r} for {image!r}; the "
                             f"annotators are {', '.join(panel.roster)}: give each answer "
                             "the name of one of them (oracle.annotators)")
        if who != panel.adjudicator and who not in panel.assigned.get(image, []):
            raise LabelError(f"{who} answered {image!r}, which was given to "
                             f"{', '.join(panel.assigned.get(image, [])) or 'nobody'}; each "
                             "reader answers the images on their own page")


def outcome(batch: Batch, rows: list[tuple[str, Answer]],
            earlier: np.ndarray | None = None) -> Outcome:
    """The batch's outcome from ``rows``; ``earlier``: earlier rounds' reader answers
    (Dawid-Skene is fitted on them too). LabelError for bad rows (see module docstring)."""
    panel = _panel(batch)
    checked_rows(batch, rows)
    index = {c: k for k, c in enumerate(batch.classes)}
    labels = [index[batch.normalise(a.label)] for _, a in rows]
    reads = [k for k, (_, a) in enumerate(rows) if a.annotator != panel.adjudicator]
    matrix = answer_matrix([rows[k][0] for k in reads], [rows[k][1].annotator for k in reads],
                           [labels[k] for k in reads], batch.images, panel.readers)
    col = {name: j for j, name in enumerate(panel.readers)}
    asked = np.zeros_like(matrix, dtype=bool)
    for i, image in enumerate(batch.images):
        asked[i, [col[r] for r in panel.assigned.get(image, [])]] = True
    missing = int((asked & (matrix == MISSING)).sum())
    missing_images = int((asked & (matrix == MISSING)).any(axis=1).sum())
    n = len(batch.images)
    result = Outcome(panel, matrix, missing, missing_images, np.zeros(n, dtype=bool),
                     np.full(n, MISSING))
    rulings = {}
    for k, (image, answer) in enumerate(rows):
        if answer.annotator == panel.adjudicator:
            if image in rulings:
                raise LabelError(f"{answer.annotator} adjudicated {image!r} twice; the "
                                 "adjudicator answers an image once: keep one answer")
            rulings[image] = labels[k]
    result.seconds = _seconds(panel, rows)
    if not result.readers_done:
        if rulings:
            raise LabelError(f"an adjudication of {next(iter(rulings))!r} before the readers "
                             f"are done ({missing} answer(s) missing): adjudicate flagged "
                             "images only, once every reader has answered")
        return result
    full = matrix if earlier is None or panel.aggregation != DAWID_SKENE else \
        np.concatenate([earlier, matrix])
    agg = aggregate(panel.aggregation, full, len(batch.classes), panel.flag_below)
    result.flagged = agg.flagged[-n:].copy()
    result.labels = adjudicate(agg.labels[-n:], result.flagged, batch.images, rulings)
    result.rulings = rulings
    result.agreement = _agreement(panel, matrix, len(batch.classes))
    return result


def _agreement(panel: Panel, matrix: np.ndarray, n_classes: int) -> dict[str, float]:
    """Cohen's kappa (two readers) or Fleiss' kappa (more; on the answers per image, whoever
    gave them), and Krippendorff's alpha over the readers."""
    if len(panel.readers) == panel.per_image:
        return agreement(matrix, n_classes)
    given = np.sort(matrix, axis=1)[:, -panel.per_image:]  # each image's per_image answers
    return {FLEISS: fleiss_kappa(given, n_classes), ALPHA: krippendorff_alpha(matrix, n_classes)}


def _seconds(panel: Panel, rows: list[tuple[str, Answer]]) -> dict[str, float]:
    """Expert seconds per annotator: each answer's time since their previous one, capped."""
    out = dict.fromkeys(panel.roster, 0.0)
    if not rows:
        return out
    try:
        times = [datetime.fromisoformat(a.labelled_at) for _, a in rows]
    except ValueError as exc:
        raise LabelError(f"an answer's labelled_at is not an ISO time ({exc}); keep the times "
                         "the page or the import wrote") from None
    who = [a.annotator for _, a in rows]
    for name, seconds in zip(who, seconds_per_answer(who, times, panel.idle_cap_s), strict=True):
        out[name] += float(seconds)
    return out


def describe(batch: Batch, rows: list[tuple[str, Answer]], image: str) -> str:
    """The readers' answers to ``image`` in words (``benign by alice; malignant by bob``)."""
    panel = _panel(batch)
    return "; ".join(f"{a.label} by {a.annotator}" for name, a in rows
                     if name == image and a.annotator != panel.adjudicator)


def write_list(batch: Batch, rows: list[tuple[str, Answer]], result: Outcome) -> None:
    """``adjudication.csv``: the flagged images once the readers are done (removed while an
    answer is missing)."""
    path = batch.dir / ADJUDICATION_FILE
    if not result.readers_done:
        path.unlink(missing_ok=True)
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ADJUDICATION_HEADER)
    for k, item in enumerate(batch.items):
        if result.flagged[k]:
            provisional = batch.classes[int(result.labels[k])] if item.image not in \
                result.rulings else ""
            writer.writerow((item.image, item.pool_index, item.id,
                             describe(batch, rows, item.image), provisional))
    atomic_write(path, out.getvalue())


def write_aggregate(batch: Batch, rows: list[tuple[str, Answer]], result: Outcome) -> None:
    """``aggregate.csv``: the label the run takes per image and who decided it."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(AGGREGATE_HEADER)
    for k, item in enumerate(batch.items):
        who = result.panel.adjudicator if item.image in result.rulings else \
            result.panel.aggregation
        writer.writerow((item.image, item.pool_index, item.id,
                         batch.classes[int(result.labels[k])], int(result.flagged[k]), who,
                         describe(batch, rows, item.image)))
    atomic_write(batch.dir / AGGREGATE_FILE, out.getvalue())


def earlier_answers(batches: list[Batch], batch: Batch) -> np.ndarray | None:
    """The reader answers of the rounds before ``batch`` (same readers), for Dawid-Skene."""
    panel = _panel(batch)
    if panel.aggregation != DAWID_SKENE:
        return None
    found = [outcome(b, b.read_rows()).matrix for b in batches
             if b.round < batch.round and b.panel is not None and b.panel.readers == panel.readers]
    given = np.concatenate(found) if found else np.zeros((0, len(panel.readers)), dtype=np.int64)
    given = given[(given != MISSING).any(axis=1)]  # images nobody answered tell nothing
    return given if len(given) else None


def read_aggregate(folder: Path) -> dict[str, tuple[str, str]]:
    """``image -> (label, decided_by)`` from a batch's ``aggregate.csv`` ({} when absent)."""
    path = folder / AGGREGATE_FILE
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {r["image"]: (r["label"], r["decided_by"]) for r in csv.DictReader(f)}
