"""DICOM images through pydicom: stored values to an 8-bit display image, as a viewer shows it.

Order (DICOM PS3.3 C.11): the modality LUT or rescale slope/intercept, then the
VOI: ``dataset.window=[centre, width]`` when set, else the file's VOI LUT, else
its first window centre/width (linear, C.11.2.1.2), else the image's own range;
``MONOCHROME1`` (white = low values) is inverted. 12/16-bit data go through the
same steps. Compressed transfer syntaxes decode through pydicom's handlers where
one is installed (``pylibjpeg``, ``gdcm``); otherwise, and for a truncated file,
one without pixel data or a multi-frame one, a DataError names the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from al_sim.runtime.errors import DataError

if TYPE_CHECKING:
    from pydicom import Dataset

DICOM_SUFFIX = ".dcm"
_PREAMBLE, _MAGIC = 128, b"DICM"  # a DICOM file: 128 bytes, then "DICM"


def is_dicom(path: Path) -> bool:
    """``.dcm``, or a file without extension whose bytes 128-131 are ``DICM``."""
    if path.suffix.lower() == DICOM_SUFFIX:
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as f:
        head = f.read(_PREAMBLE + len(_MAGIC))
    return head[_PREAMBLE:] == _MAGIC


def _window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM's linear VOI function scaled to [0, 1]."""
    width = max(float(width), 1.0)
    return np.clip((x - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) if width > 1 else (
        (x > centre - 0.5).astype(np.float64))


def _first(value: float | str | Sequence[float]) -> float:
    """A window value that may be multi-valued (several presets): the first."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return float(value)
    return float(value[0])


def _scaled(x: np.ndarray) -> np.ndarray:
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x, dtype=np.float64)


def display(ds: Dataset, window: tuple[float, float] | None = None) -> np.ndarray:
    """The pixel data of a read dataset as uint8 ``H x W`` (or ``H x W x 3`` for colour)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    if int(getattr(ds, "SamplesPerPixel", 1)) == 3:  # colour: pydicom gives RGB
        out = arr if arr.dtype == np.uint8 else _scaled(arr.astype(np.float64)) * 255
        return np.asarray(out).round().astype(np.uint8)
    x = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if window is not None:
        y = _window(x, *window)
    elif "VOILUTSequence" in ds:
        y = _scaled(np.asarray(apply_voi_lut(x, ds), dtype=np.float64))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        y = _window(x, _first(ds.WindowCenter), _first(ds.WindowWidth))
    else:
        y = _scaled(x)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        y = 1.0 - y
    return (y * 255).round().astype(np.uint8)


def read_dicom(path: Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """One 2D DICOM image as uint8 (see :func:`display`); DataError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc}); "
                        "replace or remove it") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise DataError(f"{path}: the DICOM file has no pixel data "
                        f"(modality {getattr(ds, 'Modality', '?')}); remove it from the images")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is a volume or a series; "
                        "al_sim reads 2D images: export one frame per file")
    try:
        return display(ds, window)
    except (NotImplementedError, RuntimeError) as exc:  # no handler for the transfer syntax
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        # pydicom lists each missing handler on a line of its own: keep them on one
        text = "; ".join(p.strip() for p in str(exc).splitlines() if p.strip()).replace(":;", ":")
        raise DataError(f"{path}: cannot decode its pixel data ({name}): "
                        f"{(text or type(exc).__name__)[:400]}; install one of those decoders "
                        "or convert the file to an uncompressed transfer syntax") from None
    except (ValueError, EOFError, AttributeError, TypeError) as exc:  # truncated pixel data
        raise DataError(f"{path}: damaged pixel data ({type(exc).__name__}: "
                        f"{str(exc)[:300]}); replace or remove it") from None


def modality_values(path: Path) -> tuple[np.ndarray, tuple[float, float] | None] | None:
    """A readable greyscale ``MONOCHROME2`` image's modality values (float32 ``H x W``, e.g.
    Hounsfield units) and its first window, for window/level on the labelling page; None for
    colour, ``MONOCHROME1`` or VOI-LUT images (shown as :func:`display` renders them)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)  # read_dicom has already accepted this file
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1 or "VOILUTSequence" in ds or str(
            getattr(ds, "PhotometricInterpretation", "")) != "MONOCHROME2":
        return None
    values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    window = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
    return values, window
