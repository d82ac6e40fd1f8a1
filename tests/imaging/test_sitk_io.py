"""load_sitk round trips: NIfTI, MetaImage and NRRD written by SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from vitdesk.errors import LoadError
from vitdesk.imaging.io import load_path
from vitdesk.imaging.sitk_io import load_sitk


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.mha", "v.mhd", "v.nrrd"])
def test_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    arr = rng.integers(-1024, 2000, size=(5, 6, 7)).astype(np.int16)  # z, y, x
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.6, 0.7, 2.5))  # x, y, z
    img.SetOrigin((-10.0, -20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / name))
    vol = load_sitk(tmp_path / name)
    assert vol.hu.dtype == np.float32 and vol.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.hu, arr)
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.6))
    assert vol.origin == pytest.approx((-10.0, -20.0, 30.0))
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(vol.slice_positions, 30.0 + 2.5 * np.arange(5))
    assert vol.phi == {} and vol.key
    # the dispatcher picks the same loader from the extension
    (loaded,) = load_path(tmp_path / name).volumes
    np.testing.assert_array_equal(loaded.hu, arr)


def test_2d_image_becomes_one_slice(tmp_path):
    img = sitk.GetImageFromArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    img.SetSpacing((0.5, 0.25))
    sitk.WriteImage(img, str(tmp_path / "s.nrrd"))
    vol = load_sitk(tmp_path / "s.nrrd")
    assert vol.shape == (1, 3, 4) and vol.spacing == pytest.approx((1.0, 0.25, 0.5))


def test_bad_files(tmp_path):
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file")
    with pytest.raises(LoadError, match="junk.nii"):
        load_sitk(tmp_path / "junk.nii")
    with pytest.raises(LoadError, match="no such file"):
        load_sitk(tmp_path / "missing.mha")
    res = load_path(tmp_path / "junk.nii")
    assert res.volumes == [] and res.errors[0].path == str(tmp_path / "junk.nii")
    rgb = sitk.GetImageFromArray(np.zeros((4, 4, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(LoadError, match="components"):
        load_sitk(tmp_path / "rgb.mha")
