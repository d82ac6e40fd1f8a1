"""scan_path: grouping by series, junk, DICOMDIR, errors, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from tests.imaging.dcmfactory import PHI_STRINGS, ct_series, ct_slice
from vitdesk.errors import Cancelled, LoadError
from vitdesk.imaging import scan as scan_mod
from vitdesk.imaging.deid import safe_key
from vitdesk.imaging.scan import scan_path
from vitdesk.jobs import CancelToken, Progress

A_UID, B_UID = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102"


def _mixed_folder(root):
    stored = np.zeros((4, 6, 6), np.int16)
    a = ct_series(root / "mixed", stored, series_uid=A_UID, prefix="a", dz=1.0)
    b = ct_series(root / "mixed", stored[:3], series_uid=B_UID, prefix="b", dz=5.0,
                  extra={"SeriesDescription": "second", "SeriesNumber": 2})
    return a, b


def test_mixed_folder_split_by_series_and_sorted(tmp_path):
    a, b = _mixed_folder(tmp_path)
    (tmp_path / "mixed" / "notes.txt").write_text("not dicom at all\n" * 20)
    (tmp_path / "mixed" / "empty.dcm").write_bytes(b"")
    res = scan_path(tmp_path)
    assert res.n_files == 9 and res.errors == [] and res.skipped == 2
    by_key = {s.key: s for s in res.series}
    sa, sb = by_key[safe_key(A_UID)], by_key[safe_key(B_UID)]
    assert sa.files == tuple(str(p) for p in a)  # position order, not name order
    assert sb.files == tuple(str(p) for p in b)
    assert sb.description == "second" and sa.modality == "CT"
    assert sa.n_frames == 4 and sa.meta["NumberOfFiles"] == 4
    assert sa.patient_key == safe_key("PID-123456") == sb.patient_key
    assert sa.study_key == sb.study_key
    # safe meta carries no identity; phi does
    text = repr(sa.meta)
    assert not any(s in text for s in PHI_STRINGS)
    assert sa.phi["PatientName"] == "Doe^Jane"
    assert sa.meta["PatientAge"] == "054Y"


def test_dicomdir_and_non_image_objects_skipped(tmp_path):
    ct_slice(tmp_path / "img.dcm", np.zeros((4, 4), np.int16))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.FileSetID = "X"
    ds.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    sr = Dataset()  # a non-image object (e.g. a structured report): no Rows
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.file_meta.MediaStorageSOPInstanceUID = "1.2.3.5"
    sr.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SeriesInstanceUID = "1.2.3.6"
    sr.Modality = "SR"
    sr.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    res = scan_path(tmp_path)
    assert len(res.series) == 1 and res.skipped == 2 and res.errors == []


def test_truncated_header_is_an_error_junk_is_not(tmp_path):
    p = ct_slice(tmp_path / "ok.dcm", np.zeros((4, 4), np.int16))
    data = p.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:200])  # preamble + part of the meta
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 300)
    res = scan_path(tmp_path)
    assert len(res.series) == 1
    assert [e.path for e in res.errors] == [str(tmp_path / "cut.dcm")]
    assert res.errors[0].reason and "\n" not in res.errors[0].reason


def test_volume_files_listed(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "b.MHA").write_bytes(b"x")
    res = scan_path(tmp_path)
    assert sorted(res.volume_files) == [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.MHA")]


def test_bad_paths(tmp_path):
    with pytest.raises(LoadError, match="no such file"):
        scan_path(tmp_path / "missing")
    empty = scan_path(tmp_path)
    assert empty.series == [] and empty.n_files == 0


def test_fifo_is_not_opened(tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever
    assert scan_path(tmp_path).n_files == 0
    with pytest.raises(LoadError, match="not a regular file"):
        scan_path(fifo)


def test_progress_and_cancel(tmp_path, monkeypatch):
    monkeypatch.setattr(scan_mod, "PROGRESS_EVERY", 2)
    ct_series(tmp_path, np.zeros((5, 4, 4), np.int16))
    events = []
    scan_path(tmp_path, listener=events.append)
    prog = [e for e in events if isinstance(e, Progress)]
    assert [e.done for e in prog] == [2, 4, 5] and prog[-1].total == 5
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scan_path(tmp_path, cancel=token)


def test_series_info_fields_carry_no_phi_headers(tmp_path):
    import dataclasses

    ct_series(tmp_path, np.zeros((2, 4, 4), np.int16))
    (info,) = scan_path(tmp_path).series
    assert len(info.headers) == 2  # kept for fast loading...
    fields = dataclasses.asdict(info)
    assert "headers" not in fields and "_headers" not in fields  # ...but not exported
    safe = {k: v for k, v in fields.items() if k != "phi"}
    assert not any(s in repr(safe) for s in PHI_STRINGS)
    assert not any(s in repr(info) for s in PHI_STRINGS)


def test_ds_floats_matches_pydicom(tmp_path):
    import pydicom

    from tests.imaging.dcmfactory import ImplicitVRLittleEndian
    from vitdesk.imaging.scan import ds_floats

    for ts in ("1.2.840.10008.1.2.1", ImplicitVRLittleEndian):
        p = ct_slice(tmp_path / f"{ts}.dcm", np.zeros((4, 4), np.int16), ipp=[-1.5, 2e1, 3.25],
                     ts=ts, extra={"SliceThickness": "", "InstanceNumber": 7})
        raw = pydicom.dcmread(p)
        conv = pydicom.dcmread(p)
        assert ds_floats(raw, "ImagePositionPatient") == [-1.5, 20.0, 3.25]
        assert ds_floats(raw, "ImagePositionPatient") == [float(v) for v in
                                                           conv.ImagePositionPatient]
        assert ds_floats(raw, "WindowCenter") == [40.0, 300.0]
        assert ds_floats(raw, "InstanceNumber") == [7.0]
        assert ds_floats(raw, "SliceThickness") is None  # empty value
        assert ds_floats(raw, "SpacingBetweenSlices") is None  # absent
        raw.RescaleSlope = 2  # an already-converted element takes the slow path
        assert ds_floats(raw, "RescaleSlope") == [2.0]


def test_metadata_pydicom_cannot_convert_fails_only_that_file(tmp_path):
    # split_meta reads SeriesDescription; an unknown VR there raises NotImplementedError
    # only when the value is converted, long after the header was parsed.
    paths = ct_series(tmp_path, np.zeros((3, 4, 4), np.int16), shuffle=None)
    victim = paths[0]  # first in slice order: the one split_meta reads
    data = bytearray(victim.read_bytes())
    i = data.find(b"\x08\x00\x3e\x10LO")
    if i < 0:  # the factory may not write a description: add one
        ct_slice(victim, np.zeros((4, 4), np.int16), z=10.0,
                 extra={"SeriesDescription": "chest"})
        data = bytearray(victim.read_bytes())
        i = data.find(b"\x08\x00\x3e\x10LO")
    data[i + 4:i + 6] = b"ZZ"
    victim.write_bytes(bytes(data))
    res = scan_path(tmp_path)
    assert len(res.series) == 1 and res.series[0].files == tuple(str(p) for p in paths[1:])
    assert [e.path for e in res.errors] == [str(victim)]
    assert "NotImplementedError" in res.errors[0].reason
