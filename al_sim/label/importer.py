"""Labels from other tools into a batch: which of the batch's images each row means.

A row names its image by the batch's ``pool_index`` (Label Studio exports of
our tasks carry it), by the dataset's id (a path ending in it), by our task
URL, or by a bare file name: the batch's image name or the image's own file
name. A bare name that two of the batch's images answer to (a pool file
called ``0000013.png`` and the batch's own ``0000013.png``) is refused, never
guessed. Everything is checked first; a bad file writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

from al_sim.label.answers import AnswerBook, listing
from al_sim.label.batch import IMAGES_DIR, Answer, Batch, now
from al_sim.label.import_rows import Row, read_rows
from al_sim.runtime.errors import LabelError

_ROUND_FOLDER = re.compile(r"round_(\d+)")


def _path(ref: str) -> PurePosixPath:
    """The path a file name, path or Label Studio URL (``/data/local-files/?d=...``) names."""
    ref = ref.strip()
    parsed = urlparse(ref)
    if "d" in parse_qs(parsed.query):
        ref = parse_qs(parsed.query)["d"][0]
    elif parsed.scheme or parsed.netloc:
        ref = parsed.path
    return PurePosixPath(unquote(ref).replace("\\", "/").lstrip("/"))


class _Names:
    """The batch's images by every name a row may use."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.by_index = {item.pool_index: item.image for item in batch.items}
        self.by_id = {item.id: item.image for item in batch.items}
        self.by_name: dict[str, set[str]] = {}
        for item in batch.items:
            for name in (item.image, PurePosixPath(item.id).name):
                self.by_name.setdefault(name, set()).add(item.image)

    def candidates(self, ref: str, where: str, file: str) -> set[str]:
        """The batch images ``ref`` may mean (several: ambiguous; none: not in the batch)."""
        path = _path(ref)
        text = path.as_posix()
        by_id = {image for ident, image in self.by_id.items()
                 if text == ident or text.endswith("/" + ident)}
        if by_id:
            return by_id
        folder = _ROUND_FOLDER.fullmatch(path.parent.parent.name)
        if path.parent.name == IMAGES_DIR and folder:  # our task's URL: labels/round_XX/images/
            if int(folder.group(1)) != self.batch.round:
                raise LabelError(f"{file}: {where} is an image of round {int(folder.group(1))}, "
                                 f"but the batch waiting is round {self.batch.round} "
                                 f"({self.batch.dir}): import that round's export")
            return {path.name} & set(self.by_index.values())
        return self.by_name.get(path.name, set())

    def resolve(self, row: Row, file: str) -> str | None:
        """The batch image ``row`` labels; None when it is not in the batch."""
        if row.round is not None and row.round != self.batch.round:
            raise LabelError(f"{file}: {row.where} is from round {row.round}, but the batch "
                             f"waiting is round {self.batch.round} ({self.batch.dir}): import "
                             "that round's export")
        named = set() if row.ref is None else self.candidates(row.ref, row.where, file)
        if row.pool_index is not None:
            image = self.by_index.get(row.pool_index)
            if image is not None and named and image not in named:
                raise LabelError(f"{file}: {row.where} names {row.ref} and pool_index "
                                 f"{row.pool_index}: two different images of the batch")
            return image
        if len(named) > 1:
            raise LabelError(
                f"{file}: {row.where}: {row.ref} could be any of the batch images "
                f"{', '.join(sorted(named))} (a batch image name and an image's own file name "
                "are the same); name it by its dataset id (the `id` column of batch.csv) or "
                "add a pool_index column")
        return next(iter(named), None)


def read_labels(path: Path, batch: Batch, warn: Callable[[str], None] = lambda _: None,
                ) -> dict[str, Answer]:
    """``image -> answer`` from an export file (annotator None where the file names none)."""
    rows = read_rows(path)
    names = _Names(batch)
    resolved = [(row, names.resolve(row, path.name)) for row in rows]
    unknown = [row.ref or f"pool_index {row.pool_index}" for row, image in resolved
               if image is None]
    if unknown:
        raise LabelError(f"{path}: {len(unknown)} row(s) name images not in the round "
                         f"{batch.round} batch: {listing(unknown)}")
    stored: dict[str, str] = {}  # a file's label -> as stored (Batch.normalise)
    strange = set()
    for label in {row.label for row in rows} | {label for row in rows for label, _ in row.others}:
        try:
            stored[label] = batch.normalise(label)
        except LabelError:
            strange.add(label)
    if strange:
        what = "sets of findings" if batch.multilabel else "classes"
        raise LabelError(f"{path}: label(s) {listing(sorted(strange))} are not {what} of this "
                         f"run ({', '.join(batch.classes)})")
    found: dict[str, Answer] = {}
    at = now()
    for row, image in resolved:
        if image is None:
            continue  # refused above
        label = stored[row.label]
        if image in found and found[image].label != label:
            raise LabelError(f"{path}: {row.ref or image} has two different labels "
                             f"({found[image].label}, {label}; {row.where})")
        others = "; ".join(f"{stored[other]} by {who or 'unknown'}" for other, who in row.others
                           if stored[other] != label)
        if others:
            warn(f"{path.name}: {row.where} ({image}): the annotations disagree; kept the "
                 f"last, {label} by {row.annotator or 'unknown'}; the others ({others}) "
                 "are kept in answers.csv's other_answers column")
        found[image] = Answer(label, row.annotator or "", at, others)
    return found


def import_labels(path: Path, batch: Batch, annotator: str,
                  warn: Callable[[str], None] = lambda _: None) -> int:
    """Merge the labels of ``path`` into the batch's answers; returns how many were read.

    ``annotator`` stands for rows that name nobody; answers the file changes are
    reported through ``warn``.
    """
    if batch.panel is not None:
        return import_panel(path, batch, annotator)
    found = read_labels(path, batch, warn)
    answers = {image: a if a.annotator else Answer(a.label, annotator, a.labelled_at, a.others)
               for image, a in found.items()}
    replaced = AnswerBook(batch).record(answers)
    if replaced:
        warn(f"{len(replaced)} earlier answer(s) now have the file's label: " + listing(
            [f"{image} {old.label} ({old.annotator}) -> {answers[image].label}"
             for image, old in replaced.items()]))
    return len(answers)


def import_panel(path: Path, batch: Batch, annotator: str | None) -> int:
    """Merge every annotation of ``path`` (several per task kept, each by its annotator) into
    a batch labelled by named annotators, all or none; returns how many answers were read.

    ``annotator`` stands for rows that name nobody. An unknown annotator, one answering an
    image twice, an adjudication of an image that is not flagged: LabelError, nothing written.
    """
    from al_sim.label.panel_book import PanelBook

    rows = read_rows(path)
    names = _Names(batch)
    answers = []
    for row in rows:
        image = names.resolve(row, path.name)
        if image is None:
            raise LabelError(f"{path}: {row.where} names {row.ref or row.pool_index}, which is "
                             f"not in the round {batch.round} batch")
        for label, who in row.answers:
            if not (who or annotator):
                raise LabelError(f"{path}: {row.where} names no annotator; the batch is "
                                 "labelled by named annotators: add an annotator column, or "
                                 "pass --annotator NAME")
            answers.append((image, str(who or annotator), label))
    try:
        PanelBook(batch, batch.dir.parents[1]).record(answers, replace=False)
    except LabelError as exc:
        raise LabelError(f"{path}: {exc}") from None
    return len(answers)
