"""Image folders as an annotation workflow keeps them.

```
<root>/initial_labeled_images/<class_name>/*.png|jpg|jpeg|tif|tiff|bmp|dcm   initial labelled set
<root>/unlabeled_pool_images/*                                        the pool to query
<root>/pool_labels.csv   file,label: the answers the simulated oracle reveals (optional
                         with labels_required=false, as a human oracle sets: labels unknown)
<root>/test_images/<class_name>/*   hold-out (or dataset.test_fraction of the unlabelled pool)
```
Class names are the sorted folder names of ``initial_labeled_images``. Every
image is converted to ``channels`` (L or RGB) and resized to ``image_size``
squared with PIL; DICOM files (``.dcm``, or no extension with the DICM preamble) are
windowed to 8 bit first (:mod:`al_sim.data.dicom`). Multi-label folders list their
images in a manifest instead (:mod:`al_sim.data.manifest`). Every problem is reported
by file name.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from al_sim.config.data import INITIAL_DIR, POOL_DIR, TEST_DIR, FolderDatasetConf
from al_sim.data.base import ALDataset
from al_sim.data.dicom import is_dicom, read_dicom
from al_sim.data.sources import sources
from al_sim.data.volume import resolve_window
from al_sim.maths.sampling import stratified_sample
from al_sim.runtime.errors import ConfigError, DataError
from al_sim.runtime.reading import MalformedError, Unreadable, reading

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_SHOWN = 5  # names listed per problem in an error message
_CLIP = 80  # characters shown of each (a mangled CSV may hold kilobytes in one field)
_CLIP_PROBLEM = 240  # of an unreadable image: its path and why


def listing(items: list[str], clip: int = _CLIP) -> str:
    """The first few ``items`` (each clipped), and how many more."""
    shown = ", ".join(i if len(i) <= clip else f"{i[:clip]}..." for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_in(folder: Path, root: Path | None = None) -> list[Path]:
    """Image files of ``folder`` (DICOM included); DataError for links that dangle or lead out
    of ``root``."""
    named = [p for p in _visible(folder) if p.suffix.lower() in IMAGE_SUFFIXES or is_dicom(p)]
    if root is not None:
        dangling = [p.name for p in named if p.is_symlink() and not p.exists()]
        outside = [p.name for p in named if p.exists() and not p.resolve().is_relative_to(root)]
        problems = ([f"link(s) to missing files: {listing(dangling)}"] if dangling else []) + (
            [f"file(s) outside dataset.root (links): {listing(outside)}"] if outside else [])
        if problems:
            where = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else folder
            raise DataError(f"{where}/ has {'; '.join(problems)}; copy the images into "
                            f"{root} or remove the links")
    return [p for p in named if p.is_file()]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path} does not exist: {what}")


def _class_folders(folder: Path, root: Path) -> dict[str, list[Path]]:
    """Images per class sub-folder; DataError for images lying outside a class folder."""
    loose = _images_in(folder, root)
    if loose:
        raise DataError(
            f"{_rel(folder, root)}/ holds images outside class folders "
            f"({listing([p.name for p in loose])}); move each into "
            f"{_rel(folder, root)}/<class_name>/"
        )
    return {d.name: _images_in(d, root) for d in _visible(folder) if d.is_dir()}


def read_image(path: Path, size: int, channels: int,
               window: str | Sequence[float] | None = None) -> np.ndarray:
    """One image as uint8 ``C x size x size`` (16-bit and float images are rescaled to 8 bit;
    DICOM through :mod:`al_sim.data.dicom`, ``window`` = [centre, width] or a preset name
    overriding its own)."""
    if is_dicom(path):
        pixels = Image.fromarray(read_dicom(path, resolve_window(window)))
        return _fit(pixels, size, channels)
    with Image.open(path) as opened:
        opened.load()
        img: Image.Image = opened
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float32)
            if img.mode == "F":
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                if bad:
                    raise MalformedError(f"a float image with {bad} NaN or infinite pixel(s) of "
                                    f"{arr.size}; save it with finite values")
                arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12) * 255
            elif img.mode != "I" or arr.max() > 255:
                arr = arr / 257.0
            img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
        return _fit(img, size, channels)


def _fit(img: Image.Image, size: int, channels: int) -> np.ndarray:
    shown = img.convert("L" if channels == 1 else "RGB")
    if shown.size != (size, size):
        shown = shown.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(shown, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def read_images(paths: list[Path], root: Path, size: int, channels: int,
                window: str | Sequence[float] | None = None) -> torch.Tensor:
    """uint8 ``N x C x size x size`` of ``paths``; one DataError naming every unreadable file."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    unreadable = Unreadable("replace or remove them")
    for i, path in enumerate(paths):
        with unreadable.reading(_rel(path, root)):
            out[i] = read_image(path, size, channels, window)
    unreadable.check("image(s)", lambda items: listing(items, clip=_CLIP_PROBLEM))
    return torch.from_numpy(out)


def read_pool_labels(csv_path: Path, root: Path, pool: list[Path], classes: list[str],
                     initial: dict[str, str]) -> np.ndarray:
    """Class index of every ``pool`` image from the ``file,label`` CSV.

    ``file`` is a name in ``unlabeled_pool_images/`` or a path relative to the
    root; rows for initial images must agree with their folder.
    """
    with reading(csv_path, "the pool labels", "save it as UTF-8 `file,label` rows"):
        return _read_pool_labels(csv_path, root, pool, classes, initial)


def _read_pool_labels(csv_path: Path, root: Path, pool: list[Path], classes: list[str],
                      initial: dict[str, str]) -> np.ndarray:
    name = _rel(csv_path, root)
    if not csv_path.is_file():
        raise DataError(f"{csv_path} not found: it must list every image of {POOL_DIR}/ "
                        "as `file,label` rows (the oracle's answers); set dataset.labels_file= "
                        "if it has another name, or let an expert label the pool: oracle=human")
    index = {c: i for i, c in enumerate(classes)}
    wanted = {_rel(p, root): p for p in pool}
    found: dict[str, int] = {}
    unknown_file, unknown_label, conflicts = [], [], []
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                        f"{exc.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8 "
                        f"{name} > fixed.csv") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
        raise DataError(f"{name} must start with the header `file,label`, got "
                        f"{','.join(reader.fieldnames or [])[:200]!r}")
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise DataError(f"{name} is not a valid CSV ({exc}); write it as `file,label` "
                        "rows") from None
    for row_no, row in enumerate(rows, start=2):
        file, label = (row["file"] or "").strip(), (row["label"] or "").strip()
        key = file if "/" in file else f"{POOL_DIR}/{file}"
        key = PurePosixPath(key).as_posix()
        if key in initial:
            if label != initial[key]:
                conflicts.append(f"{file} (csv {label!r}, folder {initial[key]!r})")
        elif key not in wanted:
            unknown_file.append(f"{file} (line {row_no})")
        elif label not in index:
            unknown_label.append(f"{file}: {label!r} (line {row_no})")
        elif found.setdefault(key, index[label]) != index[label]:
            conflicts.append(f"{file} (two different labels)")
    problems = []
    if unknown_file:
        problems.append(f"row(s) for files not in {POOL_DIR}/: {listing(unknown_file)}")
    if unknown_label:
        problems.append(f"label(s) that are not a class ({', '.join(classes)}): "
                        f"{listing(unknown_label)}")
    if conflicts:
        problems.append(f"conflicting labels: {listing(conflicts)}")
    unlabeled = [k for k in wanted if k not in found]
    if unlabeled:
        problems.append(f"no row for {len(unlabeled)} pool image(s): {listing(unlabeled)}")
    if problems:
        raise DataError(f"{name}: " + "; ".join(problems))
    return np.array([found[k] for k in wanted], dtype=np.int64)


def _test_split(conf: FolderDatasetConf, root: Path, classes: list[str], pool: list[Path],
                pool_y: np.ndarray) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Test images and labels, and the mask of the unlabelled pool kept in the pool."""
    test_dir = root / TEST_DIR
    keep = np.ones(len(pool), dtype=bool)
    if not test_dir.is_dir():
        if conf.test_fraction is None:
            raise DataError(f"{test_dir} does not exist: add {TEST_DIR}/<class_name>/ images, "
                            "or set dataset.test_fraction=0.2 to hold out part of the pool")
        n_test = max(1, round(conf.test_fraction * len(pool)))
        held = stratified_sample(pool_y, n_test, np.random.default_rng(conf.seed))
        keep[held] = False
        return [pool[i] for i in held], pool_y[held], keep
    if conf.test_fraction is not None:
        raise ConfigError(f"{test_dir} exists and dataset.test_fraction={conf.test_fraction} is "
                          "set: use one hold-out, so drop dataset.test_fraction or the folder")
    per_class = _class_folders(test_dir, root)
    strange = sorted(set(per_class) - set(classes))
    if strange:
        raise DataError(f"{TEST_DIR}/ has class folder(s) {', '.join(strange)} that "
                        f"{INITIAL_DIR}/ lacks (classes: {', '.join(classes)})")
    paths = [p for c in classes for p in per_class.get(c, [])]
    labels = np.array([i for i, c in enumerate(classes) for _ in per_class.get(c, [])],
                      dtype=np.int64)
    if not paths:
        raise DataError(f"{TEST_DIR}/ has no images ({', '.join(IMAGE_SUFFIXES)}) in its "
                        "class folders")
    return paths, labels, keep


def load_folder(**cfg: Any) -> ALDataset:
    """Build a dataset from an image folder (see ``FolderDatasetConf`` and the module doc)."""
    conf = FolderDatasetConf(**cfg)
    root = Path(str(conf.root)).expanduser().resolve()
    fix = "check that it and its files are readable"
    if conf.manifest is not None:  # multi-label: a manifest CSV instead of class folders
        from al_sim.data.manifest import load_manifest

        _require_dir(root, f"set dataset.root to the folder holding {conf.manifest}")
        with reading(root, "the image folder", fix):
            return load_manifest(conf, root)
    if conf.volumes:  # CT/MRI: NIfTI files and DICOM-series folders
        from al_sim.data.folder_volumes import load_volume_folder

        with reading(root, "the volume folder", fix):
            return load_volume_folder(conf, root)
    with reading(root, "the image folder", fix):
        return _load_folder(conf, root)


def _load_folder(conf: FolderDatasetConf, root: Path) -> ALDataset:
    _require_dir(root, "set dataset.root to the folder holding "
                 f"{INITIAL_DIR}/, {POOL_DIR}/ and {conf.labels_file}")
    _require_dir(root / INITIAL_DIR, f"put the initial labelled images in {INITIAL_DIR}/"
                 "<class_name>/ (one folder per class)")
    _require_dir(root / POOL_DIR, f"put the images to query in {POOL_DIR}/")
    per_class = _class_folders(root / INITIAL_DIR, root)
    classes = sorted(per_class)
    if not classes or not any(per_class.values()):
        raise DataError(f"{root / INITIAL_DIR} has no class folders with images "
                        f"({', '.join(IMAGE_SUFFIXES)}); add {INITIAL_DIR}/<class_name>/*.png")
    initial = [p for c in classes for p in per_class[c]]
    initial_y = np.array([i for i, c in enumerate(classes) for _ in per_class[c]],
                         dtype=np.int64)
    unlabeled = _images_in(root / POOL_DIR, root)
    if not unlabeled:
        raise DataError(f"{root / POOL_DIR} has no images ({', '.join(IMAGE_SUFFIXES)}): "
                        "the pool to query is empty")
    labels = root / conf.labels_file
    if labels.exists() or conf.labels_required:
        unlabeled_y = read_pool_labels(labels, root, unlabeled, classes,
                                       {_rel(p, root): classes[y] for p, y in zip(
                                           initial, initial_y, strict=True)})
    else:
        unlabeled_y = np.full(len(unlabeled), -1, dtype=np.int64)
        if conf.test_fraction is not None:
            raise DataError(f"dataset.test_fraction needs the pool's labels ({labels} is "
                            f"missing); add {TEST_DIR}/<class_name>/ images instead")
    empty = sorted(set(classes) - {classes[y] for y in (*initial_y, *unlabeled_y) if y >= 0})
    if empty and conf.labels_required:
        raise DataError(f"class folder(s) {', '.join(empty)} of {INITIAL_DIR}/ have no images "
                        f"and no row of {conf.labels_file} names them; add their images or "
                        "remove the empty folder(s)")
    test, test_y, keep = _test_split(conf, root, classes, unlabeled, unlabeled_y)
    pool = initial + [p for p, k in zip(unlabeled, keep, strict=True) if k]
    pool_y = np.concatenate([initial_y, unlabeled_y[keep]])
    size, channels, window = conf.image_size, conf.channels, conf.window
    read_from = sources([*pool, *test, labels])  # before reading: a change after it is seen
    return ALDataset(
        name=conf.name,
        pool_x=read_images(pool, root, size, channels, window),
        pool_y=pool_y,
        test_x=read_images(test, root, size, channels, window),
        test_y=test_y,
        class_names=classes,
        initial_labeled=np.arange(len(initial)),
        pool_ids=[_rel(p, root) for p in pool],
        sources=read_from,
    )
