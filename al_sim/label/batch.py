"""A query batch on disk: what the expert labels and where the answers go. Torch-free.

``<run dir>/labels/round_XX/``:

```
batch.json                 round, class names, image count (the batch's own config)
batch.csv                  image,pool_index,id,round,predicted,confidence (pick order)
images/<image>.png         each image at a viewable size
answers.csv                image,label,annotator,labelled_at (rewritten atomically per answer)
done.json                  written by the page's "done" (who, when)
labelstudio_tasks.json     the batch as a Label Studio import file
labelstudio_config.xml     the matching Label Studio labelling config
```
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from al_sim.maths.task import LABEL_SEPARATOR, NO_FINDING
from al_sim.runtime.errors import DataError, LabelError
from al_sim.runtime.files import atomic_write

LABELS_DIR = "labels"
IMAGES_DIR = "images"
META_FILE, BATCH_FILE, ANSWERS_FILE, DONE_FILE = "batch.json", "batch.csv", "answers.csv", \
    "done.json"
LS_TASKS_FILE, LS_CONFIG_FILE = "labelstudio_tasks.json", "labelstudio_config.xml"
BATCH_HEADER = ("image", "pool_index", "id", "round", "predicted", "confidence")
ANSWERS_HEADER = ("image", "label", "annotator", "labelled_at")


def batch_dir(run_dir: Path, round_: int) -> Path:
    """Where round ``round_``'s batch lives."""
    return Path(run_dir) / LABELS_DIR / f"round_{round_:02d}"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Item:
    """One image of a batch."""

    image: str  # the file name under images/
    pool_index: int
    id: str  # the dataset's id of the image (folder: its path below the root)
    predicted: str  # the model's class ("" before the first training)
    confidence: float | None


@dataclass(frozen=True)
class Answer:
    """One expert label: which class, who gave it, when."""

    label: str
    annotator: str
    labelled_at: str


@dataclass
class Batch:
    """A written batch (see module docstring)."""

    dir: Path
    round: int
    classes: list[str]
    items: list[Item]
    multilabel: bool = False  # classes are findings; an answer is a set of them (or none)

    def normalise(self, label: str) -> str:
        """``label`` as stored: a class; for multi-label the findings joined by ``|`` in class
        order, or ``No Finding``. LabelError naming the classes otherwise."""
        label = str(label).strip()
        if not self.multilabel:
            if label not in self.classes:
                raise LabelError(f"{label!r} is not a class of this run "
                                 f"({', '.join(self.classes)})")
            return label
        names = {n.strip() for n in label.split(LABEL_SEPARATOR) if n.strip()}
        if names == {NO_FINDING}:
            return NO_FINDING
        strange = sorted(names - set(self.classes))
        if not names or strange or NO_FINDING in names:
            raise LabelError(f"{label!r} is not a set of this run's findings "
                             f"({', '.join(self.classes)}) joined by '|', or {NO_FINDING!r} "
                             "alone")
        return LABEL_SEPARATOR.join(c for c in self.classes if c in names)

    def bits(self, label: str) -> list[int]:
        """A stored multi-label answer as one 0/1 per finding."""
        names = set(label.split(LABEL_SEPARATOR))
        return [int(c in names) for c in self.classes]

    @property
    def images(self) -> list[str]:
        """Image file names in pick order."""
        return [item.image for item in self.items]

    @property
    def answers_path(self) -> Path:
        """Path of ``answers.csv``."""
        return self.dir / ANSWERS_FILE

    @classmethod
    def load(cls, folder: Path) -> Batch:
        """Read the batch in ``folder``; DataError when it is missing or damaged."""
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            with (folder / BATCH_FILE).open(newline="", encoding="utf-8") as f:
                items = [Item(r["image"], int(r["pool_index"]), r["id"], r["predicted"],
                              float(r["confidence"]) if r["confidence"] else None)
                         for r in csv.DictReader(f)]
            return cls(folder, int(meta["round"]), [str(c) for c in meta["classes"]], items,
                       bool(meta.get("multilabel", False)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{folder} does not hold a readable query batch ({exc}); it is "
                            "written by python -m al_sim.run with oracle=human") from exc

    def read_answers(self) -> dict[str, Answer]:
        """The answers so far, by image, in the order they were given."""
        if not self.answers_path.exists():
            return {}
        with self.answers_path.open(newline="", encoding="utf-8") as f:
            return {r["image"]: Answer(r["label"], r["annotator"], r["labelled_at"])
                    for r in csv.DictReader(f)}

    def write_answers(self, answers: dict[str, Answer]) -> None:
        """Replace ``answers.csv`` atomically with ``answers`` (in their order)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(ANSWERS_HEADER)
        for image, a in answers.items():
            writer.writerow((image, a.label, a.annotator, a.labelled_at))
        atomic_write(self.answers_path, out.getvalue())

    def missing(self, answers: dict[str, Answer] | None = None) -> list[str]:
        """Images without an answer, in pick order."""
        answers = self.read_answers() if answers is None else answers
        return [name for name in self.images if name not in answers]


def write_batch(folder: Path, round_: int, classes: list[str], items: list[Item],
                pngs: list[bytes], multilabel: bool = False) -> Batch:
    """Write a batch's files (``pngs``: each item's image as PNG bytes) into ``folder``."""
    images = folder / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    for item, png in zip(items, pngs, strict=True):
        (images / item.image).write_bytes(png)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(BATCH_HEADER)
    for i in items:
        writer.writerow((i.image, i.pool_index, i.id, round_, i.predicted,
                         "" if i.confidence is None else f"{i.confidence:.4f}"))
    atomic_write(folder / BATCH_FILE, out.getvalue())
    batch = Batch(folder, round_, list(classes), items, multilabel)
    atomic_write(folder / LS_TASKS_FILE, json.dumps(labelstudio_tasks(batch), indent=1))
    atomic_write(folder / LS_CONFIG_FILE, labelstudio_config(classes, multilabel))
    meta = {"round": round_, "classes": list(classes), "n_images": len(items),
            "multilabel": multilabel}
    atomic_write(folder / META_FILE, json.dumps(meta, indent=1))  # last: marks it complete
    return batch


def labelstudio_tasks(batch: Batch) -> list[dict]:
    """The batch as Label Studio tasks (images served by LS's local-files storage)."""
    rel = f"{LABELS_DIR}/{batch.dir.name}/{IMAGES_DIR}"
    return [{"data": {"image": f"/data/local-files/?d={rel}/{i.image}", "file": i.image,
                      "pool_index": i.pool_index, "id": i.id, "round": batch.round}}
            for i in batch.items]


def labelstudio_config(classes: list[str], multilabel: bool = False) -> str:
    """A Label Studio labelling config: the image and one choice per class (``label``);
    multi-label: several choices per image, plus ``No Finding``."""
    names = [*classes, NO_FINDING] if multilabel else classes
    choices = "\n".join(f'    <Choice value="{escape(c)}"/>' for c in names)
    mode = "multiple" if multilabel else "single"
    return (f'<View>\n  <Image name="image" value="$image"/>\n'
            f'  <Choices name="label" toName="image" choice="{mode}" showInLine="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def current_batch(run_dir: Path) -> Batch:
    """The run's latest batch; DataError when there is none."""
    root = Path(run_dir) / LABELS_DIR
    found = sorted(p for p in root.glob("round_*") if (p / META_FILE).is_file()) \
        if root.is_dir() else []
    if not found:
        raise DataError(f"{run_dir} has no query batch to label ({LABELS_DIR}/round_XX/); run "
                        "python -m al_sim.run oracle=human ... first, and pass its run dir")
    return Batch.load(found[-1])


def all_batches(run_dir: Path) -> list[Batch]:
    """Every batch of the run, by round."""
    root = Path(run_dir) / LABELS_DIR
    return [Batch.load(p) for p in sorted(root.glob("round_*")) if (p / META_FILE).is_file()]
