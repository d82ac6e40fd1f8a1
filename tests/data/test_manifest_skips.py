"""A manifest row naming an unreadable DICOM file is skipped with a notice; colour DICOM
read for training says once per series that its values are luminance, not HU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from vitdesk.data.build import build_datasets
from vitdesk.data.preprocess import read_record
from vitdesk.data.sources import load_records, read_manifest
from vitdesk.errors import DataError
from vitdesk.imaging.dicom_write import write_ct_series
from vitdesk.imaging.windowing import WindowSpec
from vitdesk.jobs import Notice

from .conftest import patient_hu, write_csv

KW = dict(window=WindowSpec.parse("lung"), img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
CUT_HEADER = b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff"


def _notices(events: list) -> list[str]:
    return [e.message for e in events if isinstance(e, Notice)]


def test_manifest_row_naming_an_unreadable_file_is_skipped_with_a_notice(dicom_folder):
    bad = dicom_folder / "case_000" / "broken.dcm"
    bad.write_bytes(CUT_HEADER)
    empty = dicom_folder / "only_broken"
    empty.mkdir()
    (empty / "x.dcm").write_bytes(CUT_HEADER)
    csv_path = dicom_folder / "labels.csv"
    with open(csv_path, "a") as fh:
        fh.write("case_000/broken.dcm,normal\nonly_broken,lesion\n")
    events: list = []
    b = build_datasets(dicom_folder, seed=0, listener=events.append, **KW)
    recs = [r for s in b.splits.values() for r in s]
    assert len(recs) == 12 and str(bad.resolve()) not in {r.path for r in recs}
    notes = _notices(events)
    # file, reason and what to do, as a class folder says it
    (row,) = [n for n in notes if n.startswith(f"skipped {bad}: ")]
    assert row.endswith("(no Rows/Columns: a report, an index or a cut header); remove it "
                        "or give a DICOM image"), row
    assert any(n.startswith(f"skipped {empty / 'x.dcm'}: ") for n in notes), notes


def test_manifest_stops_only_when_nothing_usable_remains(tmp_path):
    for name in ("a.dcm", "b.dcm"):
        (tmp_path / name).write_bytes(CUT_HEADER)
    m = write_csv(tmp_path / "m.csv", ["path", "label"], [["a.dcm", "x"], ["b.dcm", "y"]])
    events: list = []
    with pytest.raises(DataError, match=r"m\.csv: none of the files named in the CSV could be "
                                         r"read \(2 unreadable; first: .*a\.dcm: "):
        load_records(m, listener=events.append)
    assert len([n for n in _notices(events) if n.startswith("skipped ")]) == 2


def _rgb_copy(src: Path, dst: Path, rgb: tuple[int, int, int]) -> None:
    """``src`` turned into an 8-bit RGB image of one colour (same series and patient)."""
    ds = pydicom.dcmread(src)
    rows, cols = int(ds.Rows), int(ds.Columns)
    pixels = np.empty((rows, cols, 3), np.uint8)
    pixels[...] = rgb
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    for kw in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if kw in ds:
            delattr(ds, kw)
    ds.PixelData = pixels.tobytes()
    ds.save_as(dst)


def test_colour_dicom_gives_one_notice_per_series_and_trains_on_luminance(tmp_path):
    grey = write_ct_series(tmp_path / "grey", patient_hu(100.0), spacing=(2.0, 1.0, 1.0),
                           patient={"PatientID": "G1"})
    src = write_ct_series(tmp_path / "src", patient_hu(0.0), spacing=(2.0, 1.0, 1.0),
                          patient={"PatientID": "C1"})
    colour = tmp_path / "colour"
    colour.mkdir()
    for k, f in enumerate(src):
        _rgb_copy(f, colour / f"c{k}.dcm", (200, 100, 50))
    rows = [[f"grey/{f.name}", "a"] for f in grey] + [["colour", "b"]]
    m = write_csv(tmp_path / "m.csv", ["path", "label"], rows)
    events: list = []
    recs = read_manifest(m, listener=events.append)
    assert len(recs) == 6
    notes = [n for n in _notices(events) if "colour image" in n]
    assert len(notes) == 1, notes  # once for the series, not once per file
    assert "(RGB): loaded as luminance, not Hounsfield units" in notes[0]
    assert "and 2 more file(s) of its series" in notes[0] and str(colour) in notes[0]
    # what training reads is that luminance (BT.601), the same for every pixel
    rec = next(r for r in recs if r.label == "b")
    expected = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    np.testing.assert_allclose(read_record(rec), expected, rtol=1e-5)
    # the same files in a class folder: one notice too; greyscale alone: none
    shutil.copytree(colour, tmp_path / "classes" / "b" / "s")
    shutil.copytree(tmp_path / "grey", tmp_path / "classes" / "a" / "s")
    events.clear()
    load_records(tmp_path / "classes", listener=events.append, min_classes=1)
    assert len([n for n in _notices(events) if "colour image" in n]) == 1
    events.clear()
    read_manifest(write_csv(tmp_path / "g.csv", ["path", "label"], rows[:3]),
                  listener=events.append)
    assert not [n for n in _notices(events) if "colour image" in n]


def test_colour_series_of_a_workspace_gives_one_notice(tmp_path):
    from vitdesk.data.workspace import Workspace
    from vitdesk.imaging.scan import scan_path

    src = write_ct_series(tmp_path / "src", patient_hu(0.0), spacing=(2.0, 1.0, 1.0),
                          patient={"PatientID": "C1"}, series_description="colour one")
    (tmp_path / "data").mkdir()
    for k, f in enumerate(src):
        _rgb_copy(f, tmp_path / "data" / f"c{k}.dcm", (10, 20, 30))
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.import_scan(scan_path(tmp_path / "data"))
    ws.add_class("b")
    (s,) = ws.series()
    ws.set_series_label(s.key, "b")
    ws.close()
    events: list = []
    recs = load_records(tmp_path / "ws", listener=events.append, min_classes=1)
    assert len(recs) == 3
    notes = [n for n in _notices(events) if "colour image" in n]
    assert notes == ["series 'colour one' (3 slice(s)): colour image (RGB): loaded as "
                     "luminance, not Hounsfield units; convert it to greyscale to train on HU"]


def test_predict_input_says_a_colour_series_is_luminance(tmp_path):
    from vitdesk.data.inputs import input_slices
    from vitdesk.jobs import CancelToken

    src = write_ct_series(tmp_path / "src", patient_hu(0.0), spacing=(2.0, 1.0, 1.0),
                          patient={"PatientID": "C1"})
    colour = tmp_path / "colour"
    colour.mkdir()
    for k, f in enumerate(src):
        _rgb_copy(f, colour / f"c{k}.dcm", (200, 100, 50))
    events: list = []
    slices, errors = input_slices(colour, CancelToken(), events.append)
    assert len(slices) == len(src) and not errors
    notes = [n for n in _notices(events) if "colour image" in n]
    assert len(notes) == 1 and notes[0].startswith(f"series {slices[0][0]}: ")
    events.clear()
    input_slices(tmp_path / "src", CancelToken(), events.append)
    assert not [n for n in _notices(events) if "colour image" in n]
