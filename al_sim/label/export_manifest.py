"""A multi-label run's labelled images as a manifest folder that ``dataset=folder`` reads back.

``<out>/images/<file>`` and ``<out>/manifest.csv`` in the ChestX-ray14 layout
(``Image Index``, ``Finding Labels`` with ``|`` or ``No Finding``, ``split``, then
round, annotator, when and source id). The run's labelled images are the
``initial`` rows; when the run read a manifest folder, its other rows (the pool
still to label, the test split) follow as they were, images copied (DICOM files
stay DICOM). Read it back with ``dataset.manifest=manifest.csv``. Torch-free.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig

from al_sim.maths.task import LABEL_SEPARATOR, NO_FINDING
from al_sim.runtime.errors import LabelError
from al_sim.runtime.files import atomic_write

MANIFEST_FILE, IMAGES = "manifest.csv", "images"
HEADER = ("Image Index", "Finding Labels", "split", "round", "annotator", "labelled_at",
          "source")
_PLAIN_SKIP = ("file", "split", NO_FINDING)


def _source_rows(root: Path, dataset: DictConfig) -> list[tuple[str, str, str]]:
    """(path below root, finding labels, split) of every row of the source's manifest."""
    path = root / str(dataset.manifest)
    images_dir = str(dataset.get("images_dir") or IMAGES)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            if HEADER[0] in header:
                file, labels = row[HEADER[0]], (row[HEADER[1]] or "").strip()
            else:
                file = row["file"]
                cells = {c: (row[c] or "").strip() for c in header if c not in _PLAIN_SKIP}
                found = [c for c, v in cells.items() if v == "1"]
                labels = "" if not any(cells.values()) else (
                    LABEL_SEPARATOR.join(found) or NO_FINDING)
            file = file.strip()
            rel = file if "/" in file else f"{images_dir}/{file}"
            rows.append((PurePosixPath(rel).as_posix(), labels, (row.get("split") or "").strip()))
    return rows


def export_manifest(rows: list[dict[str, str]], root: Path | None, dataset: DictConfig | None,
                    out: Path) -> int:
    """Write ``rows`` (the run's labelled images) and the source's other rows into ``out``."""
    (out / IMAGES).mkdir(parents=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(HEADER)
    used: set[str] = set()

    def copy(source: Path, name: str) -> str:
        name = name if name not in used else f"{len(used)}_{name}"
        used.add(name)
        shutil.copyfile(source, out / IMAGES / name)
        return name

    for row in rows:
        original = root / row["id"] if root is not None else None
        source = original if original is not None and original.is_file() else (
            Path(row["png"]) if row["png"] else None)
        if source is None:
            raise LabelError(f"no image file for {row['id']} (round {row['round']}); the run's "
                             "dataset has no files: only answered batches can be exported")
        name = copy(source, PurePosixPath(row["id"]).name if original is not None
                    else f"{row['id']}.png")
        writer.writerow((name, row["label"], "initial", row["round"], row["annotator"],
                         row["labelled_at"], row["id"]))
    if root is not None and dataset is not None and dataset.get("manifest"):
        done = {row["id"] for row in rows}
        for rel, labels, split in _source_rows(root, dataset):
            if rel in done or not (root / rel).is_file():
                continue
            name = copy(root / rel, PurePosixPath(rel).name)
            writer.writerow((name, labels, split, "", "", "", rel))
    atomic_write(out / MANIFEST_FILE, text.getvalue())
    return len(rows)
