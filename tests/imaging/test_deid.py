"""safe_key, split_meta and the PS3.15 basic-profile de-identification."""

from __future__ import annotations

import re

import numpy as np
import pydicom

from tests.imaging.dcmfactory import PHI_STRINGS, ct_slice
from vitdesk.imaging.deid import deidentify, safe_key, split_meta


def _dataset(tmp_path):
    p = ct_slice(tmp_path / "x.dcm", np.zeros((4, 4), np.int16), extra={
        "ReferringPhysicianName": "Dr^Who", "OperatorsName": "Op^Erator",
        "DeviceSerialNumber": "SN-42", "InstitutionAddress": "1 Main St",
        "OtherPatientIDs": "OLD-1", "StudyTime": "101010",
    })
    ds = pydicom.dcmread(p)
    ds.add_new(0x00091001, "LO", "private secret")
    ds.private_block(0x0011, "ACME", create=True).add_new(0x01, "LO", "more secret")
    return ds


def test_safe_key_is_short_stable_and_not_reversible():
    k = safe_key("1.2.3.4.5")
    assert re.fullmatch(r"[0-9a-f]{12}", k)
    assert k == safe_key("1.2.3.4.5") and k != safe_key("1.2.3.4.6")
    assert "1.2.3" not in k


def test_split_meta(tmp_path):
    ds = _dataset(tmp_path)
    meta, phi = split_meta(ds)
    assert meta["Modality"] == "CT" and meta["PatientSex"] == "F" and meta["PatientAge"] == "054Y"
    assert meta["Rows"] == 4 and meta["PixelSpacing"] == [0.7, 0.8]
    flat = repr(meta)
    assert not any(s in flat for s in PHI_STRINGS + ("Dr^Who", "SN-42", "1.2.826"))
    assert phi["PatientName"] == "Doe^Jane" and phi["PatientID"] == "PID-123456"
    assert phi["SeriesInstanceUID"].startswith("1.2.826") and phi["PrivateTags"] is True
    assert phi["DeviceSerialNumber"] == "SN-42"


def test_deidentify_basic_profile(tmp_path):
    ds = _dataset(tmp_path)
    out = deidentify(ds)
    assert ds.PatientName == "Doe^Jane"  # input untouched
    text = str(out)
    for s in PHI_STRINGS + ("Dr^Who", "Op^Erator", "SN-42", "1 Main St", "OLD-1", "secret"):
        assert s not in text, s
    assert not any(e.tag.is_private for e in out)
    assert out.PatientName == "" and out.PatientID == "" and out.StudyDate == ""
    assert "InstitutionName" not in out and "OtherPatientIDs" not in out
    assert "SeriesDescription" not in out  # free text: removed by the basic profile
    assert out.Modality == "CT" and out.Manufacturer == "pytest"  # technical data kept
    assert out.PatientSex == "F" and out.PatientAge == "054Y"
    assert out.PatientIdentityRemoved == "YES"
    # UIDs replaced, valid, consistent: the same input UID maps to the same output
    assert out.SeriesInstanceUID != ds.SeriesInstanceUID
    assert out.SeriesInstanceUID.startswith("2.25.") and len(out.SeriesInstanceUID) <= 64
    assert deidentify(ds).SeriesInstanceUID == out.SeriesInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    np.testing.assert_array_equal(out.pixel_array, ds.pixel_array)
    # the result still writes as a valid file
    out.save_as(tmp_path / "anon.dcm", enforce_file_format=True)
    again = pydicom.dcmread(tmp_path / "anon.dcm")
    assert again.PatientSex == "F"


def test_safe_key_is_keyed_by_the_installation_secret(tmp_path, monkeypatch):
    import hashlib
    import os
    import stat

    from vitdesk.imaging import deid

    plain = hashlib.sha256(b"12345678").hexdigest()
    k = safe_key("12345678")
    assert not any(plain[:n] == k[:n] for n in range(8, 13))  # no plain-hash prefix
    first = tmp_path / "a" / "secret.key"
    monkeypatch.setenv(deid.SECRET_ENV, str(first))
    ka = safe_key("12345678")
    assert first.is_file() and stat.S_IMODE(os.stat(first).st_mode) == 0o600
    assert len(first.read_bytes().strip()) == 64
    assert safe_key("12345678") == ka  # stable on one installation
    id_a = deid.key_id()
    assert id_a.startswith(deid.KEY_SCHEME + ":")
    monkeypatch.setenv(deid.SECRET_ENV, str(tmp_path / "b" / "secret.key"))
    assert safe_key("12345678") != ka and deid.key_id() != id_a  # another secret
    monkeypatch.setenv(deid.SECRET_ENV, str(first))
    assert safe_key("12345678") == ka and deid.key_id() == id_a
    assert "secret" not in id_a and first.read_text().strip() not in id_a


def test_unwritable_secret_location_warns_and_keys_still_work(tmp_path, monkeypatch):
    import pytest

    from vitdesk.imaging import deid

    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the folder should be: cannot be created
    monkeypatch.setenv(deid.SECRET_ENV, str(blocker / "secret.key"))
    with pytest.warns(UserWarning, match="session only"):
        k = safe_key("PID-1")
    assert re.fullmatch(r"[0-9a-f]{12}", k) and safe_key("PID-1") == k
