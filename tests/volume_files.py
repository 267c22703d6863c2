"""Volume files for tests: NIfTI through nibabel, DICOM series through pydicom (shuffled)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_nifti(path: Path, voxels: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """``voxels`` (x, y, z) as a NIfTI-1 file (``.nii`` or ``.nii.gz`` by its name)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(voxels), np.eye(4) if affine is None else affine), path)
    return path


def write_series(folder: Path, voxels: np.ndarray, spacing: float = 2.0,
                 positions: list[float] | None = None, window: tuple | None = (40, 400),
                 intercept: float = -1024.0, seed: int = 0, series_uid: str | None = None,
                 orientation: list[float] | None = None, prefix: str = "IM",
                 pixel_spacing: list[float] | None = None) -> Path:
    """A CT series of ``voxels`` (slice, row, column; HU), one file per slice under random
    names so that the name order is not the position order; ``PixelSpacing`` (row, column
    mm) only when given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    z = positions if positions is not None else [i * spacing for i in range(len(voxels))]
    names = np.random.default_rng(seed).permutation(len(voxels))
    for k, (plane, pos) in enumerate(zip(voxels, z, strict=True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID = "CT", series_uid
        ds.ImageOrientationPatient = orientation or [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(pos)]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, intercept
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if pixel_spacing is not None:
            ds.PixelSpacing = list(pixel_spacing)
        ds.PixelData = (np.asarray(plane) - intercept).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{prefix}{names[k]:04d}.dcm", enforce_file_format=True)
    return folder
