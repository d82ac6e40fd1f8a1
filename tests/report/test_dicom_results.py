"""DICOM results: predict --dicom (Comprehensive SR), report --dicom (Encapsulated PDF).

Each object is validated with dciodvfy (Debian dicom3tools) when it is installed, read
back with pydicom and with vitdesk's own scanner, checked for its references to the
source study/series/instances, and for the absence of the source's identity.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pydicom
import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.cli import main
from vitdesk.report.dicom_results import ENCAPSULATED_PDF

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dicomres")
    return tiny_run(tiny_sample(root / "sample"), root / "run")


def dciodvfy_errors(path) -> list[str]:
    """dciodvfy's error lines for ``path`` (skips when the tool is not installed)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def _identity(ds) -> list[str]:
    return [str(v) for v in (ds.PatientName, ds.PatientID, ds.PatientBirthDate,
                             getattr(ds, "AccessionNumber", ""),
                             getattr(ds, "InstitutionName", ""),
                             getattr(ds, "ReferringPhysicianName", ""))
            if str(v).strip()]


def _content(ds) -> dict:
    """Per slice: referenced SOP instance -> (finding, probability, set)."""
    out = {}
    for item in ds.ContentSequence:
        if item.ValueType != "CONTAINER":
            continue
        ref = finding = prob = cset = None
        for sub in item.ContentSequence:
            if sub.ValueType == "IMAGE":
                ref = sub.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            elif sub.ValueType == "CODE":
                finding = sub.ConceptCodeSequence[0].CodeMeaning
            elif sub.ValueType == "NUM":
                prob = float(sub.MeasuredValueSequence[0].NumericValue)
            elif sub.ValueType == "TEXT":
                cset = sub.TextValue
        out[ref] = (finding, prob, cset)
    return out


@pytest.mark.parametrize("exported", [False, True])
def test_predict_writes_a_valid_sr_that_references_the_series(run, tmp_path, exported):
    case = run.parent / "sample" / "case_002" / "series_1"
    source = [pydicom.dcmread(p) for p in sorted(case.glob("*.dcm"))]
    model = run
    if exported:
        model = tmp_path / "exp"
        assert main(["export", str(run), "--format", "onnx", "--out", str(model)]) == 0
    out = tmp_path / "sr"
    argv = ["predict", str(model), str(case), "--out", str(tmp_path / "p.csv"), "--dicom",
            str(out)]
    assert main(argv + ([] if exported else ["--device", "cpu"])) == 0
    files = sorted(out.iterdir())
    assert len(files) == 1
    assert dciodvfy_errors(files[0]) == []
    sr = pydicom.dcmread(files[0])
    assert sr.SOPClassUID == COMPREHENSIVE_SR
    assert sr.StudyInstanceUID == source[0].StudyInstanceUID
    assert sr.SeriesInstanceUID != source[0].SeriesInstanceUID
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert ev.StudyInstanceUID == source[0].StudyInstanceUID
    refs = ev.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in refs.ReferencedSOPSequence} == {
        d.SOPInstanceUID for d in source}
    # one container per slice, with the CSV's class, probability and conformal set
    content = _content(sr)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(content) == len(rows) == len(source) == 6
    by_position = sorted(source, key=lambda d: float(d.ImagePositionPatient[2]))
    texts = [i.TextValue for i in sr.ContentSequence if i.ValueType == "TEXT"]
    assert any("Research use only" in t for t in texts)
    assert "vit_test_tiny" in texts
    for row in rows:
        finding, prob, cset = content[by_position[int(row["slice"])].SOPInstanceUID]
        assert finding == row["predicted"]
        assert prob == pytest.approx(float(row[f"p_{row['predicted']}"]), abs=1e-5)
        assert cset == row["set"]
    # nothing of the patient's identity beyond the referenced UIDs
    blob = files[0].read_bytes()
    for value in _identity(source[0]):
        assert value.encode() not in blob, value
    assert str(sr.PatientName) == "" and sr.PatientID == "" and sr.PatientBirthDate == ""
    # vitdesk's scanner: the SR is a non-image object beside the series, never an error
    shutil.copy(files[0], case / "zz_sr.dcm")
    try:
        from vitdesk.imaging.scan import scan_path

        res = scan_path(case)
        assert len(res.series) == 1 and res.errors == [] and res.skipped == 1
        assert len(res.series[0].files) == 6
    finally:
        (case / "zz_sr.dcm").unlink()


def test_report_writes_the_pdf_into_each_test_study(run, tmp_path):
    data = run.parent / "sample"
    out = tmp_path / "dcm"
    assert main(["report", str(run), "--data", str(data), "--out", str(tmp_path / "rep"),
                 "--dicom", str(out), "--device", "cpu"]) == 0
    from vitdesk.data.splits import load_split

    test = load_split(run / "split.json", data_src=data)["test"]
    studies = {pydicom.dcmread(r.path, stop_before_pixels=True).StudyInstanceUID
               for r in test}
    files = sorted(out.glob("*_report.dcm"))
    assert len(files) == len(studies) == 2
    # and an SR per scored series: every test slice with the class the report counted
    srs = sorted(out.glob("*_sr.dcm"))
    assert len(srs) == 2
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    by_uid = {pydicom.dcmread(r.path, stop_before_pixels=True).SOPInstanceUID: r
              for r in test}
    for f in srs:
        assert dciodvfy_errors(f) == []
        content = _content(pydicom.dcmread(f))
        assert set(content) <= set(by_uid) and len(content) == 6
        assert all(0.5 <= prob <= 1.0 and cset for _, prob, cset in content.values())
    assert metrics["n_slices"] == 12
    pdf = (tmp_path / "rep" / "report.pdf").read_bytes()
    source = pydicom.dcmread(test[0].path)
    for f in files:
        assert dciodvfy_errors(f) == []
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == ENCAPSULATED_PDF and ds.Modality == "DOC"
        assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
        assert ds.EncapsulatedDocument[:ds.EncapsulatedDocumentLength] == pdf
        assert ds.PatientID == "" and str(ds.PatientName) == ""
        for value in _identity(source):
            assert value.encode() not in f.read_bytes()
    assert {pydicom.dcmread(f).StudyInstanceUID for f in files} == studies


def test_dicom_out_is_checked_before_work(run, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    case = run.parent / "sample" / "case_002" / "series_1"
    assert main(["predict", str(run), str(case), "--dicom", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vitdesk: error: --dicom") and "is a file" in err
    assert main(["predict", str(run), str(case), "--deid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--deid de-identifies the DICOM results: add --dicom DIR" in err


def test_attention_overlays_become_aligned_secondary_captures(run, tmp_path):
    import cv2

    case = run.parent / "sample" / "case_002" / "series_1"
    source = {d.SOPInstanceUID: d for d in (pydicom.dcmread(p) for p in case.glob("*.dcm"))}
    out = tmp_path / "dcm"
    assert main(["predict", str(run), str(case), "--attention", str(tmp_path / "att"),
                 "--dicom", str(out), "--out", str(tmp_path / "p.csv"),
                 "--device", "cpu"]) == 0
    scs = sorted(out.glob("*_sc_*.dcm"))
    assert len(scs) == 6 and len(list(out.glob("*_sr.dcm"))) == 1
    pngs = sorted((tmp_path / "att").glob("*_rollout.png"))
    series = set()
    for f in scs:
        assert dciodvfy_errors(f) == []
        sc = pydicom.dcmread(f)
        assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        src = source[sc.ReferencedImageSequence[0].ReferencedSOPInstanceUID]
        assert sc.StudyInstanceUID == src.StudyInstanceUID
        assert (sc.Rows, sc.Columns) == (src.Rows, src.Columns)
        assert [float(v) for v in sc.PixelSpacing] == [float(v) for v in src.PixelSpacing]
        assert list(sc.PatientOrientation) == ["L", "P"]  # axial: rows left, columns back
        assert str(sc.PatientName) == "" and sc.PatientID == ""
        for value in _identity(src):
            assert value.encode() not in f.read_bytes()
        # the pixels are the rollout overlay of that slice (slice order = z order)
        z = sorted(source.values(), key=lambda d: float(d.ImagePositionPatient[2])).index(src)
        png = cv2.cvtColor(cv2.imread(str(pngs[z])), cv2.COLOR_BGR2RGB)
        assert (sc.pixel_array == png).all()
        series.add(sc.SeriesInstanceUID)
    assert len(series) == 1 and series.isdisjoint({d.SeriesInstanceUID for d in source.values()})


def test_deid_copies_remap_every_uid_like_the_de_identified_sources(run, tmp_path):
    from vitdesk.imaging.deid import deidentify

    case = run.parent / "sample" / "case_002" / "series_1"
    source = [pydicom.dcmread(p) for p in sorted(case.glob("*.dcm"))]
    deid_source = [deidentify(d) for d in source]
    out = tmp_path / "dcm"
    assert main(["predict", str(run), str(case), "--attention", str(tmp_path / "att"),
                 "--dicom", str(out), "--deid", "--device", "cpu"]) == 0
    files = sorted(out.iterdir())
    assert len(files) == 7  # one SR, six overlays
    original = {u for d in source for u in (d.StudyInstanceUID, d.SeriesInstanceUID,
                                            d.SOPInstanceUID, d.FrameOfReferenceUID)}
    for f in files:
        assert dciodvfy_errors(f) == []
        blob = f.read_bytes()
        assert not any(u.encode() in blob for u in original)
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == deid_source[0].StudyInstanceUID
    sr = pydicom.dcmread(next(f for f in files if f.name.endswith("_sr.dcm")))
    refs = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == deid_source[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in refs.ReferencedSOPSequence} == {
        d.SOPInstanceUID for d in deid_source}
    assert set(_content(sr)) == {d.SOPInstanceUID for d in deid_source}
    sc = pydicom.dcmread(next(f for f in files if "_sc_" in f.name))
    assert sc.ReferencedImageSequence[0].ReferencedSOPInstanceUID in {
        d.SOPInstanceUID for d in deid_source}
