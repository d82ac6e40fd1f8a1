"""Label checks: CSV patient IDs against DICOM PatientIDs, tiny and near-spelled classes."""

from __future__ import annotations

import pytest

from vitdesk.data.label_checks import (
    PatientLink,
    check_classes,
    check_patient_ids,
    is_near_spelling,
    near_spellings,
)
from vitdesk.data.records import safe_key
from vitdesk.data.sources import load_records
from vitdesk.data.splits import check_no_leak, split_by_patient
from vitdesk.errors import DataError

from .conftest import write_csv


@pytest.mark.parametrize("a, b", [("lesoin", "lesion"), ("Lesion", "lesion"),
                                  ("lesion ", "lesion"), ("tumour", "tumor"),
                                  ("ground_glass", "ground glass"), ("cysts", "cyst")])
def test_near_spellings_are_found(a, b):
    assert is_near_spelling(a, b) and is_near_spelling(b, a)


@pytest.mark.parametrize("a, b", [("normal", "abnormal"), ("grade1", "grade2"),
                                  ("type a", "type b"), ("normal", "lesion"), ("t1", "t2"),
                                  ("benign", "malignant"), ("left", "right"), ("fat", "rat")])
def test_distinct_names_are_not_near_spellings(a, b):
    assert not is_near_spelling(a, b)


def test_near_spelling_refused_with_counts():
    assert near_spellings(["normal", "lesion", "lesoin"]) == [("lesion", "lesoin")]
    with pytest.raises(DataError) as e:
        check_classes({"normal": 40, "lesion": 30, "lesoin": 3}, "labels.csv")
    msg = str(e.value)
    assert msg.startswith("labels.csv: classes 'lesoin' (3 slices) and 'lesion' (30 slices)")
    assert "'lesoin' -> 'lesion'" in msg


def test_tiny_class_refused_toy_set_passes_with_notice():
    with pytest.raises(DataError, match=r"'rare' \(2\) have fewer than 5 slices"):
        check_classes({"normal": 40, "lesion": 30, "rare": 2}, "x")
    assert check_classes({"normal": 40, "lesion": 30, "rare": 2}, "x", min_examples=0) == []
    notes = check_classes({"a": 3, "b": 4}, "x")  # every class tiny: a toy set
    assert len(notes) == 1 and "toy" in notes[0]
    assert check_classes({"a": 5, "b": 9}, "x") == []


def test_patient_links():
    ok = [PatientLink(2, "A", "k1", "s0"), PatientLink(3, "A", "k1", "s1"),
          PatientLink(4, "B", "k2", "s2"), PatientLink(5, "C", "", "img.png")]
    check_patient_ids(ok, "m.csv")  # consistent; files without PatientID are ignored
    with pytest.raises(DataError, match=r"m\.csv: patient_id 'A' \(row 2, s0\) and 'B' "
                                        r"\(row 4, s2\) are the same DICOM patient"):
        check_patient_ids([*ok[:2], PatientLink(4, "B", "k1", "s2")], "m.csv")
    with pytest.raises(DataError, match=r"patient_id 'A' is given to files of 2 different "
                                        r"DICOM patients \(row 2, s0 and row 3, s1"):
        check_patient_ids([ok[0], PatientLink(3, "A", "k9", "s1")], "m.csv")


def _series_dataset(tmp_path, pids, csv_ids, labels):
    """One 3-slice series per row: DICOM PatientID ``pids[i]``, CSV id ``csv_ids[i]``."""
    from vitdesk.imaging.dicom_write import write_ct_series

    from .conftest import patient_hu

    root = tmp_path / "ds"
    rows = []
    for i, (pid, cid, label) in enumerate(zip(pids, csv_ids, labels, strict=True)):
        write_ct_series(root / f"s{i}", patient_hu(10.0 * i, slices=5),
                        patient={"PatientID": pid}, rng_seed=i)
        rows.append([f"s{i}", label, cid])
    write_csv(root / "labels.csv", ["path", "label", "patient_id"], rows)
    return root


LABELS = ["normal", "normal", "lesion", "lesion", "normal", "lesion"]


def test_csv_id_contradicting_dicom_is_refused_unless_told_which_to_trust(tmp_path):
    # DICOM patient MRN-0001 has two series; the CSV calls them P1 and P5: with the CSV
    # grouping one real patient could sit in train and test while the leak check passes
    pids = ["MRN-0001", "MRN-0002", "MRN-0003", "MRN-0004", "MRN-0001", "MRN-0006"]
    csv_ids = ["P1", "P2", "P3", "P4", "P5", "P6"]
    root = _series_dataset(tmp_path, pids, csv_ids, LABELS)
    with pytest.raises(DataError) as e:
        load_records(root)
    msg = str(e.value)
    assert "'P1' (row 2, s0) and 'P5' (row 6, s4) are the same DICOM patient" in msg
    assert "--patient-id dicom" in msg and "MRN" not in msg  # the raw DICOM ID is not shown

    trusted = load_records(root, patient_id="dicom")  # the files' PatientID wins
    assert len({r.patient for r in trusted}) == 5
    s0 = {r.patient for r in trusted if "/s0/" in r.path}
    s4 = {r.patient for r in trusted if "/s4/" in r.path}
    assert s0 == s4 == {safe_key("MRN-0001")}
    for seed in range(4):  # the two series of one patient never straddle splits
        splits = split_by_patient(trusted, seed=seed)
        check_no_leak(splits)
        where = {n for n, recs in splits.items() for r in recs if r.patient in s0}
        assert len(where) == 1

    as_csv = load_records(root, patient_id="csv")  # the old behaviour, when asked for
    assert len({r.patient for r in as_csv}) == 6


def test_one_csv_id_over_two_dicom_patients_is_refused(tmp_path):
    pids = ["MRN-1", "MRN-2", "MRN-3", "MRN-4", "MRN-5", "MRN-6"]
    csv_ids = ["P1", "P2", "P3", "P4", "P1", "P6"]
    root = _series_dataset(tmp_path, pids, csv_ids, LABELS)
    with pytest.raises(DataError, match=r"patient_id 'P1' is given to files of 2 different"):
        load_records(root)
    assert len({r.patient for r in load_records(root, patient_id="csv")}) == 5


def test_consistent_csv_ids_pass_and_bad_mode_is_refused(tmp_path):
    pids = ["MRN-1", "MRN-2", "MRN-3", "MRN-4", "MRN-1", "MRN-6"]
    csv_ids = ["P1", "P2", "P3", "P4", "P1", "P6"]  # renamed, but one to one
    root = _series_dataset(tmp_path, pids, csv_ids, LABELS)
    recs = load_records(root)
    assert {r.patient for r in recs} == {safe_key(f"P{i}") for i in (1, 2, 3, 4, 6)}
    with pytest.raises(DataError, match="patient_id='both' is not valid"):
        load_records(root, patient_id="both")


def test_one_row_typo_is_refused_not_a_third_class(tmp_path):
    root = _series_dataset(tmp_path, [f"M{i}" for i in range(6)], [""] * 6,
                           ["normal", "normal", "lesion", "lesion", "normal", "lesoin"])
    with pytest.raises(DataError) as e:
        load_records(root)
    assert "classes 'lesoin' (5 slices) and 'lesion' (10 slices)" in str(e.value)


def test_workspace_csv_import_refuses_a_near_spelling(tmp_path):
    from vitdesk.data.workspace import Workspace

    with Workspace.open(tmp_path / "ws") as ws:
        ws.add_class("lesion")
        csv_path = write_csv(tmp_path / "l.csv", ["path", "label"],
                             [["a.dcm", "Lesion"], ["b.dcm", "normal"]])
        with pytest.raises(DataError, match=r"l\.csv: class 'Lesion' looks like the existing "
                                            r"class 'lesion'.*\(1 row\(s\)\)"):
            ws.import_labels_csv(csv_path)
        assert ws.classes() == ["lesion"]  # nothing was added
        with pytest.raises(DataError, match="looks like the existing class 'lesion'"):
            ws.add_class("lesoin")
        write_csv(csv_path, ["path", "label"], [["a.dcm", "normal"], ["b.dcm", "nromal"]])
        with pytest.raises(DataError, match=r"classes 'normal' \(1 rows\) and 'nromal'"):
            ws.import_labels_csv(csv_path)


def test_cli_train_refuses_contradicting_ids_in_one_line_and_takes_the_flag(tmp_path, capsys):
    from vitdesk.cli import build_parser, main
    from vitdesk.commands.train import config_from_args

    pids = ["MRN-0001", "MRN-0002", "MRN-0003", "MRN-0004", "MRN-0001", "MRN-0006"]
    root = _series_dataset(tmp_path, pids, ["P1", "P2", "P3", "P4", "P5", "P6"], LABELS)
    base = ["train", "--data", str(root), "--model", "vit_test_tiny", "--img-size", "32",
            "--pretrained", "none", "--epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "run")]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "same DICOM patient" in line]
    assert len(errors) == 1 and "--patient-id dicom" in errors[0]
    assert not (tmp_path / "run" / "config.toml").exists()  # refused before writing
    args = build_parser().parse_args([*base, "--patient-id", "dicom"])
    assert config_from_args(args, warn=lambda m: None).data.patient_id == "dicom"
    assert config_from_args(build_parser().parse_args(base), warn=lambda m: None
                            ).data.patient_id == "check"
