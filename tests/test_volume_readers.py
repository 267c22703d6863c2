"""NIfTI and DICOM-series readers: orientation, slice order, windows, and bad volumes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

from al_sim.config.data import FolderDatasetConf  # noqa: E402
from al_sim.data.dicom_series import read_series  # noqa: E402
from al_sim.data.folder_volumes import read_volume  # noqa: E402
from al_sim.data.nifti import read_nifti  # noqa: E402
from al_sim.data.volume import intensity, resample, resolve_window  # noqa: E402
from al_sim.runtime.errors import ConfigError, DataError  # noqa: E402
from tests.volume_files import write_nifti, write_series  # noqa: E402

CAP = 2**20


def ramp(n: int = 6, h: int = 5, w: int = 4) -> np.ndarray:
    """A (slice, row, column) volume whose value names its slice: 100 * slice + column."""
    return (np.arange(n)[:, None, None] * 100 + np.arange(w)[None, None, :]
            + np.zeros((1, h, 1))).astype(np.float32)


def test_nifti_is_read_canonical_as_d_h_w(tmp_path) -> None:
    xyz = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    plain = read_nifti(write_nifti(tmp_path / "a.nii.gz", xyz), CAP)
    assert plain.shape == (6, 5, 4) and plain.dtype == np.float32
    np.testing.assert_array_equal(plain, xyz.transpose(2, 1, 0))
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # stored right-to-left: canonical flips it back
    back = read_nifti(write_nifti(tmp_path / "b.nii", xyz[::-1].copy(), flipped), CAP)
    np.testing.assert_array_equal(back, plain)


@pytest.mark.parametrize("content, match", [
    (b"not a nifti at all", "not a readable NIfTI"),
    (gzip.compress(b"\x00" * 40, mtime=0), "not a readable NIfTI|damaged"),
], ids=["not gzip", "gzip of zeros"])  # fixed ids: every xdist worker must collect the same
def test_corrupt_nifti_is_named(tmp_path, content, match) -> None:
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_nifti(path, CAP)
    assert "bad.nii.gz" in str(info.value)


def test_truncated_nifti_and_hostile_sizes_are_refused(tmp_path) -> None:
    path = write_nifti(tmp_path / "t.nii", np.ones((20, 20, 20), np.float32))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="t.nii: damaged voxel data"):
        read_nifti(path, CAP)
    big = write_nifti(tmp_path / "big.nii.gz", np.zeros((64, 64, 64), np.uint8))
    with pytest.raises(DataError, match=r"262144 voxels exceeds dataset.max_voxels=1000"):
        read_nifti(big, 1000)
    four = write_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="must be 3D"):
        read_nifti(four, CAP)
    empty = write_nifti(tmp_path / "empty.nii.gz", np.zeros((4, 0, 4), np.uint8))
    with pytest.raises(DataError, match=r"empty.nii.gz: the header gives the volume no voxels "
                                        r"along an axis \(4, 0, 4\)"):
        read_nifti(empty, CAP)


def test_series_sorted_by_position_not_name(tmp_path) -> None:
    vol = ramp()
    folder = write_series(tmp_path / "s", vol, seed=3)
    series = read_series(folder, CAP)
    np.testing.assert_allclose(series.voxels, vol)
    assert series.window == (40.0, 400.0) and not series.inverted
    # slices listed head-to-feet (decreasing z) still come out in increasing position
    down = write_series(tmp_path / "d", vol[::-1].copy(),
                        positions=[10.0 - 2 * i for i in range(6)])
    np.testing.assert_allclose(read_series(down, CAP).voxels, vol)


@pytest.mark.parametrize("positions, match", [
    ([0, 2, 4, 8, 10, 12], "a slice is missing between positions 4.00 and 8.00"),
    ([0, 2, 4, 5, 7, 9], "inconsistent slice spacing"),
    ([0, 2, 4, 4, 6, 8], "same position"),
])
def test_gaps_and_uneven_spacing_are_named(tmp_path, positions, match) -> None:
    folder = write_series(tmp_path / "case3", ramp(), positions=[float(p) for p in positions])
    with pytest.raises(DataError, match=match) as info:
        read_series(folder, CAP)
    assert "case3" in str(info.value)


def test_mixed_series_orientations_sizes_and_caps(tmp_path) -> None:
    folder = write_series(tmp_path / "mix", ramp(3))
    write_series(folder, ramp(3), positions=[10.0, 12.0, 14.0], prefix="B")
    with pytest.raises(DataError, match="mix 2 series"):
        read_series(folder, CAP)
    tilted = write_series(tmp_path / "tilt", ramp(3), series_uid="1.2.3")
    write_series(tilted, ramp(3), series_uid="1.2.3", positions=[10.0, 12.0, 14.0], prefix="B",
                 orientation=[1, 0, 0, 0, 0, 1])
    with pytest.raises(DataError, match="2 orientations"):
        read_series(tilted, CAP)
    with pytest.raises(DataError, match="exceeds dataset.max_voxels=50"):
        read_series(write_series(tmp_path / "big", ramp()), 50)
    bad = write_series(tmp_path / "corrupt", ramp())
    (bad / "IM0002.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01" * 7)
    with pytest.raises(DataError, match="IM0002.dcm: not a readable DICOM"):
        read_series(bad, CAP)


def test_windows_presets_and_resampling() -> None:
    assert resolve_window("ct_lung") == (-600.0, 1500.0)
    assert resolve_window([40, 400]) == (40.0, 400.0) and resolve_window(None) is None
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0], np.float32)
    np.testing.assert_allclose(intensity(hu, (40.0, 400.0)), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(intensity(hu[:2], None), [0, 1])
    out = resample(np.ones((6, 5, 4), np.float32), 8)
    assert out.shape == (8, 8, 8) and np.allclose(out, 1.0)
    checker = (np.indices((16, 16, 16)).sum(axis=0) % 2).astype(np.float32)
    np.testing.assert_allclose(resample(checker, 8), 0.5)  # averaged, not aliased
    mixed = resample(np.ones((32, 4, 8), np.float32), 8)  # shrink one axis, grow another
    assert mixed.shape == (8, 8, 8) and np.allclose(mixed, 1.0)
    with pytest.raises(ConfigError, match="not a preset"):
        FolderDatasetConf(root="x", window="ct_lungs")
    with pytest.raises(ConfigError, match="centre, width"):
        FolderDatasetConf(root="x", window=[40, 0])


def test_a_series_and_a_nifti_of_the_same_anatomy_agree(tmp_path) -> None:
    vol = ramp(8, 8, 8) - 200.0  # (slice, row, column) in HU
    series = write_series(tmp_path / "s", vol, window=None)
    nifti = write_nifti(tmp_path / "n.nii.gz", vol.transpose(2, 1, 0))
    a = read_volume(series, 8, (40.0, 400.0), CAP)
    b = read_volume(nifti, 8, (40.0, 400.0), CAP)
    assert a.shape == (8, 8, 8) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_named_preset_windows_2d_dicom_too(tmp_path) -> None:
    from al_sim.data.folder import read_image
    from tests.test_dicom import write_dicom

    hu = np.tile(np.arange(-1000, 1000, 250, dtype=np.int32), (8, 1))  # 8 x 8 CT values
    path = write_dicom(tmp_path / "ct.dcm", hu + 1024, intercept=-1024.0)
    by_name = read_image(path, 8, 1, "ct_soft_tissue")
    np.testing.assert_array_equal(by_name, read_image(path, 8, 1, [40.0, 400.0]))
    assert by_name[0, 0, 0] == 0 and by_name[0, 0, -1] == 255
