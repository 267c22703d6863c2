"""Volumes in a query batch: NIfTI on disk, a montage PNG for image-only tools, slices as PNG.

A batch item that is a volume (or a greyscale 2D DICOM image, as one slice in its
modality's units, so that the page can window it) keeps ``volumes/<stem>.nii.gz``
(``D x H x W`` stored as NIfTI's x, y, z = W, H, D, as :mod:`al_sim.data.nifti` reads
it back) and its
``images/<image>.png`` is a montage of the three orthogonal mid slices (axial,
coronal, sagittal) so that Label Studio and other image tools show something
meaningful. The page asks for single slices (:func:`slice_png`), windowed by the
viewer's centre/width or, without one, by the volume's own range. Torch-free.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from nibabel import Nifti1Image

VOLUMES_DIR = "volumes"
NIFTI_SUFFIX = ".nii.gz"
PLANES = ("axial", "coronal", "sagittal")  # the axis each cuts: D, H, W


def volume_path(batch_dir: Path, image: str) -> Path:
    """Where the volume of batch image ``image`` (``<stem>.png``) lives."""
    return batch_dir / VOLUMES_DIR / (Path(image).stem + NIFTI_SUFFIX)


def write_volume(path: Path, voxels: np.ndarray,
                 window: tuple[float, float] | None = None) -> None:
    """``voxels`` (``D x H x W``) as NIfTI (float32, unit spacing); ``window`` (centre,
    width), the page's default, as the header's display range ``cal_min``/``cal_max``."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(np.asarray(voxels, dtype=np.float32).transpose(2, 1, 0))
    img = nib.Nifti1Image(data, np.eye(4))
    if window is not None:
        img.header["cal_min"] = window[0] - window[1] / 2.0
        img.header["cal_max"] = window[0] + window[1] / 2.0
    nib.save(img, path)


def _batch_image(path: Path) -> Nifti1Image:
    """The NIfTI image of a batch volume (as :func:`write_volume` wrote it)."""
    import nibabel as nib

    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image):
        raise ValueError(f"{path}: not the NIfTI volume a batch holds ({type(img).__name__})")
    return img


def read_volume(path: Path) -> np.ndarray:
    """A batch volume back as float32 ``D x H x W``."""
    data = _batch_image(path).get_fdata(dtype=np.float32)
    return np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0))


def cut(voxels: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` (clamped) of ``plane``, oriented for display (superior at the top)."""
    axis = PLANES.index(plane)
    index = min(max(int(index), 0), voxels.shape[axis] - 1)
    plane_2d = np.take(voxels, index, axis=axis)
    return plane_2d if axis == 0 else plane_2d[::-1]  # rows of coronal/sagittal: D, up


def to_uint8(x: np.ndarray, window: tuple[float, float] | None,
             full: tuple[float, float]) -> np.ndarray:
    """``x`` through the linear window (centre, width), else the range ``full``, as 8 bit."""
    low, high = ((window[0] - window[1] / 2.0, window[0] + window[1] / 2.0)
                 if window is not None else full)
    span = max(high - low, 1e-12)
    return (np.clip((x - low) / span, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def slice_png(voxels: np.ndarray, plane: str, index: int,
              window: tuple[float, float] | None = None) -> bytes:
    """One slice as a PNG at the volume's resolution (the page scales it)."""
    full = (float(voxels.min()), float(voxels.max()))
    out = io.BytesIO()
    Image.fromarray(to_uint8(cut(voxels, plane, index), window, full)).save(out, format="PNG")
    return out.getvalue()


def volume_info(path: Path) -> dict:
    """``shape`` ``[D, H, W]`` of a batch volume, and its default ``window`` [centre, width]
    when the header has a display range (from the header: no voxels read)."""
    img = _batch_image(path)
    x, y, z = img.shape[:3]
    out: dict = {"shape": [int(z), int(y), int(x)]}
    low, high = (float(img.header[k]) for k in ("cal_min", "cal_max"))
    if high > low:
        out["window"] = [(low + high) / 2.0, high - low]
    return out


def montage_png(voxels: np.ndarray, size: int) -> bytes:
    """The three orthogonal mid slices side by side (``3 size x size``), min-max scaled."""
    full = (float(voxels.min()), float(voxels.max()))
    tiles = []
    for axis, plane in enumerate(PLANES):
        tile = Image.fromarray(to_uint8(cut(voxels, plane, voxels.shape[axis] // 2), None, full))
        tiles.append(np.asarray(tile.resize((size, size), Image.Resampling.BILINEAR)))
    out = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, axis=1)).save(out, format="PNG")
    return out.getvalue()
