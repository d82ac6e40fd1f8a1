"""Every SRC kind gives the right records; bad sources raise DataError naming the file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from vitdesk.data.records import safe_key
from vitdesk.data.sources import detect_kind, load_records
from vitdesk.errors import DataError
from vitdesk.imaging.dicom_write import write_ct_series

from .conftest import patient_hu, write_csv


def test_dicom_folder_per_slice_labels_and_dicom_sex_age(dicom_folder):
    recs = load_records(dicom_folder)
    assert detect_kind(dicom_folder) == "dicom_folder"
    assert len(recs) == 12
    by_patient = {}
    for r in recs:
        by_patient.setdefault(r.patient, []).append(r)
    assert set(by_patient) == {safe_key(f"PID-SECRET-{p}") for p in range(4)}
    p2 = by_patient[safe_key("PID-SECRET-2")]
    assert {r.label for r in p2} == {"lesion"}
    assert {(r.sex, r.age) for r in p2} == {("F", 42.0)}  # from PatientSex / PatientAge "042Y"
    assert {r.kind for r in recs} == {"dicom"}
    assert all(Path(r.path).is_absolute() and r.frame == 0 for r in recs)
    # the raw ID never appears in a record
    assert not any("SECRET" in str(v) for r in recs for v in r.to_dict().values())


def test_per_series_rows_expand_in_volume_order_with_csv_overrides(tmp_path):
    root = tmp_path / "ds"
    for p in (0, 1):
        files = write_ct_series(root / f"s{p}", patient_hu(0.0, slices=4),
                                patient={"PatientID": f"P{p}", "PatientSex": "F"}, rng_seed=p)
        # Rename so that file-name order is the reverse of the slice position order.
        for k, f in enumerate(files):
            f.rename(f.with_name(f"x{len(files) - k}.dcm"))
    write_csv(root / "labels.csv", ["path", "label", "patient_id", "sex", "age"],
              [["s0", "normal", "Alice", "M", "61"], ["s1", "lesion", "", "", ""]])
    recs = load_records(root)
    assert len(recs) == 8
    s0 = [r for r in recs if r.label == "normal"]
    z = [float(pydicom.dcmread(r.path, stop_before_pixels=True).ImagePositionPatient[2])
         for r in s0]
    assert z == sorted(z) and len(set(z)) == 4  # volume order, not file-name order
    assert {(r.patient, r.sex, r.age) for r in s0} == {(safe_key("Alice"), "M", 61.0)}
    s1 = [r for r in recs if r.label == "lesion"]
    assert {(r.patient, r.sex, r.age) for r in s1} == {(safe_key("P1"), "F", None)}


def test_multiframe_file_gives_one_record_per_frame(tmp_path):
    from vitdesk.data.dataset import read_dicom_hu

    files = write_ct_series(tmp_path / "mf", patient_hu(0.0, slices=1), patient={"PatientID": "Q"})
    ds = pydicom.dcmread(files[0])
    frames = np.stack([np.full((16, 16), v, np.int16) for v in (1024, 1124, 1224)])
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.save_as(files[0])
    write_csv(tmp_path / "m.csv", ["path", "label"], [["mf/" + files[0].name, "a"]])
    recs = load_records(tmp_path / "m.csv", min_classes=1)
    assert [r.frame for r in recs] == [0, 1, 2]
    # stored 1124 with intercept -1024 -> 100 HU
    assert float(read_dicom_hu(recs[1].path, 1).mean()) == pytest.approx(100.0)


def test_class_folder_png(png_folder):
    recs = load_records(png_folder)
    assert detect_kind(png_folder) == "class_folder"
    assert sorted((Path(r.path).name, r.label) for r in recs) == [
        ("img00.png", "a"), ("img01.png", "a"), ("img02.png", "a"),
        ("img10.png", "b"), ("img11.png", "b"), ("img12.png", "b")]
    assert {r.patient for r in recs if Path(r.path).stem == "img11"} == {safe_key("img11")}
    assert {r.kind for r in recs} == {"image"}


def test_class_folder_with_dicom_files(dicom_folder, tmp_path):
    root = tmp_path / "cls"
    shutil.copytree(dicom_folder / "case_000", root / "normal" / "c0")
    shutil.copytree(dicom_folder / "case_002", root / "lesion" / "c2")
    recs = load_records(root)
    assert sorted({(r.label, r.patient) for r in recs}) == sorted(
        [("normal", safe_key("PID-SECRET-0")), ("lesion", safe_key("PID-SECRET-2"))])


def test_manifest_with_patient_ids_hashed(png_folder, tmp_path):
    m = write_csv(tmp_path / "manifest.csv", ["path", "label", "patient_id"],
                  [[str(png_folder / "a" / "img00.png"), "a", "MRN-77"],
                   [str(png_folder / "b" / "img10.png"), "b", "MRN-77"]])
    recs = load_records(m)
    assert [r.patient for r in recs] == [safe_key("MRN-77")] * 2
    assert not any("MRN" in str(v) for r in recs for v in r.to_dict().values())


def test_missing_files_listed_with_count(png_folder):
    m = write_csv(png_folder / "manifest.csv", ["path", "label"],
                  [["a/img00.png", "a"]] + [[f"gone{i}.png", "b"] for i in range(7)])
    with pytest.raises(DataError) as e:
        load_records(m)
    msg = str(e.value)
    assert "manifest.csv" in msg and "7 file(s)" in msg and "gone0.png" in msg
    assert "gone6.png" not in msg  # only the first few are listed


def test_missing_columns(tmp_path):
    m = write_csv(tmp_path / "bad.csv", ["file", "class"], [["x.png", "a"]])
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) path, label"):
        load_records(m)


def test_single_class_rejected(png_folder):
    shutil.rmtree(png_folder / "b")
    with pytest.raises(DataError, match=r"only 1 class \(a\)"):
        load_records(png_folder)


def test_no_labelled_images(png_folder):
    m = write_csv(png_folder / "m.csv", ["path", "label"], [["a/img00.png", ""]])
    with pytest.raises(DataError, match="no labelled images"):
        load_records(m)


def test_empty_folder_and_unknown_kind(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_records(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"notes\.txt: not a dataset source"):
        load_records(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope")


def test_not_dicom_named_in_csv(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    m = write_csv(tmp_path / "m.csv", ["path", "label"], [["junk.dcm", "a"]])
    with pytest.raises(DataError, match=r"junk\.dcm: not a readable DICOM"):
        load_records(m)


def test_workspace_source(dicom_folder, tmp_path):
    ws_mod = pytest.importorskip("vitdesk.data.workspace")
    from vitdesk.imaging.scan import scan_path

    ws = ws_mod.Workspace.open(tmp_path / "ws", create=True)
    ws.import_scan(scan_path(dicom_folder))
    for cls in ("normal", "lesion"):
        ws.add_class(cls)
    series = {s.patient_key: s for s in ws.series()}
    assert len(series) == 4
    ws.set_series_label(series[safe_key("PID-SECRET-0")].key, "normal")
    ws.set_series_label(series[safe_key("PID-SECRET-1")].key, "normal")
    s2 = series[safe_key("PID-SECRET-2")]
    ws.set_slice_label(s2.key, 2, "lesion")  # one slice only; patient 3 stays unlabelled
    ws.close()
    assert detect_kind(tmp_path / "ws") == "workspace"
    # for training, one lesion slice beside six normal ones is refused (label checks)
    with pytest.raises(DataError, match=r"ws: class\(es\) 'lesion' \(1\) have fewer than 5"):
        load_records(tmp_path / "ws")
    recs = load_records(tmp_path / "ws", min_classes=1)  # an evaluation set may be small
    assert len(recs) == 7
    lesion = [r for r in recs if r.label == "lesion"]
    assert len(lesion) == 1 and lesion[0].path == os.path.abspath(s2.files[2])
    assert lesion[0].patient == safe_key("PID-SECRET-2") and lesion[0].series == s2.key
    assert {(r.sex, r.age) for r in recs if r.patient == safe_key("PID-SECRET-1")} == {
        ("M", 41.0)}
    # unlabelled use (pretraining) gets every slice of every series, labels kept
    every = load_records(tmp_path / "ws", require_labels=False)
    assert len(every) == sum(len(s.files) for s in series.values())
    assert sum(r.label is not None for r in every) == len(recs)


def test_conflicting_duplicate_rows(png_folder):
    m = write_csv(png_folder / "m.csv", ["path", "label"],
                  [["a/img00.png", "a"], ["b/img10.png", "b"], ["a/img00.png", "a"]])
    assert len(load_records(m)) == 2  # exact repeat dropped
    write_csv(m, ["path", "label"], [["a/img00.png", "a"], ["a/img00.png", "b"]])
    with pytest.raises(DataError, match=r"img00\.png \(frame 0\) is labelled both 'a' and 'b'"):
        load_records(m)


def test_light_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import vitdesk.data.sources, vitdesk.data.splits, vitdesk.data.records, "
            "vitdesk.data.augment, sys; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_synthetic_sample_loads_with_sex_and_age(tmp_path):
    synthetic = pytest.importorskip("vitdesk.imaging.synthetic")
    info = synthetic.generate_sample(tmp_path / "sample", patients=4, slices=6, size=32, seed=0)
    recs = load_records(info.out_dir)
    assert len(recs) == info.n_slices_total == 24
    assert sum(r.label == "lesion" for r in recs) == info.n_positive_slices
    assert len({r.patient for r in recs}) == 4
    assert all(r.sex in ("M", "F") and r.age is not None and r.age > 0 for r in recs)
    # slices of each series in volume order: InstanceNumber rises with position here
    first = [r for r in recs if r.series == recs[0].series]
    inst = [int(pydicom.dcmread(r.path, stop_before_pixels=True).InstanceNumber) for r in first]
    assert inst == sorted(inst)


def test_unlabelled_use_reads_any_folder_of_images(png_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, src in enumerate(sorted(Path(png_folder).rglob("*.png"))):
        shutil.copy(src, flat / f"x{i}.png")
    with pytest.raises(DataError, match="no labels"):
        load_records(flat)
    recs = load_records(flat, require_labels=False)
    assert len(recs) == 6 and all(r.label is None for r in recs)
    # class folders too: every image, whatever the folder names
    assert len(load_records(png_folder, require_labels=False)) == 6


def test_a_run_folders_data_ref_loads_here_and_is_explained_elsewhere(png_folder, tmp_path,
                                                                       monkeypatch):
    from vitdesk.data.source_refs import remember, same_source, source_ref
    from vitdesk.imaging import deid

    ref = remember(png_folder)  # what a run folder's config.toml holds
    assert ref.startswith("ref:") and "png" not in ref and ref == source_ref(png_folder)
    assert same_source(ref, png_folder) and same_source(str(png_folder) + "/", ref)
    assert not same_source(ref, tmp_path)
    assert sorted(r.path for r in load_records(ref)) == sorted(
        r.path for r in load_records(png_folder))
    # another installation (another secret, no registry): one line saying what to do
    monkeypatch.setenv(deid.SECRET_ENV, str(tmp_path / "elsewhere" / "secret.key"))
    with pytest.raises(DataError, match=r"recorded only as a fingerprint \(ref:.*give its "
                                        r"path again"):
        load_records(ref)
