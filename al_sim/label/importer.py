"""Labels from other tools: a Label Studio JSON or CSV export, or any ``file,label`` CSV.

Rows name an image by the batch's file name, by a path or URL ending in it
(Label Studio's ``image`` field), or by the dataset's own id (an image
folder's file name). Everything is checked first; a bad file writes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

from al_sim.label.answers import AnswerBook, listing
from al_sim.label.batch import Batch
from al_sim.maths.task import LABEL_SEPARATOR
from al_sim.runtime.errors import LabelError

FILE_COLUMNS = ("file", "image")  # the first one present names the image
LABEL_COLUMN = "label"


def _basename(ref: str) -> str:
    """The file name a path or Label Studio URL (``/data/local-files/?d=...``) points at."""
    ref = ref.strip()
    parsed = urlparse(ref)
    if "d" in parse_qs(parsed.query):
        ref = parse_qs(parsed.query)["d"][0]
    elif parsed.scheme or parsed.netloc:
        ref = parsed.path
    return PurePosixPath(unquote(ref)).name


def _resolver(batch: Batch) -> dict[str, str]:
    """Every name a row may use for an image -> the batch's file name."""
    names = {}
    for item in batch.items:
        names[PurePosixPath(item.id).name] = item.image
        names[item.image] = item.image
    return names


def _annotator(annotation: dict) -> str | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("username") or who.get("id")
    return None if who in (None, "") else str(who)


def _json_rows(data: object, name: str) -> list[tuple[str, str, str | None]]:
    """(image ref, label, annotator) from Label Studio's JSON or JSON-MIN export."""
    if not isinstance(data, list):
        raise LabelError(f"{name}: a Label Studio export is a JSON list of tasks")
    rows: list[tuple[str, str, str | None]] = []
    for k, task in enumerate(data, start=1):
        if not isinstance(task, dict):
            raise LabelError(f"{name}: task {k} is not a JSON object")
        source = task.get("data", task)
        ref = next((str(source[c]) for c in FILE_COLUMNS if source.get(c)), None)
        if ref is None:
            raise LabelError(f"{name}: task {k} has no {' or '.join(FILE_COLUMNS)} field")
        if "annotations" not in task:  # JSON-MIN: the choice sits beside the data
            if task.get(LABEL_COLUMN):
                rows.append((ref, _choice(task[LABEL_COLUMN]), None))
            continue
        kept = [a for a in task["annotations"] if not a.get("was_cancelled")]
        if not kept:
            continue  # skipped in Label Studio: still unlabelled here
        latest = kept[-1]
        choices = [r["value"]["choices"] for r in latest.get("result", [])
                   if r.get("type") == "choices" and r.get("value", {}).get("choices")]
        if not choices:
            raise LabelError(f"{name}: task {k} ({ref}) has an annotation without a choice")
        rows.append((ref, _choice(choices[0]), _annotator(latest)))
    return rows


def _choice(value: object) -> str:
    """A choice as text; several (Label Studio's ``choice="multiple"``) joined by ``|``."""
    if isinstance(value, str) and value.lstrip().startswith("{"):  # LS CSV: {"choices": [...]}
        with contextlib.suppress(json.JSONDecodeError):  # else: a label that starts with {
            value = json.loads(value)
    if isinstance(value, dict) and "choices" in value:
        value = value["choices"]
    if isinstance(value, list):
        return LABEL_SEPARATOR.join(str(v).strip() for v in value)
    return str(value).strip()


def _csv_rows(text: str, name: str) -> list[tuple[str, str, str | None]]:
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    column = next((c for c in FILE_COLUMNS if c in fields), None)
    if column is None or LABEL_COLUMN not in fields:
        raise LabelError(f"{name}: a CSV needs a header with `file` (or `image`) and `label` "
                         f"columns, got {','.join(fields)!r}")
    rows = []
    for row in reader:
        if (row.get(column) or "").strip() and (row.get(LABEL_COLUMN) or "").strip():
            rows.append((row[column], _choice(row[LABEL_COLUMN]), row.get("annotator") or None))
        elif (row.get(column) or "").strip() == "" and (row.get(LABEL_COLUMN) or "").strip():
            raise LabelError(f"{name}: line {reader.line_num} has a label but no file")
    return rows


def read_labels(path: Path, batch: Batch) -> tuple[dict[str, str], dict[str, str]]:
    """``image -> label`` and ``image -> annotator`` (where given) from an export file."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read {path}: {exc}") from exc
    if not text.strip():
        raise LabelError(f"{path} is empty: export the labels from Label Studio (JSON or "
                         "CSV) or write a `file,label` CSV")
    if text.lstrip().startswith(("[", "{")):
        try:
            rows = _json_rows(json.loads(text), name)
        except json.JSONDecodeError as exc:
            raise LabelError(f"{path} is not valid JSON ({exc})") from exc
    else:
        rows = _csv_rows(text, name)
    if not rows:
        raise LabelError(f"{path} holds no labels")
    names = _resolver(batch)
    labels: dict[str, str] = {}
    who: dict[str, str] = {}
    unknown = [ref for ref, _, _ in rows if _basename(ref) not in names]
    if unknown:
        raise LabelError(f"{path}: {len(unknown)} row(s) name images not in the round "
                         f"{batch.round} batch: {listing(unknown)}")
    strange, stored = [], []
    for ref, label, annotator in rows:
        try:
            stored.append((ref, batch.normalise(label), annotator))
        except LabelError:
            strange.append(label)
    if strange:
        what = "sets of findings" if batch.multilabel else "classes"
        raise LabelError(f"{path}: label(s) {listing(sorted(set(strange)))} are not {what} of "
                         f"this run ({', '.join(batch.classes)})")
    for ref, label, annotator in stored:
        image = names[_basename(ref)]
        if labels.setdefault(image, label) != label:
            raise LabelError(f"{path}: {ref} has two different labels")
        if annotator:
            who[image] = annotator
    return labels, who


def import_labels(path: Path, batch: Batch, annotator: str) -> int:
    """Merge the labels of ``path`` into the batch's answers; returns how many were read."""
    labels, who = read_labels(path, batch)
    book = AnswerBook(batch)
    plain = {k: v for k, v in labels.items() if k not in who}
    for image, label in labels.items():
        if image in who:
            book.set(image, label, who[image])
    if plain:
        book.set_many(plain, annotator)
    return len(labels)
