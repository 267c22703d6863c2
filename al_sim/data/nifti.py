"""NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel, in canonical orientation.

The image is reoriented to the closest canonical (RAS+) axes, so that every
volume of a folder has the same anatomy on the same axis whatever its scanner
stored, and returned ``D x H x W`` = (superior, anterior, right) axes reversed
(z, y, x), with its voxel spacing (the header's zooms, mm) in the same order. The
header's shape is checked against ``dataset.max_voxels`` before
any voxel is read; a 4D file with one volume is taken as 3D. Every failure is a
DataError naming the file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from al_sim.data.volume import check_voxels, finite
from al_sim.runtime.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """A file named ``*.nii`` or ``*.nii.gz``."""
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(name: str) -> str:
    """``name`` without its NIfTI suffix."""
    low = name.lower()
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti(path: Path, max_voxels: int) -> np.ndarray:
    """The volume of ``path`` as float32 ``D x H x W`` in the file's units (scaled)."""
    return load_nifti(path, max_voxels)[0]


def load_nifti(path: Path, max_voxels: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """The volume of ``path`` (as :func:`read_nifti`) and its voxel spacing along D, H, W
    as the header states it (mm; checked where it is used: ``dataset.spacing``)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import SpatialImage

    fix = "replace it or re-save it with nibabel/ITK-SNAP"
    try:
        img = nib.load(path)
    except (ImageFileError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); {fix}") from None
    if not isinstance(img, SpatialImage):  # nibabel reads other formats too
        raise DataError(f"{path}: not a NIfTI volume (read as {type(img).__name__}); {fix}")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{path}: a volume must be 3D, the header says {shape}; save each "
                        "volume of a time series or multi-channel file as its own file")
    if min(shape) < 1:
        raise DataError(f"{path}: the header gives the volume no voxels along an axis {shape}; "
                        f"{fix}")
    check_voxels(shape, max_voxels, str(path))
    try:
        canonical = nib.as_closest_canonical(img)
        data = np.asarray(canonical.get_fdata(dtype=np.float32), dtype=np.float32)
    except (EOFError, OSError, ValueError, zlib.error) as exc:  # truncated or damaged data
        raise DataError(f"{path}: damaged voxel data ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); {fix}") from None
    data = data.reshape(data.shape[:3])
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    return finite(np.ascontiguousarray(data.transpose(2, 1, 0)), str(path)), zooms[::-1]
