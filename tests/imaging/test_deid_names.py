"""A description that looks like a person's name is identifying (deid.split_meta)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from tests.imaging.dcmfactory import ct_slice
from vitdesk.imaging.deid import looks_like_name, split_meta
from vitdesk.imaging.scan import scan_path


@pytest.mark.parametrize(("text", "expected"), [
    ("DOE^JOHN", True), ("O'Brien^Mary-Ann^K", True), ("Smith^Anna^", True),
    ("Chest 1.0 B30f", False), ("Thorax^01_Routine", False), ("AX 5mm", False),
    ("jane doe follow-up", True),  # contains the patient's own name (Doe^Jane)
    ("", False),
])
def test_looks_like_name(text, expected):
    assert looks_like_name(text, "Doe^Jane") is expected


def _write(tmp_path, description: str):
    extra = {"SeriesDescription": description, "StudyDescription": "CHEST",
             "PatientName": "Doe^Jane"}
    return ct_slice(tmp_path / "a.dcm", np.zeros((4, 4), np.int16), extra=extra)


def test_name_like_series_description_moves_to_phi(tmp_path):
    meta, phi = split_meta(pydicom.dcmread(_write(tmp_path, "ROE^RICHARD")))
    assert "SeriesDescription" not in meta
    assert phi["SeriesDescription"] == "ROE^RICHARD"
    assert meta["StudyDescription"] == "CHEST"  # an ordinary description stays safe


def test_ordinary_description_stays_safe(tmp_path):
    meta, phi = split_meta(pydicom.dcmread(_write(tmp_path, "Chest 1.0 B30f")))
    assert meta["SeriesDescription"] == "Chest 1.0 B30f"
    assert "SeriesDescription" not in phi


def test_scan_does_not_list_a_name_as_the_series_description(tmp_path):
    _write(tmp_path, "ROE^RICHARD")
    result = scan_path(tmp_path)
    (info,) = result.series
    assert info.description == ""
    assert "ROE" not in repr(info.meta)
