"""The expert's answers to one batch: checked, written atomically after each change."""

from __future__ import annotations

import json
import threading

from al_sim.label.batch import DONE_FILE, Answer, Batch, now
from al_sim.runtime.errors import LabelError
from al_sim.runtime.files import atomic_write

_SHOWN = 5


def listing(items: list[str]) -> str:
    """A few names, then how many more."""
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


class AnswerBook:
    """Answers by image, in the order given; safe to use from the server's threads."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._lock = threading.Lock()
        self._answers = batch.read_answers()

    def check(self, image: str, label: str) -> str:
        """``label`` as stored (``Batch.normalise``); LabelError unless ``image`` is in the
        batch and ``label`` a configured class (or, multi-label, a set of findings)."""
        if image not in set(self.batch.images):
            raise LabelError(f"{image!r} is not an image of the round {self.batch.round} batch "
                             f"({self.batch.dir})")
        return self.batch.normalise(label)

    def set_many(self, labels: dict[str, str], annotator: str) -> None:
        """Record ``image -> label`` answers; all are checked before anything is written."""
        labels = {image: self.check(image, label) for image, label in labels.items()}
        with self._lock:
            for image, label in labels.items():
                self._answers.pop(image, None)  # a changed answer becomes the latest
                self._answers[image] = Answer(label, annotator, now())
            self.batch.write_answers(self._answers)

    def set(self, image: str, label: str, annotator: str) -> None:
        """Record one answer (the same answer twice is harmless)."""
        self.set_many({image: label}, annotator)

    def undo(self) -> str | None:
        """Remove the latest answer; returns its image (None when there is none)."""
        with self._lock:
            if not self._answers:
                return None
            image = next(reversed(self._answers))
            del self._answers[image]
            self.batch.write_answers(self._answers)
            return image

    def answers(self) -> dict[str, Answer]:
        """A copy of the answers so far."""
        with self._lock:
            return dict(self._answers)

    def progress(self) -> dict[str, int]:
        """How many images are labelled, of how many."""
        with self._lock:
            return {"labelled": len(self._answers), "total": len(self.batch.items)}

    def done(self, annotator: str) -> None:
        """Mark the batch finished; LabelError (with the count) while images lack a label."""
        with self._lock:
            missing = self.batch.missing(self._answers)
            if missing:
                raise LabelError(f"{len(missing)} of {len(self.batch.items)} images still have "
                                 f"no label: {listing(missing)}")
            atomic_write(self.batch.dir / DONE_FILE,
                         json.dumps({"annotator": annotator, "at": now()}))
