"""The expert's answers to one batch: checked, merged into ``answers.csv`` under its lock.

Every change re-reads the file under ``.answers.lock`` and writes it back
atomically, so answers from a page, an import and another writer all stay.
"""

from __future__ import annotations

import json
from dataclasses import replace

from al_sim.label.batch import DONE_FILE, USED_FILE, Answer, Batch, now
from al_sim.label.locks import writing
from al_sim.runtime.errors import LabelError
from al_sim.runtime.files import atomic_write

_SHOWN = 5


def listing(items: list[str]) -> str:
    """A few names, then how many more."""
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


class AnswerConflictError(LabelError):
    """A change that no longer fits the answers on disk (e.g. undo of an image without one)."""


class AnswerBook:
    """Answers by image, in the order given, as ``answers.csv`` holds them now."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._images = set(batch.images)

    def check(self, image: str, label: str) -> str:
        """``label`` as stored (``Batch.normalise``); LabelError unless ``image`` is in the
        batch and ``label`` a configured class (or, multi-label, a set of findings)."""
        if image not in self._images:
            raise LabelError(f"{image!r} is not an image of the round {self.batch.round} batch "
                             f"({self.batch.dir})")
        return self.batch.normalise(label)

    def _unused(self) -> None:
        """AnswerConflictError once the run has taken this batch's answers."""
        if (self.batch.dir / USED_FILE).exists():
            raise AnswerConflictError(
                f"the run already trained on the round {self.batch.round} answers "
                f"({self.batch.dir}); a change here would not count. Nothing was changed")

    def record(self, answers: dict[str, Answer]) -> dict[str, Answer]:
        """Merge ``image -> answer`` into the file (all checked first); returns the answers
        they replaced that had another label."""
        answers = {image: replace(answer, label=self.check(image, answer.label))
                   for image, answer in answers.items()}
        with writing(self.batch.dir):
            self._unused()
            current = self.batch.read_answers()
            replaced = {image: current[image] for image, a in answers.items()
                        if image in current and current[image].label != a.label}
            for image, answer in answers.items():
                current.pop(image, None)  # a changed answer becomes the latest
                current[image] = answer
            self.batch.write_answers(current)
        return replaced

    def set_many(self, labels: dict[str, str], annotator: str) -> dict[str, Answer]:
        """Record ``image -> label`` answers by ``annotator``; see :meth:`record`."""
        at = now()
        return self.record({image: Answer(label, annotator, at) for image, label in labels.items()})

    def set(self, image: str, label: str, annotator: str) -> None:
        """Record one answer (the same answer twice is harmless)."""
        self.set_many({image: label}, annotator)

    def undo(self, image: str | None = None) -> str | None:
        """Remove ``image``'s answer (default: the latest one); returns the image (None when
        there is no answer). AnswerConflictError when ``image`` has no answer (any more)."""
        with writing(self.batch.dir):
            self._unused()
            current = self.batch.read_answers()
            if image is None:
                if not current:
                    return None
                image = next(reversed(current))
            elif image not in current:
                raise AnswerConflictError(f"{image!r} has no answer to undo (another page or an "
                                     "import changed the answers: reload the page)")
            del current[image]
            self.batch.write_answers(current)
            return image

    def answers(self) -> dict[str, Answer]:
        """The answers on disk now."""
        return self.batch.read_answers()

    def progress(self, answers: dict[str, Answer] | None = None) -> dict[str, int]:
        """How many images are labelled, of how many."""
        answers = self.answers() if answers is None else answers
        return {"labelled": len(self._images & set(answers)), "total": len(self.batch.items)}

    def done(self, annotator: str) -> None:
        """Mark the batch finished; LabelError (with the count) while images lack a label."""
        with writing(self.batch.dir):
            missing = self.batch.missing(self.batch.read_answers())
            if missing:
                raise LabelError(f"{len(missing)} of {len(self.batch.items)} images still have "
                                 f"no label: {listing(missing)}")
            atomic_write(self.batch.dir / DONE_FILE,
                         json.dumps({"annotator": annotator, "at": now()}))


class SingleDesk:
    """The one expert's view of a batch (no named annotators), as the page uses it."""

    def __init__(self, book: AnswerBook, annotator: str) -> None:
        self.book, self.annotator = book, annotator

    def view(self) -> dict:
        """The page's ``/api/batch``: every image with its answer."""
        answers = self.book.answers()
        images = [{"image": image, "label": answers[image].label if image in answers else None}
                  for image in self.book.batch.images]
        listed = set(self.book.batch.images)
        return {"images": images, "answered": [i for i in answers if i in listed],
                **self.book.progress(answers)}

    def progress(self) -> dict[str, int]:
        """How many images are labelled, of how many."""
        return self.book.progress()

    def set(self, image: str, label: str) -> None:
        """Record the answer to ``image``."""
        self.book.set(image, label, self.annotator)

    def undo(self, image: str | None = None) -> str | None:
        """Remove the answer to ``image`` (default: the latest)."""
        return self.book.undo(image)

    def done(self) -> bool:
        """Mark the batch finished (it then is)."""
        self.book.done(self.annotator)
        return True
