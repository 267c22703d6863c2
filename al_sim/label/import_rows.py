"""The rows of a labels file: a Label Studio JSON / JSON-MIN / CSV export, or a ``file,label`` CSV.

Each row says which image (a file name, path or URL, and the batch's
``pool_index`` and ``round`` where the file carries them), which class
(several findings joined by ``|``: Label Studio's ``choice="multiple"``), and
who. Any shape other than the expected one is one ``LabelError`` naming the
file and the task or line; nothing here knows the batch.
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from al_sim.maths.task import LABEL_SEPARATOR
from al_sim.runtime.errors import LabelError

FILE_COLUMNS = ("file", "image")  # the first one present names the image
LABEL_COLUMN = "label"
INDEX_COLUMN, ROUND_COLUMN, ANNOTATOR_COLUMN = "pool_index", "round", "annotator"
_FIX = "export the project again from Label Studio (JSON), or write a `file,label` CSV"


@dataclass(frozen=True)
class Row:
    """One image's label as a file gives it."""

    where: str  # "task 3" / "line 5", for messages
    ref: str | None  # the file / image field: a name, a path or a URL
    label: str
    annotator: str | None
    pool_index: int | None = None
    round: int | None = None
    others: tuple[tuple[str, str | None], ...] = ()  # earlier annotations that disagree
    every: tuple[tuple[str, str | None], ...] = ()  # every annotation (label, who), in order

    @property
    def answers(self) -> tuple[tuple[str, str | None], ...]:
        """Every (label, who) the row holds: each annotation of a task, else its one label."""
        return self.every or ((self.label, self.annotator),)


class _ShapeError(ValueError):
    """A value of another type or form than an export has there."""


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", type(None): "null", bool: "true/false"}
    return names.get(type(value), f"a {type(value).__name__}")


def _text(value: object, what: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise _ShapeError(f"{what} is {_kind(value)}, expected text")


def _int(value: object, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise _ShapeError(f"{what} is {value!r}, expected a whole number")


def _choice(value: object, what: str) -> str:
    """A class name from a choice value (``"x"``, ``["x"]`` or ``{"choices": ["x"]}``);
    several (Label Studio's ``choice="multiple"``) joined by ``|``. A Label Studio CSV
    export holds the value as JSON text (``{"choices": [...]}``)."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        with contextlib.suppress(json.JSONDecodeError):  # else: a label that starts with {
            parsed = json.loads(value)
            if isinstance(parsed, dict) and "choices" in parsed:
                value = parsed
    if isinstance(value, dict) and "choices" in value:
        value = value["choices"]
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip()
                                                 for v in value):
        value = LABEL_SEPARATOR.join(v.strip() for v in value)
    if not isinstance(value, str) or not value.strip():
        raise _ShapeError(f"{what} is {json.dumps(value)[:60]}, expected a class name (or, "
                          "multi-label, a list of findings)")
    return value.strip()


def _annotator(annotation: dict) -> str | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("username") or who.get("id")
    return None if who in (None, "") or isinstance(who, dict | list) else str(who)


def _answers(annotations: object) -> list[tuple[str, str | None]]:
    """(label, annotator) of each kept (not cancelled) annotation of a task, in export order."""
    if not isinstance(annotations, list):
        raise _ShapeError(f"`annotations` is {_kind(annotations)}, expected a list (Label Studio "
                     "writes [] for a task nobody labelled)")
    given = []
    for j, annotation in enumerate(annotations, start=1):
        if not isinstance(annotation, dict):
            raise _ShapeError(f"annotation {j} is {_kind(annotation)}, expected an object")
        if annotation.get("was_cancelled"):
            continue  # skipped in Label Studio
        result = annotation.get("result")
        if not isinstance(result, list):
            raise _ShapeError(f"annotation {j}'s `result` is {_kind(result)}, expected a list")
        choices = set()
        for item in result:
            if not isinstance(item, dict):
                raise _ShapeError(f"annotation {j} has a result that is {_kind(item)}")
            if item.get("type") != "choices":
                continue
            value = item.get("value")
            if not isinstance(value, dict):
                raise _ShapeError(f"annotation {j}'s choice `value` is {_kind(value)}")
            choices.add(_choice(value.get("choices"), f"annotation {j}'s choice"))
        if len(choices) != 1:
            raise _ShapeError(f"annotation {j} has {'no' if not choices else 'several'} choice(s) "
                         f"({', '.join(sorted(choices))}); one answer per image")
        given.append((choices.pop(), _annotator(annotation)))
    return given


def _task_row(task: object, where: str) -> Row | None:
    """The row of one task of a JSON / JSON-MIN export (None: nobody labelled it)."""
    if not isinstance(task, dict):
        raise _ShapeError(f"is {_kind(task)}, expected an object")
    source = task.get("data", task)
    if not isinstance(source, dict):
        raise _ShapeError(f"`data` is {_kind(source)}, expected an object with the image's "
                     f"{' or '.join(FILE_COLUMNS)}")
    ref = next((r for c in FILE_COLUMNS if (r := _text(source.get(c), f"`{c}`"))), None)
    index = _int(source.get(INDEX_COLUMN), f"`{INDEX_COLUMN}`")
    round_ = _int(source.get(ROUND_COLUMN), f"`{ROUND_COLUMN}`")
    if ref is None and index is None:
        raise _ShapeError(f"names no image (no {', '.join(FILE_COLUMNS)} or {INDEX_COLUMN} field)")
    if "annotations" not in task:  # JSON-MIN: the choice sits beside the data
        value = task.get(LABEL_COLUMN)
        if value in (None, "", []):
            return None
        return Row(where, ref, _choice(value, f"`{LABEL_COLUMN}`"),
                   _text(task.get(ANNOTATOR_COLUMN), "`annotator`"), index, round_)
    given = _answers(task["annotations"])
    if not given:
        return None
    label, who = given[-1]
    others = tuple(a for a in given[:-1] if a[0] != label)
    return Row(where, ref, label, who, index, round_, others, tuple(given))


def json_rows(data: object, name: str) -> list[Row]:
    """Rows of a Label Studio JSON or JSON-MIN export (a list of tasks)."""
    if not isinstance(data, list):
        raise LabelError(f"{name}: a Label Studio export is a JSON list of tasks, this is "
                         f"{_kind(data)}; {_FIX}")
    rows = []
    for k, task in enumerate(data, start=1):
        try:
            row = _task_row(task, f"task {k}")
        except _ShapeError as exc:
            raise LabelError(f"{name}: task {k} {exc}; {_FIX}") from None
        if row is not None:
            rows.append(row)
    return rows


def csv_rows(text: str, name: str) -> list[Row]:
    """Rows of a Label Studio CSV export or any CSV with ``file`` (or ``image``) and ``label``."""
    reader = csv.DictReader(text.splitlines())
    try:
        return _csv_rows(reader, name)
    except csv.Error as exc:  # a field over csv's size limit, an unterminated quote, ...
        raise LabelError(f"{name}: line {reader.line_num + 1} is not readable CSV ({exc}); "
                         f"{_FIX}") from None


def _csv_rows(reader: csv.DictReader, name: str) -> list[Row]:
    fields = reader.fieldnames or []
    column = next((c for c in FILE_COLUMNS if c in fields), None)
    if (column is None and INDEX_COLUMN not in fields) or LABEL_COLUMN not in fields:
        raise LabelError(f"{name}: a CSV needs a header with `file` (or `image`) and `label` "
                         f"columns, got {','.join(fields)!r}")
    rows = []
    for row in reader:
        where = f"line {reader.line_num}"
        ref = (row.get(column) or "").strip() if column else ""
        label = (row.get(LABEL_COLUMN) or "").strip()
        try:
            label = _choice(label, f"`{LABEL_COLUMN}`") if label else ""
            index = _int(row.get(INDEX_COLUMN), f"`{INDEX_COLUMN}`")
            round_ = _int(row.get(ROUND_COLUMN), f"`{ROUND_COLUMN}`")
        except _ShapeError as exc:
            raise LabelError(f"{name}: {where}: {exc}") from None
        if label and (ref or index is not None):
            rows.append(Row(where, ref or None, label, row.get(ANNOTATOR_COLUMN) or None, index,
                            round_))
        elif label:
            raise LabelError(f"{name}: {where} has a label but no file")
    return rows


def read_rows(path: Path) -> list[Row]:
    """Every labelled row of ``path``; LabelError for an unreadable, empty or malformed file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"cannot read {path}: {exc}; save it as UTF-8 (JSON or CSV)") from exc
    except OSError as exc:
        raise LabelError(f"cannot read {path} ({exc.strerror or exc}); check the path given "
                         "to --import") from exc
    if not text.strip():
        raise LabelError(f"{path} is empty: export the labels from Label Studio (JSON or "
                         "CSV) or write a `file,label` CSV")
    if path.suffix.lower() != ".json" and not text.lstrip().startswith(("[", "{")):
        rows = csv_rows(text, path.name)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelError(f"{path} is not valid JSON ({exc})") from exc
        except RecursionError:
            raise LabelError(f"{path} is nested too deeply to be a Label Studio export; "
                             f"{_FIX}") from None
        rows = json_rows(data, path.name)
    if not rows:
        raise LabelError(f"{path} holds no labels")
    return rows
