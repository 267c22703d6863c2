"""Class folders of CT/MRI volumes (``dataset=folder dataset.volumes=true``).

The layout of :mod:`al_sim.data.folder`, with volumes in place of images: each
class folder (and ``unlabeled_pool_images/``) holds NIfTI files (``.nii``,
``.nii.gz``, :mod:`al_sim.data.nifti`) and/or sub-folders of one DICOM series
each (:mod:`al_sim.data.dicom_series`). A volume's name is its path relative to
the root (``unlabeled_pool_images/case7.nii.gz``, ``unlabeled_pool_images/case8``
for a series), as ``pool_labels.csv`` names it. Each volume is windowed and
resampled to ``image_size`` per axis, stretched or at isotropic spacing and padded
(``dataset.spacing``, :mod:`al_sim.data.volume`); the pool is
float32 ``N x 1 x D x H x W`` in [0, 1]. Unreadable volumes are reported together,
each by name with its fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from al_sim.config.data import INITIAL_DIR, POOL_DIR, TEST_DIR, FolderDatasetConf
from al_sim.data.base import ALDataset
from al_sim.data.dicom_series import read_series, series_files
from al_sim.data.folder import listing, read_pool_labels
from al_sim.data.nifti import is_nifti, load_nifti, read_nifti
from al_sim.data.sources import sources
from al_sim.data.volume import Window, conform, intensity, resolve_window
from al_sim.maths.sampling import stratified_sample
from al_sim.runtime.errors import ConfigError, DataError
from al_sim.runtime.reading import Unreadable

VOLUME_KINDS = "NIfTI files (.nii, .nii.gz) or DICOM-series folders"
_SHOWN = 5  # problems listed in full in one error


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def is_series(path: Path) -> bool:
    """A folder holding DICOM slices (one series)."""
    return path.is_dir() and bool(series_files(path))


def volumes_in(folder: Path, root: Path) -> list[Path]:
    """The volumes of ``folder``: NIfTI files and DICOM-series sub-folders; DataError for
    entries leading out of ``root`` (links)."""
    found = [p for p in _visible(folder) if is_nifti(p) or is_series(p)]
    nested = [p.name for p in _visible(folder) if p.is_dir() and p not in found]
    if nested:
        raise DataError(f"{folder}/ has folder(s) without DICOM slices ({listing(nested)}); a "
                        "series folder holds its slices directly: move them up or remove "
                        "the folder")
    outside = [p.name for p in found if not p.resolve().is_relative_to(root)]
    if outside:
        raise DataError(f"{folder}/ has volume(s) outside dataset.root (links): "
                        f"{listing(outside)}; copy them into {root} or remove the links")
    return found


def _classes(folder: Path, root: Path) -> dict[str, list[Path]]:
    """Volumes per class sub-folder (a sub-folder of slices is a volume, not a class)."""
    loose = [p for p in _visible(folder) if is_nifti(p) or is_series(p)]
    if loose:
        rel = folder.relative_to(root).as_posix()
        shown = listing([p.name for p in loose])
        raise DataError(f"{rel}/ holds volumes outside class folders ({shown}); move each into "
                        f"{rel}/<class_name>/")
    return {d.name: volumes_in(d, root) for d in _visible(folder) if d.is_dir()}


def read_volume(path: Path, size: int, window: Window | None, max_voxels: int,
                spacing: str = "stretch") -> np.ndarray:
    """One volume as float32 ``size^3`` in [0, 1] (see the module doc); ``spacing`` is
    ``dataset.spacing``."""
    voxel: Sequence[float] | None
    if path.is_dir():
        series = read_series(path, max_voxels)
        scaled, voxel = intensity(series.voxels, window or series.window), series.spacing
        if series.inverted:
            scaled = 1.0 - scaled
    else:
        voxels, voxel = load_nifti(path, max_voxels)
        scaled = intensity(voxels, window)
    return conform(scaled, size, voxel, spacing, str(path))


def original_voxels(path: Path, max_voxels: int = FolderDatasetConf.max_voxels) -> np.ndarray:
    """A volume's voxels as stored (modality units, ``D x H x W``), for the labelling page."""
    return read_series(path, max_voxels).voxels if path.is_dir() else read_nifti(path, max_voxels)


def read_volumes(paths: list[Path], root: Path, conf: FolderDatasetConf) -> np.ndarray:
    """float32 ``N x 1 x size^3`` of ``paths``; one DataError naming every unreadable volume."""
    size, window = conf.image_size, resolve_window(conf.window)
    out = np.empty((len(paths), 1, size, size, size), dtype=np.float32)
    unreadable = Unreadable("replace, complete or remove them")
    for i, path in enumerate(paths):
        with unreadable.reading(path.relative_to(root).as_posix()):
            try:
                out[i, 0] = read_volume(path, size, window, conf.max_voxels, conf.spacing)
            except DataError as exc:  # named by its relative path already: say what is wrong
                text = str(exc).replace(f"{path}: ", "").replace(f"{path}/", "")
                raise DataError(text) from None
    unreadable.check("volume(s)", _problems)
    return out


def _problems(items: list[str]) -> str:
    """The first few problems in full (a volume's fix is the point), and how many more."""
    more = len(items) - _SHOWN
    return "; ".join(items[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _test(conf: FolderDatasetConf, root: Path, classes: list[str], pool: list[Path],
          pool_y: np.ndarray) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Test volumes and labels, and the mask of the unlabelled pool kept in the pool."""
    keep = np.ones(len(pool), dtype=bool)
    if not (root / TEST_DIR).is_dir():
        if conf.test_fraction is None:
            raise DataError(f"{root / TEST_DIR} does not exist: add {TEST_DIR}/<class_name>/ "
                            "volumes, or set dataset.test_fraction=0.2 to hold out part of "
                            "the pool")
        held = stratified_sample(pool_y, max(1, round(conf.test_fraction * len(pool))),
                                 np.random.default_rng(conf.seed))
        keep[held] = False
        return [pool[i] for i in held], pool_y[held], keep
    if conf.test_fraction is not None:
        raise ConfigError(f"{root / TEST_DIR} exists and dataset.test_fraction is set: use "
                          "one hold-out, so drop dataset.test_fraction or the folder")
    per_class = _classes(root / TEST_DIR, root)
    strange = sorted(set(per_class) - set(classes))
    if strange:
        raise DataError(f"{TEST_DIR}/ has class folder(s) {', '.join(strange)} that "
                        f"{INITIAL_DIR}/ lacks (classes: {', '.join(classes)})")
    paths = [p for c in classes for p in per_class.get(c, [])]
    if not paths:
        raise DataError(f"{TEST_DIR}/ has no volumes ({VOLUME_KINDS}) in its class folders")
    labels = np.array([i for i, c in enumerate(classes) for _ in per_class.get(c, [])],
                      dtype=np.int64)
    return paths, labels, keep


def pool_images(pool_x: np.ndarray) -> torch.Tensor:
    """Windowed volumes in [0, 1] as the dataset type holds them: uint8 ``N x 1 x D x H x W``
    (as 2D images and DICOM files are quantised after their window)."""
    return torch.from_numpy((pool_x * 255.0 + 0.5).astype(np.uint8))


def load_volume_folder(conf: FolderDatasetConf, root: Path) -> ALDataset:
    """Build a dataset from class folders of volumes (see the module doc)."""
    for path, what in ((root, f"set dataset.root to the folder holding {INITIAL_DIR}/"),
                       (root / INITIAL_DIR, f"put the initial volumes in {INITIAL_DIR}/"
                                            "<class_name>/"),
                       (root / POOL_DIR, f"put the volumes to query in {POOL_DIR}/")):
        if not path.is_dir():
            raise DataError(f"{path} does not exist: {what}")
    per_class = _classes(root / INITIAL_DIR, root)
    classes = sorted(per_class)
    if not any(per_class.values()):
        raise DataError(f"{root / INITIAL_DIR} has no class folders with volumes "
                        f"({VOLUME_KINDS}); add {INITIAL_DIR}/<class_name>/case.nii.gz")
    initial = [p for c in classes for p in per_class[c]]
    initial_y = np.array([i for i, c in enumerate(classes) for _ in per_class[c]],
                         dtype=np.int64)
    unlabeled = volumes_in(root / POOL_DIR, root)
    if not unlabeled:
        raise DataError(f"{root / POOL_DIR} has no volumes ({VOLUME_KINDS}): the pool to "
                        "query is empty")
    labels = root / conf.labels_file
    if labels.exists() or conf.labels_required:
        unlabeled_y = read_pool_labels(labels, root, unlabeled, classes, {
            p.relative_to(root).as_posix(): classes[y]
            for p, y in zip(initial, initial_y, strict=True)})
    else:
        unlabeled_y = np.full(len(unlabeled), -1, dtype=np.int64)
    test, test_y, keep = _test(conf, root, classes, unlabeled, unlabeled_y)
    pool = initial + [p for p, k in zip(unlabeled, keep, strict=True) if k]
    files = [f for p in [*pool, *test] for f in (series_files(p) if p.is_dir() else [p])]
    read_from = sources([*files, labels])
    return ALDataset(
        name=conf.name,
        pool_x=pool_images(read_volumes(pool, root, conf)),
        pool_y=np.concatenate([initial_y, unlabeled_y[keep]]),
        test_x=pool_images(read_volumes(test, root, conf)),
        test_y=test_y,
        class_names=classes,
        initial_labeled=np.arange(len(initial)),
        pool_ids=[p.relative_to(root).as_posix() for p in pool],
        sources=read_from,
    )
