"""Volumes read from NIfTI or DICOM series to the pool's form: windowed, resampled, capped.

A volume is ``D x H x W`` float (modality units, e.g. Hounsfield for CT). The
intensity window maps it to [0, 1]: ``dataset.window`` as a named preset
(:data:`al_sim.config.data.WINDOW_PRESETS`) or ``[centre, width]``, else the
file's own VOI window (DICOM), else the volume's min-max. It is then resampled to
``image_size`` per axis (averaged where it shrinks, trilinear where it grows), with the
physical voxel spacing as ``dataset.spacing`` says (:func:`conform`): ``stretch`` ignores it
(each axis fills ``image_size``, so anisotropic voxels distort the anatomy), ``isotropic``
resamples to cubic voxels so the longest physical side fills ``image_size`` and pads the
shorter axes, centred, with the bottom of the window (0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from al_sim.config.data import WINDOW_PRESETS
from al_sim.runtime.errors import DataError

Window = tuple[float, float]
Spacing = tuple[float, float, float]  # mm between voxel centres along D, H, W


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


def resample(x: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """``D x H x W`` to ``size`` per axis (one size for all, or one per axis; float32): an
    axis that shrinks is averaged over the voxels each output voxel covers (no aliasing of
    thin structures or noise), one that grows is interpolated trilinearly."""
    target = (size, size, size) if isinstance(size, int) else tuple(int(n) for n in size)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    d, h, w = (min(n, int(m)) for n, m in zip(target, x.shape, strict=True))
    shrunk = (d, h, w)
    if shrunk != tuple(x.shape):
        t = F.adaptive_avg_pool3d(t, shrunk)
    if shrunk != target:
        t = F.interpolate(t, size=target, mode="trilinear", align_corners=False)
    return np.ascontiguousarray(t[0, 0].numpy())


def check_spacing(spacing: Sequence[float] | None, name: str) -> Spacing:
    """``spacing`` as three positive finite mm; DataError naming the volume otherwise."""
    fix = ("fix the header's spacing (NIfTI pixdim, DICOM PixelSpacing and slice positions) "
           "or set dataset.spacing=stretch to ignore it")
    if spacing is None:
        raise DataError(f"{name}: no voxel spacing in the header (dataset.spacing=isotropic "
                        f"needs it); {fix}")
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        shown = " x ".join(f"{v:g}" for v in values)
        raise DataError(f"{name}: voxel spacing {shown} mm is not three positive sizes; {fix}")
    return values[0], values[1], values[2]


def isotropic_shape(shape: Sequence[int], spacing: Spacing, size: int) -> tuple[int, ...]:
    """Voxels per axis at cubic voxels when the longest physical side spans ``size``."""
    extent = [int(n) * s for n, s in zip(shape, spacing, strict=True)]
    voxel = max(extent) / size
    return tuple(min(size, max(1, round(e / voxel))) for e in extent)


def conform(x: np.ndarray, size: int, spacing: Sequence[float] | None, mode: str,
            name: str) -> np.ndarray:
    """``x`` (windowed, ``D x H x W``) as ``size^3`` float32 by ``dataset.spacing``
    ``mode`` (see the module doc); DataError naming the volume when ``isotropic`` lacks a
    usable spacing."""
    if mode == "stretch":
        return resample(x, size)
    shape = isotropic_shape(x.shape, check_spacing(spacing, name), size)
    out = np.zeros((size, size, size), dtype=np.float32)
    start = [(size - n) // 2 for n in shape]
    out[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))] = resample(x, shape)
    return out


def finite(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` unchanged; DataError when it holds NaN or infinite voxels."""
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise DataError(f"{name}: {bad} NaN or infinite voxel(s) of {x.size}; save the volume "
                        "with finite values")
    return x
