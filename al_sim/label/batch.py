"""A query batch on disk: what the expert labels and where the answers go. Torch-free.

``<run dir>/labels/round_XX/``:

```
batch.json                 round, class names, multilabel, the items (what the run reads back)
batch.csv                  image,pool_index,id,round,predicted,confidence (pick order; for people:
                           a spreadsheet may re-save it, the run reads batch.json)
images/<image>.png         each image at a viewable size
answers.csv                image,label,annotator,labelled_at,other_answers (merged and rewritten
                           atomically per change, under .answers.lock); with named annotators
                           (batch.json's panel) one row per image and annotator
adjudication.csv           named annotators: the images flagged for adjudication
aggregate.csv              named annotators: the label the run took per image, and who decided
done.json                  written by the page's "done" (who, when)
used.json                  written when the run takes the answers (later changes are refused)
labelstudio_tasks.json     the batch as a Label Studio import file
labelstudio_config.xml     the matching Label Studio labelling config
```
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from al_sim.label.panel import Panel
from al_sim.maths.task import LABEL_SEPARATOR, NO_FINDING
from al_sim.runtime.errors import DataError, LabelError
from al_sim.runtime.files import atomic_write

LABELS_DIR = "labels"
IMAGES_DIR = "images"
META_FILE, BATCH_FILE, ANSWERS_FILE, DONE_FILE = "batch.json", "batch.csv", "answers.csv", \
    "done.json"
USED_FILE = "used.json"
LS_TASKS_FILE, LS_CONFIG_FILE = "labelstudio_tasks.json", "labelstudio_config.xml"
BATCH_HEADER = ("image", "pool_index", "id", "round", "predicted", "confidence")
ANSWERS_HEADER = ("image", "label", "annotator", "labelled_at", "other_answers")
CSV_ENCODING = "utf-8-sig"  # reads what spreadsheets save (a byte-order mark) and plain UTF-8


def batch_dir(run_dir: Path, round_: int) -> Path:
    """Where round ``round_``'s batch lives."""
    return Path(run_dir) / LABELS_DIR / f"round_{round_:02d}"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def now_ms() -> str:
    """The current UTC time, ISO 8601 to the millisecond (answer times that count seconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
    others: str = ""  # other annotators' differing answers ("label by who; ..."), if any


@dataclass
class Batch:
    """A written batch (see module docstring)."""

    dir: Path
    round: int
    classes: list[str]
    items: list[Item]
    multilabel: bool = False  # classes are findings; an answer is a set of them (or none)
    panel: Panel | None = None  # named annotators, several per image (None: one expert)

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
        """Read the batch in ``folder``; DataError when it is missing or damaged.

        The items come from ``batch.json``; batches written before it held them
        are read from ``batch.csv``.
        """
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            if "items" in meta:
                items = [Item(str(i["image"]), int(i["pool_index"]), str(i["id"]),
                              str(i["predicted"]), None if i["confidence"] is None
                              else float(i["confidence"])) for i in meta["items"]]
            else:
                with (folder / BATCH_FILE).open(newline="", encoding=CSV_ENCODING) as f:
                    items = [Item(r["image"], int(r["pool_index"]), r["id"], r["predicted"],
                                  float(r["confidence"]) if r["confidence"] else None)
                             for r in csv.DictReader(f)]
            panel = None if meta.get("panel") is None else Panel.from_dict(meta["panel"])
            return cls(folder, int(meta["round"]), [str(c) for c in meta["classes"]], items,
                       bool(meta.get("multilabel", False)), panel)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{folder} does not hold a readable query batch ({exc}); it is "
                            "written by python -m al_sim.run with oracle=human") from exc

    def read_answers(self) -> dict[str, Answer]:
        """The answers so far, by image, in the order they were given; DataError if unreadable."""
        return dict(self.read_rows())

    def read_rows(self) -> list[tuple[str, Answer]]:
        """Every row of ``answers.csv`` as ``(image, answer)``, in file order (with named
        annotators one per image and annotator); DataError if unreadable."""
        path = self.answers_path
        try:
            with path.open(newline="", encoding=CSV_ENCODING) as f:
                reader = csv.DictReader(f)
                missing = [c for c in ANSWERS_HEADER[:2] if c not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"{path} lacks the column(s) {', '.join(missing)} (header: "
                                    f"{','.join(reader.fieldnames or [])!r}); its header is "
                                    f"{','.join(ANSWERS_HEADER)}")
                return [(r["image"].strip(), Answer(r["label"].strip(), r.get("annotator") or "",
                                                    r.get("labelled_at") or "",
                                                    r.get("other_answers") or ""))
                        for r in reader  # a row whose label was cleared: no answer
                        if (r.get("image") or "").strip() and (r.get("label") or "").strip()]
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {path} ({exc}): save it as UTF-8 CSV with the header "
                            f"{','.join(ANSWERS_HEADER)}") from exc

    def write_answers(self, answers: dict[str, Answer]) -> None:
        """Replace ``answers.csv`` atomically with ``answers`` (in their order)."""
        self.write_rows(list(answers.items()))

    def write_rows(self, rows: list[tuple[str, Answer]]) -> None:
        """Replace ``answers.csv`` atomically with ``(image, answer)`` rows (in their order)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(ANSWERS_HEADER)
        for image, a in rows:
            writer.writerow((image, a.label, a.annotator, a.labelled_at, a.others))
        atomic_write(self.answers_path, out.getvalue())

    def missing(self, answers: dict[str, Answer] | None = None) -> list[str]:
        """Images without an answer, in pick order."""
        answers = self.read_answers() if answers is None else answers
        return [name for name in self.images if name not in answers]


def write_batch(folder: Path, round_: int, classes: list[str], items: list[Item],
                pngs: list[bytes], multilabel: bool = False, panel: Panel | None = None) -> Batch:
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
    batch = Batch(folder, round_, list(classes), items, multilabel, panel)
    atomic_write(folder / LS_TASKS_FILE, json.dumps(labelstudio_tasks(batch), indent=1))
    atomic_write(folder / LS_CONFIG_FILE, labelstudio_config(classes, multilabel))
    meta = {"round": round_, "classes": list(classes), "n_images": len(items),
            "multilabel": multilabel, "items": [asdict(i) for i in items]}
    if panel is not None:
        meta["panel"] = panel.to_dict()
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
    view = ET.Element("View")
    ET.SubElement(view, "Image", name="image", value="$image")
    choices = ET.SubElement(view, "Choices", name="label", toName="image",
                            choice="multiple" if multilabel else "single", showInLine="true")
    for c in [*classes, NO_FINDING] if multilabel else classes:
        ET.SubElement(choices, "Choice", value=c)  # escaped: a class may hold " & < >
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"
