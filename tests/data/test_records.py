"""Record helpers: DICOM age/sex parsing, safe keys."""

from __future__ import annotations

import pytest

from vitdesk.data.records import SliceRecord, parse_age, parse_sex, safe_key


@pytest.mark.parametrize(
    ("text", "years"),
    [("045Y", 45.0), ("6M", 0.5), ("018M", 1.5), ("052W", 52 * 7 / 365.25),
     ("010D", 10 / 365.25), ("70", 70.0), (33, 33.0)],
)
def test_parse_age_dicom_age_strings(text, years):
    assert parse_age(text) == pytest.approx(years)


@pytest.mark.parametrize("text", ["", None, "abc", "45X"])
def test_parse_age_rejects_blank_or_garbage(text):
    assert parse_age(text) is None


def test_parse_sex():
    assert [parse_sex(v) for v in ("M", "f", "female", "O", "", None, "unknown")] == [
        "M", "F", "F", "O", None, None, "O"]


def test_safe_key_matches_imaging_definition():
    import hashlib

    from vitdesk.imaging import deid

    assert safe_key("PID-1") == deid.safe_key("PID-1")
    assert safe_key("PID-1") != hashlib.sha256(b"PID-1").hexdigest()[:12]  # keyed, not plain
    assert len(safe_key("x")) == 12


def test_record_dict_roundtrip():
    r = SliceRecord("/a/b.dcm", 2, "lesion", "abc", "def", "F", 45.0, "dicom")
    assert SliceRecord.from_dict(r.to_dict()) == r
