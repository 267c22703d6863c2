"""Answers of several named annotators to one batch, merged into ``answers.csv`` under its lock.

One row per image and annotator. A reader sees and changes only their own answers
(nobody sees another reader's); the adjudicator answers only the images flagged once
every reader is done, seeing the readers' answers. After every change the
adjudication list (``adjudication.csv``) is rewritten. Every refusal is one LabelError
and leaves ``answers.csv`` as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from al_sim.label.answers import AnswerConflictError
from al_sim.label.batch import DONE_FILE, USED_FILE, Answer, Batch, now, now_ms
from al_sim.label.locks import writing
from al_sim.label.panel_outcome import Outcome, earlier_answers, outcome, write_list
from al_sim.label.rounds import all_batches
from al_sim.runtime.errors import LabelError
from al_sim.runtime.files import atomic_write


class PanelBook:
    """A batch's answers by its named annotators (``batch.panel``)."""

    def __init__(self, batch: Batch, run_dir: Path) -> None:
        if batch.panel is None:
            raise LabelError(f"{batch.dir} is labelled by one expert, not by named annotators")
        self.batch, self.panel = batch, batch.panel
        self._earlier: np.ndarray | None = None
        if batch.panel.aggregation == "dawid_skene":
            self._earlier = earlier_answers(all_batches(run_dir), batch)

    def state(self) -> tuple[list[tuple[str, Answer]], Outcome]:
        """The rows of ``answers.csv`` now and the outcome they make."""
        rows = self.batch.read_rows()
        return rows, outcome(self.batch, rows, self._earlier)

    def _unused(self) -> None:
        if (self.batch.dir / USED_FILE).exists():
            raise AnswerConflictError(
                f"the run already trained on the round {self.batch.round} answers "
                f"({self.batch.dir}); a change here would not count. Nothing was changed")

    def _commit(self, rows: list[tuple[str, Answer]]) -> Outcome:
        """Check ``rows`` as a whole (LabelError: nothing written), write them and the list."""
        result = outcome(self.batch, rows, self._earlier)
        self.batch.write_rows(rows)
        write_list(self.batch, rows, result)
        return result

    def record(self, answers: list[tuple[str, str, str]], replace: bool = True,
               at: str | None = None) -> None:
        """Merge ``(image, annotator, label)`` answers, all or none. ``replace``: a new answer
        replaces the annotator's earlier one (the page); otherwise a different second answer
        by one annotator to one image is refused (an import)."""
        stored = [(image, who, self._check(image, label)) for image, who, label in answers]
        at = at or now_ms()
        with writing(self.batch.dir):
            self._unused()
            rows, current = self.state()
            if current.rulings and any(who != self.panel.adjudicator for _, who, _ in stored):
                raise AnswerConflictError(
                    f"the adjudicator has started on the round {self.batch.round} batch; the "
                    "readers' answers are closed. Nothing was changed")
            for image, who, label in stored:
                mine = [k for k, (name, a) in enumerate(rows)
                        if name == image and a.annotator == who]
                if mine and not replace and rows[mine[0]][1].label != label:
                    raise LabelError(
                        f"{who} answered {image!r} twice ({rows[mine[0]][1].label} and "
                        f"{label}); each annotator answers an image once: undo the first on "
                        "the page, or keep one answer in the file. Nothing was changed")
                if mine and not replace:
                    continue  # the same answer again
                rows = [r for k, r in enumerate(rows) if k not in mine]
                rows.append((image, Answer(label, who, at)))
            self._commit(rows)

    def _check(self, image: str, label: str) -> str:
        if image not in self.batch.images:
            raise LabelError(f"{image!r} is not an image of the round {self.batch.round} batch "
                             f"({self.batch.dir})")
        return self.batch.normalise(label)

    def undo(self, annotator: str, image: str | None = None) -> str | None:
        """Remove ``annotator``'s answer to ``image`` (default: their latest); returns the image."""
        with writing(self.batch.dir):
            self._unused()
            rows, current = self.state()
            mine = [k for k, (_, a) in enumerate(rows) if a.annotator == annotator]
            if image is not None:
                mine = [k for k in mine if rows[k][0] == image]
                if not mine:
                    raise AnswerConflictError(f"{image!r} has no answer by {annotator} to undo "
                                              "(reload the page)")
            if not mine:
                return None
            if annotator != self.panel.adjudicator and current.rulings:
                raise AnswerConflictError("the adjudicator has started; the readers' answers "
                                          "are closed. Nothing was changed")
            image = rows[mine[-1]][0]
            self._commit([r for k, r in enumerate(rows) if k != mine[-1]])
            return image

    def done(self, annotator: str) -> bool:
        """``annotator`` finished (recorded in ``done.json``); LabelError while their images
        lack an answer. Returns whether everyone is done: the batch is complete and each
        annotator with images to answer pressed done."""
        with writing(self.batch.dir):
            rows, result = self.state()
            desk = Desk(self, annotator)
            left = desk.total(result) - desk.answered_count(rows, result)
            if left:
                raise LabelError(f"{left} of your {desk.total(result)} images still have no "
                                 "answer")
            path = self.batch.dir / DONE_FILE
            try:
                by = dict(json.loads(path.read_text(encoding="utf-8")).get("by", {}))
            except (OSError, ValueError, AttributeError):
                by = {}
            by[annotator] = now()
            atomic_write(path, json.dumps({"by": by}))
            busy = [name for name in self.panel.roster if name not in by
                    and Desk(self, name).total(result)]
            return result.complete and not busy


class Desk:
    """One annotator's view of a panel batch: what the page shows them and what they may do."""

    def __init__(self, book: PanelBook, annotator: str) -> None:
        self.book, self.annotator = book, annotator
        self.judge = annotator == book.panel.adjudicator

    def images(self, result: Outcome) -> list[str]:
        """The images this annotator answers: their own share, or the flagged ones."""
        batch = self.book.batch
        if self.judge:
            return [i for i, f in zip(batch.images, result.flagged, strict=True) if f]
        return self.book.panel.images_of(self.annotator, batch.images)

    def total(self, result: Outcome) -> int:
        """How many images they answer (the adjudicator: 0 until the readers are done)."""
        return len(self.images(result))

    def answered_count(self, rows: list[tuple[str, Answer]], result: Outcome) -> int:
        """How many of their images they answered."""
        theirs = set(self.images(result))
        return len({image for image, a in rows if a.annotator == self.annotator
                    and image in theirs})

    def view(self) -> dict:
        """The page's ``/api/batch`` for this annotator: their images and only their answers
        (the adjudicator also sees the readers' answers of the flagged images)."""
        rows, result = self.book.state()
        own = {image: a.label for image, a in rows if a.annotator == self.annotator}
        entries = []
        for image in self.images(result):
            entry: dict[str, object] = {"image": image, "label": own.get(image)}
            if self.judge:
                entry["answers"] = "; ".join(f"{a.label} by {a.annotator}" for name, a in rows
                                             if name == image and a.annotator != self.annotator)
            entries.append(entry)
        waiting = "" if not self.judge or result.readers_done else (
            f"waiting for the readers: {result.missing} answer(s) still missing")
        return {"images": entries, "answered": [i for i, a in rows if a.annotator ==
                                                  self.annotator and i in own],
                "waiting": waiting, "role": "adjudicator" if self.judge else "reader",
                **self.progress(rows, result)}

    def progress(self, rows: list[tuple[str, Answer]] | None = None,
                 result: Outcome | None = None) -> dict[str, int]:
        """How many of their images they answered, of how many."""
        if rows is None or result is None:
            rows, result = self.book.state()
        return {"labelled": self.answered_count(rows, result), "total": self.total(result)}

    def set(self, image: str, label: str) -> None:
        """Record their answer to ``image`` (replacing their earlier one)."""
        self.book.record([(image, self.annotator, label)])

    def undo(self, image: str | None = None) -> str | None:
        """Remove their answer to ``image`` (default: the latest)."""
        return self.book.undo(self.annotator, image)

    def done(self) -> bool:
        """They finished; whether the whole batch is complete."""
        return self.book.done(self.annotator)
