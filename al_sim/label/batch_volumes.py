"""What the human oracle's batch keeps of a volume or a 2D DICOM image for the slice viewer.

A volume: its NIfTI (a folder's original voxels, so a CT stays in Hounsfield units;
otherwise the pool's view) and a three-plane montage PNG. A greyscale 2D DICOM image:
its modality values as a one-slice NIfTI whose display range is the window the model
sees. Files are laid out by :mod:`al_sim.label.volumes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from al_sim.data.dicom import modality_values
from al_sim.data.folder_volumes import original_voxels
from al_sim.data.nifti import is_nifti
from al_sim.data.volume import resolve_window
from al_sim.label.volumes import montage_png, volume_path, write_volume


def keep_volume(folder: Path, image: str, pool_voxels: np.ndarray, source: Path | None,
                size: int) -> bytes:
    """Write batch image ``image``'s volume; returns its montage PNG (``size`` per tile)."""
    voxels = pool_voxels
    if source is not None and (source.is_dir() or is_nifti(source)):
        voxels = original_voxels(source)
    write_volume(volume_path(folder, image), voxels)
    return montage_png(voxels, size)


def keep_dicom_values(folder: Path, image: str, source: Path,
                      window: str | Sequence[float] | None) -> None:
    """Write a greyscale DICOM image's values (nothing for colour, MONOCHROME1, VOI LUT)."""
    found = modality_values(source)
    if found is not None:
        write_volume(volume_path(folder, image), found[0][None],
                     resolve_window(window) or found[1])
