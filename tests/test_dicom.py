"""DICOM through pydicom: windowing, rescale, MONOCHROME1, 16-bit, bad files; in folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from al_sim.data.dicom import is_dicom, read_dicom  # noqa: E402
from al_sim.data.folder import load_folder, read_images  # noqa: E402
from al_sim.runtime.errors import DataError  # noqa: E402


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                slope: float = 1.0, intercept: float = 0.0, window: tuple | None = None,
                bits: int = 16, frames: int = 1) -> Path:
    """A DICOM file written by pydicom (preamble + DICM), 16-bit unsigned storage."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
        pixels = np.stack([pixels] * frames)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


RAMP = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # 12-bit values, 8 x 64


def test_rescale_then_the_files_window(tmp_path) -> None:
    # HU = 2 * stored - 1000; window centre 1000, width 2001 spans HU [0, 2000]
    path = write_dicom(tmp_path / "a.dcm", RAMP, slope=2.0, intercept=-1000.0,
                       window=(1000.0, 2001.0))
    img = read_dicom(path)
    hu = RAMP.astype(float) * 2 - 1000
    expected = np.clip((hu - 999.5) / 2000 + 0.5, 0, 1) * 255
    assert img.dtype == np.uint8 and img.shape == (8, 64)
    assert np.abs(img.astype(float) - expected).max() <= 1


def test_monochrome1_is_inverted(tmp_path) -> None:
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", RAMP, window=(2048, 4096)))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1", window=(2048, 4096)))
    assert (m1.astype(int) + m2.astype(int) == 255).all()


def test_without_a_window_the_image_range_is_used_and_an_override_wins(tmp_path) -> None:
    path = write_dicom(tmp_path / "n.dcm", RAMP, bits=12)
    img = read_dicom(path)
    assert (img.min(), img.max()) == (0, 255)
    narrow = read_dicom(path, window=(100.0, 50.0))
    assert (narrow[:, 3:] == 255).all() and narrow[0, 0] == 0


def test_extensionless_files_with_the_preamble_are_dicom(tmp_path) -> None:
    path = write_dicom(tmp_path / "IM0001", RAMP)
    (tmp_path / "README").write_text("not an image")
    assert is_dicom(path) and not is_dicom(tmp_path / "README")
    assert read_images([path], tmp_path, 16, 1).shape == (1, 1, 16, 16)


def test_pydicoms_own_ct_file_reads() -> None:
    img = read_dicom(Path(get_testdata_file("CT_small.dcm", download=False)))
    assert img.shape == (128, 128) and img.max() > img.min()


@pytest.mark.parametrize("name, match", [
    ("MR_truncated.dcm", "damaged pixel data"),
    ("rtplan.dcm", "no pixel data"),
    ("SC_rgb_rle_2frame.dcm", "multi-frame"),
])
def test_bad_dicom_files_are_named(name, match) -> None:
    path = Path(get_testdata_file(name, download=False))
    with pytest.raises(DataError, match=match) as err:
        read_dicom(path)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_a_missing_decoder_is_named() -> None:
    path = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False))
    try:
        read_dicom(path)
    except DataError as exc:
        text = str(exc)
        assert "MR_small_jpeg_ls_lossless.dcm" in text and "JPEG-LS" in text
        assert "pylibjpeg" in text and "\n" not in text
    else:
        pytest.skip("a JPEG-LS decoder is installed here")


def test_a_truncated_file_is_refused(tmp_path) -> None:
    good = write_dicom(tmp_path / "good.dcm", RAMP)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="bad.dcm"):
        read_images([bad], tmp_path, 16, 1)


def test_a_class_folder_of_dicom_files_loads(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for folder, n in (("initial_labeled_images/normal", 3), ("initial_labeled_images/effusion", 3),
                      ("test_images/normal", 2), ("test_images/effusion", 2)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(n):
            photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
            write_dicom(tmp_path / folder / f"{i}.dcm", rng.integers(0, 4096, (32, 32)),
                        photometric, window=(2048, 4096) if i == 0 else None)
    (tmp_path / "unlabeled_pool_images").mkdir()
    rows = ["file,label"]
    for i in range(4):
        write_dicom(tmp_path / "unlabeled_pool_images" / f"IM{i}", RAMP)  # no extension
        rows.append(f"IM{i},{'normal' if i % 2 else 'effusion'}")
    (tmp_path / "pool_labels.csv").write_text("\n".join(rows) + "\n")
    data = load_folder(root=str(tmp_path), image_size=16, window=[2048.0, 4096.0])
    assert data.pool_x.shape == (10, 1, 16, 16) and data.test_x.shape == (4, 1, 16, 16)
    assert "unlabeled_pool_images/IM0" in (data.pool_ids or [])


def test_the_labelling_batch_shows_dicom_originals_windowed(tmp_path) -> None:
    from PIL import Image

    from al_sim.core.events import LabelsPending
    from al_sim.label.human_oracle import HumanOracle

    root = tmp_path / "data"
    for folder in ("initial_labeled_images/normal", "initial_labeled_images/effusion",
                   "test_images/normal", "test_images/effusion", "unlabeled_pool_images"):
        (root / folder).mkdir(parents=True)
        write_dicom(root / folder / "0.dcm", RAMP, window=(2048, 4096))
    write_dicom(root / "unlabeled_pool_images" / "IM7", RAMP, "MONOCHROME1")
    data = load_folder(root=str(root), image_size=16, labels_required=False)
    oracle = HumanOracle(tmp_path / "run", data, 64, root, window=[2048.0, 4096.0])
    pool = [i for i, ident in enumerate(data.pool_ids) if ident.endswith("IM7")]
    with pytest.raises(LabelsPending) as pending:
        oracle.query(np.array(pool), round_=1)
    (png,) = sorted((pending.value.batch_dir / "images").glob("*.png"))
    with Image.open(png) as img:
        shown = np.asarray(img.convert("L"))
    assert shown[0, 0] > shown[0, -1]  # MONOCHROME1: the low values are shown white
