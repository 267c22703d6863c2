"""Voxel spacing of volumes (``dataset.spacing``): what the readers state, and how an
anisotropic volume becomes ``image_size^3`` (stretched, or isotropic and padded)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

from al_sim.config.data import FolderDatasetConf  # noqa: E402
from al_sim.data.dicom_series import read_series  # noqa: E402
from al_sim.data.folder_volumes import read_volume, read_volumes  # noqa: E402
from al_sim.data.nifti import load_nifti  # noqa: E402
from al_sim.data.volume import conform, isotropic_shape  # noqa: E402
from al_sim.runtime.errors import ConfigError, DataError  # noqa: E402
from tests.volume_files import write_nifti, write_series  # noqa: E402

CAP = 2**20
WINDOW = (40.0, 400.0)


def tissue(d: int, h: int, w: int) -> np.ndarray:
    """A (slice, row, column) block of 240 HU: 1.0 through the window ``WINDOW``."""
    return np.full((d, h, w), 240.0, np.float32)


def test_the_readers_state_spacing_along_d_h_w(tmp_path) -> None:
    xyz = np.zeros((4, 5, 6), np.int16)  # x, y, z
    _, spacing = load_nifti(write_nifti(tmp_path / "a.nii.gz", xyz,
                                        np.diag([0.5, 0.7, 3.0, 1.0])), CAP)
    assert spacing == pytest.approx((3.0, 0.7, 0.5))  # z, y, x: the D, H, W of the array
    series = read_series(write_series(tmp_path / "s", tissue(4, 6, 6), spacing=2.5,
                                      pixel_spacing=[0.8, 0.6]), CAP)
    assert series.spacing == pytest.approx((2.5, 0.8, 0.6))
    assert read_series(write_series(tmp_path / "bare", tissue(4, 6, 6)), CAP).spacing is None


def test_isotropic_keeps_proportions_and_pads_centred() -> None:
    # 4 slices of 2 mm, 8 x 8 pixels of 0.5 mm: 8 x 4 x 4 mm, so depth spans the whole cube
    assert isotropic_shape((4, 8, 8), (2.0, 0.5, 0.5), 8) == (8, 4, 4)
    out = conform(np.ones((4, 8, 8), np.float32), 8, (2.0, 0.5, 0.5), "isotropic", "v")
    assert out.shape == (8, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 2:6, 2:6], 1.0)
    assert out.sum() == pytest.approx(8 * 4 * 4)  # the rest is padding at the window's bottom
    stretched = conform(np.ones((4, 8, 8), np.float32), 8, (2.0, 0.5, 0.5), "stretch", "v")
    np.testing.assert_allclose(stretched, 1.0)  # stretch ignores the spacing
    # isotropic voxels already: isotropic and stretch agree
    cube = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(conform(cube, 8, (1.0, 1.0, 1.0), "isotropic", "v"),
                               conform(cube, 8, None, "stretch", "v"))


def test_a_series_and_a_nifti_of_one_anisotropic_anatomy_agree(tmp_path) -> None:
    vol = tissue(4, 8, 8)  # 4 slices 2 mm apart, 1 mm pixels: 8 x 8 x 8 mm ... of which
    vol[:, :, 4:] = -1000.0  # the right half is air
    series = write_series(tmp_path / "s", vol, spacing=2.0, window=None, pixel_spacing=[1, 1])
    nifti = write_nifti(tmp_path / "n.nii.gz", vol.transpose(2, 1, 0),
                        np.diag([1.0, 1.0, 2.0, 1.0]))
    a = read_volume(series, 8, WINDOW, CAP, "isotropic")
    b = read_volume(nifti, 8, WINDOW, CAP, "isotropic")
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a[:, :, :4], 1.0)  # a cube: nothing padded, depth interpolated
    np.testing.assert_allclose(a[:, :, 4:], 0.0)
    flat = write_nifti(tmp_path / "flat.nii.gz", tissue(2, 8, 8).transpose(2, 1, 0))  # 1 mm
    c = read_volume(flat, 8, WINDOW, CAP, "isotropic")
    np.testing.assert_allclose(c[3:5], 1.0)  # 2 mm of 8 mm: two slices, centred
    np.testing.assert_allclose(c[:3], 0.0)
    np.testing.assert_allclose(c[5:], 0.0)
    np.testing.assert_allclose(read_volume(flat, 8, WINDOW, CAP), 1.0)  # stretched: default


def test_missing_and_inconsistent_spacing_name_the_volume(tmp_path) -> None:
    bare = write_series(tmp_path / "case1", tissue(4, 6, 6))  # no PixelSpacing
    assert read_volume(bare, 6, WINDOW, CAP).shape == (6, 6, 6)  # stretch needs none
    with pytest.raises(DataError, match=r"case1: no voxel spacing.*dataset.spacing=stretch"):
        read_volume(bare, 6, WINDOW, CAP, "isotropic")
    mixed = write_series(tmp_path / "case2", tissue(3, 6, 6), pixel_spacing=[0.5, 0.5],
                         series_uid="1.2.3")
    write_series(mixed, tissue(3, 6, 6), positions=[6.0, 8.0, 10.0], prefix="B",
                 pixel_spacing=[0.7, 0.7], series_uid="1.2.3")
    with pytest.raises(DataError, match=r"case2: the slices mix 2 pixel spacings"):
        read_series(mixed, CAP)
    # (nibabel itself reads a NIfTI pixdim of 0 as 1 mm, with a warning)
    with pytest.raises(DataError, match=r"zero.nii.gz: voxel spacing 1 x 0 x nan mm is not "
                                        "three positive"):
        conform(tissue(4, 4, 4), 4, (1.0, 0.0, float("nan")), "isotropic", "zero.nii.gz")
    # a pool names each volume that cannot be made isotropic, relative to the root
    conf = FolderDatasetConf(root=str(tmp_path), volumes=True, image_size=6, spacing="isotropic")
    with pytest.raises(DataError, match=r"1 volume\(s\) cannot be read: case1 \(no voxel "):
        read_volumes([bare], tmp_path, conf)


def test_an_unknown_spacing_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dataset.spacing=cubic is not one of stretch, "
                                          "isotropic"):
        FolderDatasetConf(root="x", volumes=True, spacing="cubic")
