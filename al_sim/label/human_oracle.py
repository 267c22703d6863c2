"""The human annotator: writes each query batch for an expert and reads the answers back.

``query`` answers from the batch's ``answers.csv`` once every image has a
label; until then it writes the batch (first time) and raises
``LabelsPending``, which pauses the run (see ``al_sim.core.events``). A batch
that no longer fits the run's selection is replaced; one holding any answer is
moved aside (``labels/set_aside/``), never deleted, and the pause says where.
With named annotators (``panel``) each image goes to several of them; the round's
label is their aggregate, and the answers, flags, agreement and expert seconds are
recorded for the loop to log.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from al_sim.core.events import LabelsPending
from al_sim.data.base import ALDataset
from al_sim.data.dicom import is_dicom, read_dicom
from al_sim.data.volume import resolve_window
from al_sim.label.batch import (
    META_FILE,
    USED_FILE,
    Batch,
    Item,
    batch_dir,
    now,
    write_batch,
)
from al_sim.label.batch_volumes import keep_dicom_values, keep_volume
from al_sim.label.locks import writing
from al_sim.label.panel import Panel, assign
from al_sim.label.panel_outcome import (
    Outcome,
    earlier_answers,
    outcome,
    write_aggregate,
    write_list,
)
from al_sim.label.rounds import all_batches, round_folders, set_aside
from al_sim.runtime.errors import DataError, LabelError
from al_sim.runtime.files import atomic_write
from al_sim.runtime.log_file import to_log_file
from al_sim.strategies.base import ModelView
from al_sim.tracking.contract import AGREEMENT_PREFIX, EXPERT_SECONDS, FLAGGED

MAX_SOURCE_SIDE = 2048  # original images larger than this are shrunk for the page


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _enlarged(img: Image.Image, size: int) -> Image.Image:
    """``img`` enlarged by a whole factor (nearest: no invented detail) towards ``size``."""
    scale = max(1, size // max(img.size))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def view_png(pixels: np.ndarray, size: int) -> bytes:
    """A ``C x H x W`` uint8 image as PNG, enlarged towards ``size`` pixels."""
    arr = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    return _png(_enlarged(Image.fromarray(np.ascontiguousarray(arr)), size))


def source_png(path: Path, size: int, window: str | Sequence[float] | None = None) -> bytes:
    """An original image file as PNG: small ones enlarged, huge ones shrunk; a DICOM file
    windowed as the model sees it (``dataset.window``, else the file's own)."""
    if is_dicom(path):
        pixels = Image.fromarray(read_dicom(path, resolve_window(window)))
        pixels.thumbnail((MAX_SOURCE_SIDE, MAX_SOURCE_SIDE))
        return _png(_enlarged(pixels, size))
    with Image.open(path) as opened:
        opened.load()
        img: Image.Image = opened
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB" if img.mode in ("RGBA", "P", "CMYK") else "L")
        img.thumbnail((MAX_SOURCE_SIDE, MAX_SOURCE_SIDE))
        return _png(_enlarged(img, size))


class HumanOracle:
    """Asks an expert through files in the run directory; counts the images they labelled.

    ``dataset.initial_labeled`` images keep their given labels (no question);
    ``dataset.pool_y`` is the truth where known (-1: unknown), for logging only.
    With ``source_root`` (image folders), the page shows the original files. ``panel``
    (its ``assigned`` left empty): named annotators, several per image.
    """

    def __init__(self, run_dir: Path, dataset: ALDataset, view_size: int = 256,
                 source_root: Path | None = None, window: str | Sequence[float] | None = None,
                 panel: Panel | None = None) -> None:
        self.run_dir, self.dataset, self.view_size = Path(run_dir), dataset, view_size
        self.source_root, self.window, self.panel = source_root, window, panel
        self.seconds = dict.fromkeys(panel.roster if panel else [], 0.0)  # cumulative
        self._last: tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, float]] = (
            {}, None, {})
        given = dataset.initial_labeled if dataset.initial_labeled is not None else np.array([])
        self._given = {int(i): dataset.pool_y[i] for i in given}  # a class, or finding bits
        self.n_annotated = 0

    def truth(self, indices: np.ndarray) -> np.ndarray:
        """The true labels where known, -1 elsewhere (for logging only)."""
        return self.dataset.pool_y[np.asarray(indices, dtype=np.int64)]

    def query(self, indices: np.ndarray, round_: int = 0, model: ModelView | None = None
              ) -> np.ndarray:
        """The expert's labels for ``indices``; ``LabelsPending`` until all are there."""
        indices = np.asarray(indices, dtype=np.int64)
        if all(int(i) in self._given for i in indices):
            self.n_annotated += len(indices)
            self._last = ({}, None, {})
            return np.array([self._given[int(i)] for i in indices], dtype=np.int64).reshape(
                len(indices), *self.dataset.pool_y.shape[1:])
        folder = batch_dir(self.run_dir, round_)
        batch = self._existing(folder, indices)
        if batch is None:
            kept = self._clear_from(round_)
            batch = self._write(folder, indices, round_, model)
            raise LabelsPending("\n".join([self._message(batch, len(indices), False), *kept]),
                                round_, folder, len(indices), False)
        if batch.panel is not None:
            return self._take_panel(batch)
        labels = self._take(batch)
        self.n_annotated += len(indices)
        if self.dataset.multilabel:
            return np.array([batch.bits(label) for label in labels], dtype=np.int64)
        index = {c: k for k, c in enumerate(self.dataset.class_names)}
        return np.array([index[label] for label in labels], dtype=np.int64)

    def _take(self, batch: Batch) -> list[str]:
        """The labels of a complete batch in pick order (``Batch.normalise``d), which is then
        marked used (a page or an import can no longer change what the run trained on);
        LabelsPending while some are missing."""
        with writing(batch.dir):
            answers = batch.read_answers()
            missing = batch.missing(answers)
            if not missing:
                try:
                    labels = [batch.normalise(answers[name].label) for name in batch.images]
                except LabelError as exc:
                    raise DataError(f"{batch.answers_path}: {exc}; fix it with "
                                    f"python -m al_sim.label {self.run_dir}") from None
                if not (batch.dir / USED_FILE).exists():
                    atomic_write(batch.dir / USED_FILE, json.dumps({"at": now()}))
        if missing:
            raise LabelsPending(self._message(batch, len(missing), True), batch.round, batch.dir,
                                len(missing), True)
        return labels

    def _take_panel(self, batch: Batch) -> np.ndarray:
        """The aggregated labels of a batch the named annotators completed (then marked used
        and ``aggregate.csv`` written); LabelsPending while answers or rulings are missing."""
        earlier = earlier_answers(all_batches(self.run_dir), batch)
        with writing(batch.dir):
            rows = batch.read_rows()
            try:
                result = outcome(batch, rows, earlier)
            except LabelError as exc:
                raise DataError(f"{batch.answers_path}: {exc}") from None
            write_list(batch, rows, result)
            if result.complete:
                write_aggregate(batch, rows, result)
                if not (batch.dir / USED_FILE).exists():
                    atomic_write(batch.dir / USED_FILE, json.dumps({"at": now()}))
        if not result.readers_done:
            raise LabelsPending(self._message(batch, result.missing, True, "answer(s)"),
                                batch.round, batch.dir, result.missing_images, True,
                                "still wait for an answer from one of their annotators")
        if not result.complete:
            raise LabelsPending(self._message(batch, result.waiting_rulings, True, "flagged"),
                                batch.round, batch.dir, result.waiting_rulings, True,
                                "are flagged and wait for the adjudicator "
                                f"({batch.panel.adjudicator if batch.panel else ''}; "
                                "adjudication.csv lists them)")
        self._record(batch, result)
        self.n_annotated += len(batch.items)
        return result.labels.copy()

    def _record(self, batch: Batch, result: Outcome) -> None:
        """Keep the round's answers per annotator, flags, agreement and seconds."""
        panel = result.panel
        answers = {name: result.matrix[:, j] for j, name in enumerate(panel.readers)}
        if panel.adjudicator is not None:
            judged = np.full(len(batch.items), -1, dtype=np.int64)
            for k, image in enumerate(batch.images):
                judged[k] = result.rulings.get(image, -1)
            answers[panel.adjudicator] = judged
        for name, seconds in result.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self._last = (answers, result.flagged.copy(), dict(result.agreement))

    def round_costs(self) -> dict[str, float]:
        """Named annotators: ``cost/expert_seconds`` (cumulative) and per annotator."""
        if self.panel is None:
            return {}
        out = {EXPERT_SECONDS: float(sum(self.seconds.values()))}
        out.update({f"{EXPERT_SECONDS}/{name}": s for name, s in self.seconds.items()})
        return out

    def round_agreement(self) -> dict[str, float]:
        """Named annotators: ``agreement/<statistic>`` of the last round and how many flagged."""
        if self.panel is None:
            return {}
        _, flagged, stats = self._last
        out = {f"{AGREEMENT_PREFIX}{k}": v for k, v in stats.items()}
        out[FLAGGED] = 0.0 if flagged is None else float(flagged.sum())
        return out

    def round_answers(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """The last round's answers per annotator (-1: not asked) and its flags."""
        return dict(self._last[0]), self._last[1]

    def _existing(self, folder: Path, indices: np.ndarray) -> Batch | None:
        """The batch already written for exactly ``indices``, if any."""
        if not (folder / META_FILE).is_file():
            return None
        try:
            batch = Batch.load(folder)
        except DataError:
            return None
        return batch if [i.pool_index for i in batch.items] == indices.tolist() else None

    def _clear_from(self, round_: int) -> list[str]:
        """Make way for a new round ``round_`` batch: that round's and later rounds' folders
        belong to another selection (or are half-written); set them aside. Returns notes."""
        notes = []
        for number, folder in round_folders(self.run_dir):
            if number >= round_:
                why = "not the images this run now asks about" if number == round_ else \
                    f"a later round than the run's round {round_}"
                note = set_aside(folder, why)
                if note is not None:
                    to_log_file(note, logging.WARNING)
                    notes.append(f"  note: {note}")
        return notes

    def _write(self, folder: Path, indices: np.ndarray, round_: int,
               model: ModelView | None) -> Batch:
        probs = None if model is None else model.probs(indices)
        ids = self.dataset.pool_ids
        items, pngs = [], []
        for k, idx in enumerate(indices.tolist()):
            ident = ids[idx] if ids is not None else str(idx)
            predicted, confidence = "", None
            if probs is not None and self.dataset.multilabel:  # the findings above 0.5
                predicted = self.dataset.task.describe(probs[k] >= 0.5)
                confidence = float(np.maximum(probs[k], 1.0 - probs[k]).min())
            elif probs is not None:
                predicted = self.dataset.class_names[int(probs[k].argmax())]
                confidence = float(probs[k].max())
            items.append(Item(f"{idx:07d}.png", idx, ident, predicted, confidence))
            source = None if self.source_root is None or ids is None else self.source_root / ident
            if self.dataset.pool_x.ndim == 5:  # a volume: NIfTI plus a montage of mid slices
                pngs.append(keep_volume(folder, items[-1].image,
                                        self.dataset.pool_x[idx][0].numpy(), source,
                                        self.view_size))
            elif source is not None and source.is_file():
                pngs.append(source_png(source, self.view_size, self.window))
                if is_dicom(source):  # its values too: the page's window/level
                    keep_dicom_values(folder, items[-1].image, source, self.window)
            else:
                pngs.append(view_png(self.dataset.pool_x[idx].numpy(), self.view_size))
        panel = None if self.panel is None else replace(
            self.panel, assigned=assign([i.image for i in items], self.panel.readers,
                                        self.panel.per_image, round_))
        return write_batch(folder, round_, self.dataset.class_names, items, pngs,
                           self.dataset.multilabel, panel)

    def _message(self, batch: Batch, missing: int, partial: bool, unit: str = "images") -> str:
        n = len(batch.items)
        what = (f"round {batch.round}: {missing} of {n} images still have no label"
                if partial else f"round {batch.round}: {n} images wait for an expert's labels")
        if batch.panel is not None:
            what = (f"round {batch.round}: {missing} {unit} of {n} images still missing"
                    if partial else f"round {batch.round}: {n} images wait for "
                    f"{batch.panel.per_image} of {', '.join(batch.panel.readers)} each")
        return (f"{what} in {batch.dir}\n"
                f"  label them in the browser: python -m al_sim.label {self.run_dir}\n"
                f"  or import a Label Studio / file,label CSV export: python -m al_sim.label "
                f"{self.run_dir} --import <file>")

    def state(self) -> dict:
        """The annotation count, and the expert seconds so far (for checkpoints)."""
        out: dict = {"n_annotated": self.n_annotated}
        if self.panel is not None:
            out["seconds"] = dict(self.seconds)
        return out

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state`."""
        self.n_annotated = int(state["n_annotated"])
        self.seconds.update({k: float(v) for k, v in state.get("seconds", {}).items()})
