"""No PHI in any output: train, evaluate, report and predict on studies full of markers.

Every identifying DICOM field (and a private tag) holds a unique marker string; after
the whole command-line pipeline no output file, file name, PDF text or console line
may contain any of them. The data folder itself is named like a real export
("DOE^JOHN_12345678"): no output file may contain that name, and no stored key may
be a plain (unkeyed) hash of a marker PatientID, which a brute force would reverse.
"""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pydicom
import pytest
from pypdf import PdfReader

from vitdesk.cli import main
from vitdesk.imaging.dicom_write import write_ct_series

N_PATIENTS = 6
FOLDER_MARKER = "DOE^JOHN_12345678"


def _markers(i: int) -> dict[str, str]:
    return {
        "PatientName": f"Qzmarkfamily{i}^Wvmarkgiven{i}",
        "PatientID": f"PIDMARK{i}X7731",
        "PatientBirthDate": f"1901020{i}",
        "AccessionNumber": f"ACCMARK{i}Q55",
        "InstitutionName": f"Markerton Infirmary {i}Zq",
        "ReferringPhysicianName": f"Refmark{i}^Docmark{i}",
        "private": f"PRIVMARK{i}K9988",
    }


@pytest.fixture
def phi_data(tmp_path):
    """6 patients x 4 slices of 32 px; lesion patients carry a bright disc."""
    root = tmp_path / FOLDER_MARKER
    rows = []
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    markers = []
    for i in range(N_PATIENTS):
        m = _markers(i)
        markers += [v for v in m.values()] + [v.split("^")[0] for v in m.values() if "^" in v]
        label = "lesion" if i % 2 else "normal"
        hu = rng.normal(40, 15, (4, 32, 32)).astype(np.float32)
        if label == "lesion":
            hu[:, (yy - 16) ** 2 + (xx - 12) ** 2 < 36] = 300
        patient = {k: m[k] for k in ("PatientName", "PatientID", "PatientBirthDate")}
        patient.update(PatientSex="MF"[i % 2], PatientAge=f"{40 + i:03d}Y")
        extra = {k: m[k] for k in ("AccessionNumber", "InstitutionName",
                                   "ReferringPhysicianName")}
        folder = root / f"p{i}"
        paths = write_ct_series(folder, hu, patient=patient, extra=extra, rng_seed=i)
        for p in paths:  # a private tag with a marker in every file
            ds = pydicom.dcmread(p)
            ds.private_block(0x0011, "VITDESK TEST", create=True).add_new(0x01, "LO",
                                                                           m["private"])
            ds.save_as(p)
        rows.append((f"p{i}", label))
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    # the markers really are in the input
    ds = pydicom.dcmread(next((root / "p1").glob("*.dcm")))
    assert str(ds.PatientName) == _markers(1)["PatientName"]
    return root, markers


def test_no_marker_in_any_output_or_console(phi_data, tmp_path, capsys):
    data, markers = phi_data
    out = tmp_path / "out"
    run = out / "run"
    assert main(["train", "--data", str(data), "--model", "vit_test_tiny", "--img-size", "32",
                 "--pretrained", "none", "--epochs", "1", "--batch-size", "8",
                 "--device", "cpu", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--data", str(data), "--tta", "--out",
                 str(out / "eval"), "--device", "cpu"]) == 0
    assert main(["report", str(run), "--data", str(data), "--out", str(out / "report"),
                 "--dicom", str(out / "dicom_report"), "--device", "cpu"]) == 0
    assert main(["predict", str(run), str(data / "p1"), "--tta", "--attention",
                 str(out / "att"), "--out", str(out / "pred.csv"), "--device", "cpu"]) == 0
    # an exported model and its contract, and what it predicts, carry no PHI either
    assert main(["export", str(run), "--format", "onnx", "--int8", "--data", str(data),
                 "--out", str(out / "export")]) == 0
    assert main(["predict", str(out / "export"), str(data / "p1"), "--out",
                 str(out / "pred_export.csv"), "--dicom", str(out / "dicom_sr")]) == 0
    captured = capsys.readouterr()

    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "report" / "report.html").stat().st_size > 10_000
    assert (out / "report" / "metrics.json") in files and (out / "eval" / "metrics.json") in files
    assert (out / "report" / "report.pdf") in files and len(list((out / "att").iterdir())) == 8
    # DICOM results: only the referenced UIDs tie them to the patient
    assert len(list((out / "dicom_sr").iterdir())) == 1
    assert len(list((out / "dicom_report").iterdir())) >= 1
    pdf_text = "\n".join(pg.extract_text() for pg in PdfReader(out / "report" / "report.pdf").pages)
    assert "Research use only" in pdf_text
    console = captured.out + captured.err
    # the data folder's name (a patient's, in real exports) is in no output file: not
    # in config.toml, split.json, metrics, reports, predictions (console lines may
    # echo the path the user typed)
    for p in files:
        blob = p.read_bytes().lower()
        assert FOLDER_MARKER.lower().encode() not in blob, f"data folder name in {p.name}"
        assert b"12345678" not in blob, f"data folder name in {p.name}"
        assert str(data).lower().encode() not in blob, f"absolute data path in {p.name}"
    # stored patient keys are keyed hashes: no plain sha256 prefix of a marker ID
    split_text = (run / "split.json").read_text()
    assert '"patient"' in split_text
    every = b"".join(p.read_bytes().lower() for p in files)
    for i in range(N_PATIENTS):
        pid = _markers(i)["PatientID"]
        plain = hashlib.sha256(pid.encode()).hexdigest()
        for n in range(8, 17):
            assert plain[:n].encode() not in every, f"plain sha256 of a PatientID ({n})"
    for marker in markers:
        low = marker.lower().encode()
        for p in out.rglob("*"):
            assert marker.lower() not in str(p.relative_to(tmp_path)).lower()
        for p in files:
            assert low not in p.read_bytes().lower(), f"marker in {p.name}"
        assert marker.lower() not in pdf_text.lower()
        assert marker.lower() not in console.lower()
