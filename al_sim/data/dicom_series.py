"""A DICOM series (one folder of 2D slices) as one volume, ordered by position, not by name.

Slices are sorted by ``ImagePositionPatient`` projected on the slice normal
(the cross product of ``ImageOrientationPatient``'s row and column directions).
The folder must hold one series (one ``SeriesInstanceUID``), one orientation and
one slice size; the gaps between positions must be equal (within
``_SPACING_TOLERANCE`` of their median): a gap of about twice the median is a
missing slice, anything else an inconsistent spacing, and each is a DataError
naming the series and the positions. The voxel spacing is the gap between positions and
the slices' ``PixelSpacing`` (rows, columns), which must agree between slices. Headers are
read first (no pixels) and the voxel count checked against ``dataset.max_voxels``; then
each slice's stored values go through its modality LUT (Hounsfield units for CT). The first
slice's VOI window is the series' default window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from al_sim.data.dicom import _first, is_dicom
from al_sim.data.volume import Window, check_voxels, finite
from al_sim.runtime.errors import DataError

if TYPE_CHECKING:
    from pydicom import Dataset

_SPACING_TOLERANCE = 0.1  # share of the median gap two gaps may differ by
_MISSING = (1.6, 2.4)  # a gap this many median gaps wide is one missing slice
_SHOWN = 3  # positions listed in an error


@dataclass(frozen=True)
class Series:
    """A series' voxels (modality units, ``D x H x W``), its own window, MONOCHROME1, and
    its voxel spacing along D, H, W (mm; None where the headers do not say it)."""

    voxels: np.ndarray
    window: Window | None
    inverted: bool
    spacing: tuple[float, float, float] | None = None


def series_files(folder: Path) -> list[Path]:
    """The DICOM files of ``folder`` (not recursive, hidden files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.is_file() and is_dicom(p))


def _header(path: Path) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); replace or remove it") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise DataError(f"{path}: not a readable DICOM file (no image: Rows/Columns missing); "
                        "replace or remove it")
    return ds


def _one(values: set[object], what: str, folder: Path, fix: str) -> None:
    if len(values) > 1:
        shown = ", ".join(str(v) for v in sorted(values, key=str)[:_SHOWN])
        raise DataError(f"{folder}: the slices mix {len(values)} {what} ({shown}); {fix}")


def _order(folder: Path, headers: list[Dataset],
           names: list[str]) -> tuple[list[int], float | None]:
    """Slice indices sorted along the normal, and the gap between slices (None for one
    slice); DataError for gaps and uneven spacing."""
    missing = [n for n, h in zip(names, headers, strict=True)
               if "ImagePositionPatient" not in h or "ImageOrientationPatient" not in h]
    if missing:
        raise DataError(f"{folder}: slice(s) without ImagePositionPatient/Orientation "
                        f"({', '.join(missing[:_SHOWN])}); export the series with positions")
    orient = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    normal = np.cross(orient[:3], orient[3:])
    pos = np.array([np.dot(normal, [float(v) for v in h.ImagePositionPatient])
                    for h in headers])
    order = np.argsort(pos, kind="stable")
    gaps = np.diff(pos[order])
    if len(gaps) == 0:
        return [int(i) for i in order], None
    step = float(np.median(gaps))
    if step <= 0 or np.any(gaps <= _SPACING_TOLERANCE * step):
        dup = [names[order[i]] for i in np.flatnonzero(gaps <= _SPACING_TOLERANCE * step)]
        raise DataError(f"{folder}: two slices at the same position ({', '.join(dup[:_SHOWN])}"
                        " and the next); remove the duplicate slices")
    off = np.flatnonzero(np.abs(gaps - step) > _SPACING_TOLERANCE * step)
    if len(off):
        i = int(off[0])
        where = f"between positions {pos[order[i]]:.2f} and {pos[order[i + 1]]:.2f} mm"
        if _MISSING[0] * step <= gaps[i] <= _MISSING[1] * step:
            raise DataError(f"{folder}: a slice is missing {where} (spacing {step:.2f} mm; "
                            f"{len(off)} gap(s) in all); export the complete series")
        raise DataError(f"{folder}: inconsistent slice spacing {where} ({gaps[i]:.2f} mm, "
                        f"median {step:.2f} mm); resample it to even spacing or export the "
                        "complete series")
    return [int(i) for i in order], step


def _spacing(folder: Path, headers: list[Dataset],
             step: float | None) -> tuple[float, float, float] | None:
    """(slice gap, row spacing, column spacing) in mm; None when a part is not stated (one
    slice without SpacingBetweenSlices/SliceThickness, or no PixelSpacing); DataError when
    the slices state different pixel spacings."""
    pixel: set[object] = {tuple(round(float(v), 4) for v in h.PixelSpacing)
                          if "PixelSpacing" in h else None for h in headers}
    _one(pixel, "pixel spacings (PixelSpacing, mm)", folder,
         "resample the slices to one pixel spacing or put each acquisition in a folder of its "
         "own")
    rows_cols = cast("tuple[float, ...] | None", pixel.pop())
    if step is None:  # one slice: its stated thickness
        first = headers[0]
        stated = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        step = float(stated) if stated else None
    if rows_cols is None or len(rows_cols) != 2 or step is None:
        return None
    return step, rows_cols[0], rows_cols[1]


def read_series(folder: Path, max_voxels: int) -> Series:
    """The volume of the DICOM series in ``folder`` (see the module doc)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    files = series_files(folder)
    if not files:
        raise DataError(f"{folder}: no DICOM slices (.dcm, or files with the DICM preamble); "
                        "put one series' slices in it or remove the folder")
    headers = [_header(p) for p in files]
    names = [p.name for p in files]
    _one({str(getattr(h, "SeriesInstanceUID", "?")) for h in headers}, "series", folder,
         "put each series in a folder of its own")
    _one({tuple(round(float(v), 4) for v in getattr(h, "ImageOrientationPatient", ()))
          for h in headers}, "orientations", folder,
         "put each orientation (acquisition) in a folder of its own")
    _one({(int(getattr(h, "Rows", 0)), int(getattr(h, "Columns", 0))) for h in headers},
         "slice sizes", folder, "put each acquisition in a folder of its own")
    check_voxels((len(files), int(headers[0].Rows), int(headers[0].Columns)), max_voxels,
                 str(folder))
    order, step = _order(folder, headers, names)
    spacing = _spacing(folder, headers, step)
    slices = []
    for i in order:
        try:
            ds = pydicom.dcmread(files[i])
            slices.append(np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32))
        except (NotImplementedError, RuntimeError, ValueError, EOFError, OSError,
                AttributeError, TypeError) as exc:
            raise DataError(f"{files[i]}: cannot read the slice's pixel data "
                            f"({type(exc).__name__}: {str(exc)[:200]}); replace it or convert "
                            "the series to an uncompressed transfer syntax") from None
        if slices[-1].ndim != 2:
            raise DataError(f"{files[i]}: a slice of a series must be one 2D frame, got "
                            f"shape {slices[-1].shape}; export one frame per file")
    first = headers[0]
    window = None
    if "WindowCenter" in first and "WindowWidth" in first:
        window = (_first(first.WindowCenter), _first(first.WindowWidth))
    inverted = str(getattr(first, "PhotometricInterpretation", "")) == "MONOCHROME1"
    return Series(finite(np.stack(slices), str(folder)), window, inverted, spacing)
