"""write_ct_series: files are real CT Image Storage and read back to the same HU."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from vitdesk.imaging.dicom_write import CT_IMAGE_STORAGE, hu_to_stored, write_ct_series


def _volume(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1100.0, 3000.0, (3, 20, 16)).astype(np.float32)


def test_roundtrip_hu_positions_and_tags(tmp_path):
    hu = _volume()
    paths = write_ct_series(
        tmp_path, hu, spacing=(2.5, 0.7, 0.8), origin=(-10.0, -20.0, 30.0),
        patient={"PatientName": "Doe^Jane", "PatientID": "P1", "PatientSex": "F",
                 "PatientAge": "045Y"},
        series_description="test series", window=(1500.0, -600.0),
        extra={"BodyPartExamined": "ABDOMEN"},
    )
    assert [p.name for p in paths] == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.preamble is not None and len(ds.preamble) == 128
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CT_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.Modality, ds.PixelRepresentation, ds.BitsStored, ds.HighBit) == ("CT", 1, 16,
                                                                                     15)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.RescaleType == "HU"
        assert float(ds.RescaleIntercept) == -1024.0 and float(ds.RescaleSlope) == 1.0
        assert ds.pixel_array.dtype == np.int16
        got = apply_modality_lut(ds.pixel_array, ds)
        np.testing.assert_allclose(got, np.rint(hu[k].astype(np.float64)), atol=0)
        assert [float(v) for v in ds.ImagePositionPatient] == [-10.0, -20.0, 30.0 + 2.5 * k]
        assert float(ds.SliceLocation) == 30.0 + 2.5 * k
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.8]
        assert float(ds.SliceThickness) == 2.5 == float(ds.SpacingBetweenSlices)
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (20, 16)
        assert (float(ds.WindowWidth), float(ds.WindowCenter)) == (1500.0, -600.0)
        assert str(ds.PatientName) == "Doe^Jane" and ds.PatientAge == "045Y"
        assert ds.BodyPartExamined == "ABDOMEN"
        assert ds.SeriesDescription == "test series"
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    assert len(uids) == 3


def test_clipping_to_int16_range():
    stored = hu_to_stored(np.array([-40000.0, -1024.0, 0.0, 40000.0]))
    assert stored.tolist() == [-32768, 0, 1024, 32767]


def test_seed_makes_files_identical_and_uids_shared(tmp_path):
    hu = _volume(1)
    a = write_ct_series(tmp_path / "a", hu, rng_seed=7)
    b = write_ct_series(tmp_path / "b", hu, rng_seed=7)
    c = write_ct_series(tmp_path / "c", hu, rng_seed=8)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    da, dc = pydicom.dcmread(a[0]), pydicom.dcmread(c[0])
    assert da.SeriesInstanceUID != dc.SeriesInstanceUID
    assert da.StudyInstanceUID == pydicom.dcmread(a[2]).StudyInstanceUID


def test_explicit_uids_are_used(tmp_path):
    paths = write_ct_series(tmp_path, _volume()[:1], study_uid="1.2.3.4", series_uid="1.2.3.4.5")
    ds = pydicom.dcmread(paths[0])
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == ("1.2.3.4", "1.2.3.4.5")


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless, JPEGLSLossless]
)
def test_other_transfer_syntaxes_roundtrip(tmp_path, syntax):
    hu = _volume(2)
    paths = write_ct_series(tmp_path, hu, transfer_syntax=syntax, file_prefix="X")
    ds = pydicom.dcmread(paths[2])
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds),
                                  np.rint(hu[2].astype(np.float64)))


def test_unknown_keyword_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="NotAKeyword"):
        write_ct_series(tmp_path, _volume()[:1], extra={"NotAKeyword": 1})


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian])
def test_fast_encoder_writes_the_bytes_dcmwrite_writes(tmp_path, syntax):
    paths = write_ct_series(tmp_path, _volume(3), transfer_syntax=syntax,
                            patient={"PatientName": "Müller^Jörg"})
    for path in paths:
        ds = pydicom.dcmread(path)
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        assert buf.getvalue() == path.read_bytes()
