"""Volumes read from NIfTI or DICOM series to the pool's form: windowed, resampled, capped.

A volume is ``D x H x W`` float (modality units, e.g. Hounsfield for CT). The
intensity window maps it to [0, 1]: ``dataset.window`` as a named preset
(:data:`al_sim.config.data.WINDOW_PRESETS`) or ``[centre, width]``, else the
file's own VOI window (DICOM), else the volume's min-max. It is then resampled to
``image_size`` per axis (averaged where it shrinks, trilinear where it grows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from al_sim.config.data import WINDOW_PRESETS
from al_sim.runtime.errors import DataError

Window = tuple[float, float]


def resolve_window(window: str | Sequence[float] | None) -> Window | None:
    """``dataset.window`` as ``(centre, width)``: a preset name or the pair itself."""
    if window is None:
        return None
    if isinstance(window, str):  # a name FolderDatasetConf has checked
        centre, width = WINDOW_PRESETS[window]
        return float(centre), float(width)
    return float(window[0]), float(window[1])


def check_voxels(shape: Sequence[int], cap: int, name: str) -> None:
    """DataError when a volume's header declares more voxels than ``cap`` (before reading)."""
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > cap:
        raise DataError(f"{name}: {' x '.join(str(int(s)) for s in shape)} = {n} voxels exceeds "
                        f"dataset.max_voxels={cap}; crop or downsample it, or raise "
                        "dataset.max_voxels if the machine has the memory")


def intensity(x: np.ndarray, window: Window | None) -> np.ndarray:
    """``x`` mapped to float32 [0, 1]: the linear DICOM window, or min-max without one."""
    x = np.asarray(x, dtype=np.float32)
    if window is not None:
        centre, width = window
        low = centre - width / 2.0
        return np.clip((x - low) / width, 0.0, 1.0).astype(np.float32)
    low, high = float(x.min()), float(x.max())
    if high <= low:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - low) / (high - low)).astype(np.float32)


def resample(x: np.ndarray, size: int) -> np.ndarray:
    """``D x H x W`` to ``size`` per axis (float32): an axis that shrinks is averaged over
    the voxels each output voxel covers (no aliasing of thin structures or noise), one that
    grows is interpolated trilinearly."""
    target = (size, size, size)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    d, h, w = (min(size, int(n)) for n in x.shape)
    shrunk = (d, h, w)
    if shrunk != tuple(x.shape):
        t = F.adaptive_avg_pool3d(t, shrunk)
    if shrunk != target:
        t = F.interpolate(t, size=target, mode="trilinear", align_corners=False)
    return np.ascontiguousarray(t[0, 0].numpy())


def finite(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` unchanged; DataError when it holds NaN or infinite voxels."""
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise DataError(f"{name}: {bad} NaN or infinite voxel(s) of {x.size}; save the volume "
                        "with finite values")
    return x
