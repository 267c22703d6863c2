"""A batch labelled by named annotators, as export rows: the round's label and everyone's answer.

The label is the one the run took (``aggregate.csv``); for a complete batch the run
has not taken yet, the aggregate computed the same way. ``by`` maps each annotator
(adjudicator included) to their own answer.
"""

from __future__ import annotations

from pathlib import Path

from al_sim.label.batch import IMAGES_DIR, Batch
from al_sim.label.panel_outcome import earlier_answers, outcome, read_aggregate
from al_sim.label.rounds import all_batches

ANSWER_COLUMN = "answer:"  # manifest column answer:<name>: that annotator's own answer


def panel_rows(batch: Batch, run_dir: Path) -> dict[str, dict]:
    """``id -> row`` (id, label, round, annotator: who decided, labelled_at, png, by) of every
    image of ``batch`` that has a label; none while the batch is incomplete."""
    answers = batch.read_rows()
    decided = read_aggregate(batch.dir)
    if not decided:
        result = outcome(batch, answers, earlier_answers(all_batches(run_dir), batch))
        if not result.complete:
            return {}
        judge = result.panel.adjudicator or ""
        decided = {image: (batch.classes[int(result.labels[k])],
                           judge if image in result.rulings else result.panel.aggregation)
                   for k, image in enumerate(batch.images)}
    out = {}
    for item in batch.items:
        if item.image not in decided:
            continue
        mine = [a for image, a in answers if image == item.image]
        label, who = decided[item.image]
        out[item.id] = {"id": item.id, "label": label, "round": str(batch.round),
                        "annotator": who, "labelled_at": max((a.labelled_at for a in mine),
                                                             default=""),
                        "png": str(batch.dir / IMAGES_DIR / item.image),
                        "by": {a.annotator: a.label for a in mine}}
    return out
