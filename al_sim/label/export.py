"""A run's labels as a dataset: the image-folder layout ``dataset=folder`` reads, plus a manifest.

```
<out>/initial_labeled_images/<class>/<file>   every labelled image (given and answered)
<out>/manifest.csv                            file,label,round,annotator,labelled_at,source
                                              (named annotators: annotator is who decided
                                              the label, and answer:<name> holds each
                                              annotator's own answer)
<out>/unlabeled_pool_images/, test_images/    image-folder runs: the rest, to continue later
```
Images come from the run's image folder when it has one (the originals),
else from the batches' PNGs. Volumes (``dataset.volumes=true``) likewise: an original
NIfTI file or DICOM-series folder is copied as it is, a volume known only from a batch
is written as its NIfTI (``<id>.nii.gz``), so ``dataset=folder dataset.volumes=true``
reads the export back. A multi-label run is exported as a manifest folder
instead (:mod:`al_sim.label.export_manifest`).
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig, OmegaConf

from al_sim.config.data import INITIAL_DIR, POOL_DIR, TEST_DIR, is_folder_dataset
from al_sim.label.batch import IMAGES_DIR
from al_sim.label.export_manifest import export_manifest
from al_sim.label.panel_export import ANSWER_COLUMN, panel_rows
from al_sim.label.rounds import all_batches
from al_sim.label.volumes import NIFTI_SUFFIX, volume_path
from al_sim.runtime.errors import LabelError
from al_sim.runtime.files import atomic_write
from al_sim.tracking.contract import CONFIG_FILE, LABELED_SET_FILE

MANIFEST_FILE = "manifest.csv"
MANIFEST_HEADER = ("file", "label", "round", "annotator", "labelled_at", "source")
GIVEN = "given"  # the annotator of labels the run started with (the initial folders)


def _dataset(run_dir: Path) -> DictConfig | None:
    """The run's dataset node (from its config.yaml)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    config = OmegaConf.load(path)
    node = config.get("dataset") if isinstance(config, DictConfig) else None
    return node if isinstance(node, DictConfig) else None


def _folder_root(run_dir: Path) -> Path | None:
    """The image folder the run read, if its dataset is one."""
    dataset = _dataset(run_dir)
    if dataset is None or not is_folder_dataset(dataset) or not dataset.get("root"):
        return None
    return Path(str(dataset["root"])).expanduser().resolve()


def _labelled(run_dir: Path, volumes: bool) -> list[dict]:
    """One row per labelled image: id, class, round, annotator, when, and where its image is
    (``volumes``: a batch's NIfTI before its PNG; a 2D run's NIfTI are DICOM values only)."""
    rows: dict[str, dict] = {}
    path = run_dir / LABELED_SET_FILE
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows[r["id"]] = {"id": r["id"], "label": r["class_name"], "round": r["round"],
                                 "annotator": GIVEN, "labelled_at": "", "png": ""}
    for batch in all_batches(run_dir):  # answers, also of a batch not yet handed to the loop
        if batch.panel is not None:
            rows.update(panel_rows(batch, run_dir))
            continue
        answers = batch.read_answers()
        for item in batch.items:
            if item.image in answers:
                a = answers[item.image]
                volume = volume_path(batch.dir, item.image)
                rows[item.id] = {"id": item.id, "label": a.label, "round": str(batch.round),
                                 "annotator": a.annotator, "labelled_at": a.labelled_at,
                                 "png": str(volume if volumes and volume.is_file() else
                                            batch.dir / IMAGES_DIR / item.image)}
    return list(rows.values())


def export_dataset(run_dir: Path, out: Path) -> int:
    """Write the labelled images of ``run_dir`` into ``out``; returns how many."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise LabelError(f"{out} is not empty; export into a new folder")
    dataset = _dataset(run_dir)
    volumes = dataset is None or not is_folder_dataset(dataset) or bool(dataset.get("volumes"))
    rows = _labelled(run_dir, volumes)
    if not rows:
        raise LabelError(f"{run_dir} has no labelled images yet ({LABELED_SET_FILE} or "
                         "answered batches); run python -m al_sim.run there first")
    root = _folder_root(run_dir)
    if any(batch.multilabel for batch in all_batches(run_dir)):  # sets of findings: a manifest
        return export_manifest(rows, root, _dataset(run_dir), out)
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    people = list(dict.fromkeys(name for row in rows for name in row.get("by", {})))
    writer.writerow([*MANIFEST_HEADER, *(f"{ANSWER_COLUMN}{name}" for name in people)])
    used: set[str] = set()
    exported: set[str] = set()
    for row in rows:
        original = root / row["id"] if root is not None else None
        source = original if original is not None and (original.is_file() or (
            original.is_dir() and not original.is_symlink())) else (
            Path(row["png"]) if row["png"] else None)
        if source is None:
            raise LabelError(f"no image file for {row['id']} (round {row['round']}); the run's "
                             "dataset has no files: only answered batches can be exported")
        suffix = NIFTI_SUFFIX if source.name.endswith(NIFTI_SUFFIX) else ".png"
        name = PurePosixPath(row["id"]).name if original is not None else f"{row['id']}{suffix}"
        name = _unique(name, row["round"], used)
        target = out / INITIAL_DIR / row["label"] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(source, target)
        exported.add(row["id"])
        by = row.get("by", {})
        writer.writerow((target.relative_to(out).as_posix(), row["label"], row["round"],
                         row["annotator"], row["labelled_at"], row["id"],
                         *(by.get(name, "") for name in people)))
    atomic_write(out / MANIFEST_FILE, manifest.getvalue())
    if root is not None:
        _copy_rest(root, out, exported, volumes)
    return len(rows)


def _unique(name: str, round_: str, used: set[str]) -> str:
    """``name``, or ``r<round>_name`` / ``r<round>_<n>_name`` when that is taken (two
    images of one file name: an initial class folder's and a pool file's)."""
    candidate, n = name, 1
    while candidate in used:
        candidate = f"r{round_}_{name}" if n == 1 else f"r{round_}_{n}_{name}"
        n += 1
    used.add(candidate)
    return candidate


def _copy(source: Path, target: Path) -> None:
    """A file, or a DICOM-series folder (volumes) with its files (links not followed)."""
    if source.is_dir():
        shutil.copytree(source, target, ignore=lambda folder, names: [
            n for n in names if (Path(folder) / n).is_symlink()])
    else:
        shutil.copyfile(source, target)


def _copy_rest(root: Path, out: Path, exported: set[str], volumes: bool) -> None:
    """The image folder's still-unlabelled pool and its test images, to continue later
    (``volumes``: DICOM-series folders too)."""
    pool = root / POOL_DIR
    (out / POOL_DIR).mkdir(parents=True, exist_ok=True)
    for path in sorted(pool.iterdir()) if pool.is_dir() else []:
        if not path.is_symlink() and f"{POOL_DIR}/{path.name}" not in exported and (
                path.is_file() or (volumes and path.is_dir())):
            _copy(path, out / POOL_DIR / path.name)
    if (root / TEST_DIR).is_dir():
        shutil.copytree(root / TEST_DIR, out / TEST_DIR, symlinks=False)
