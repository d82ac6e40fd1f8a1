"""build_datasets, fingerprint, loaders with workers."""

from __future__ import annotations

import shutil

import pytest
import torch

from vitdesk.data.augment import AugmentConfig
from vitdesk.data.build import build_datasets, fingerprint, make_loader
from vitdesk.data.sources import load_records
from vitdesk.errors import DataError
from vitdesk.imaging.windowing import WindowSpec

from .conftest import write_csv

KW = dict(window=WindowSpec.parse("lung"), img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_build_from_dicom_folder(dicom_folder):
    b = build_datasets(dicom_folder, seed=0, **KW)
    assert b.classes == ["lesion", "normal"]
    assert [len(b.splits[k]) for k in ("train", "val", "test")] == [6, 3, 3]
    assert {r.label for r in b.splits["train"]} == {"lesion", "normal"}
    x, y = b.train[0]
    assert tuple(x.shape) == (3, 16, 16) and y in (0, 1)
    assert b.train.augment is None and b.val.augment is None
    again = build_datasets(dicom_folder, seed=0, **KW)
    assert again.fingerprint == b.fingerprint and len(b.fingerprint) == 16


def test_fingerprint_tracks_labels_and_files_not_location(dicom_folder, tmp_path):
    recs = load_records(dicom_folder)
    fp = fingerprint(recs)
    moved = shutil.copytree(dicom_folder, tmp_path / "elsewhere")
    assert fingerprint(load_records(moved)) == fp
    rows = (moved / "labels.csv").read_text().splitlines()
    rows[1] = rows[1].replace("normal", "lesion")
    (moved / "labels.csv").write_text("\n".join(rows) + "\n")
    assert fingerprint(load_records(moved)) != fp


def test_val_source_with_same_patient_is_a_leak(dicom_folder, tmp_path):
    rows = [["case_000/series_1/IM_0001.dcm", "normal"]]
    val = write_csv(dicom_folder / "val.csv", ["path", "label"], rows)
    with pytest.raises(DataError, match="is in both the train and val"):
        build_datasets(dicom_folder, val, **KW)


def test_configured_classes_must_cover_labels(dicom_folder):
    with pytest.raises(DataError, match="not in the configured classes"):
        build_datasets(dicom_folder, classes=["normal", "other"], **KW)


def test_loader_with_workers_matches_single_process(dicom_folder):
    b = build_datasets(dicom_folder, augment=AugmentConfig(hu_shift=30, seed=1), **KW)
    ref_loader, ref_s = make_loader(b.train, 4, shuffle=True, seed=5, num_workers=0)
    loader, s = make_loader(b.train, 4, shuffle=True, seed=5, num_workers=2)
    for epoch in (0, 1):
        ref_s.set_epoch(epoch)
        s.set_epoch(epoch)
        ref = torch.cat([x for x, _ in ref_loader])
        got = torch.cat([x for x, _ in loader])
        torch.testing.assert_close(got, ref)
        if epoch == 0:
            first = ref
    assert not torch.allclose(first, ref)  # a new epoch gives new augmentations
    del loader  # shuts the persistent workers down


def test_unreadable_dicom_in_class_folder_is_skipped_with_a_notice(tmp_path):
    from vitdesk.imaging.dicom_write import write_ct_series
    from vitdesk.jobs import Notice

    from .conftest import patient_hu

    for k, label in enumerate(("lesion", "normal")):
        write_ct_series(tmp_path / label / f"p{k}", patient_hu(100.0 * k),
                        spacing=(2.0, 1.0, 1.0), patient={"PatientID": f"P{k}"})
    bad = tmp_path / "lesion" / "broken.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")  # cut header
    events = []
    recs = load_records(tmp_path, listener=events.append)
    assert len(recs) == 6 and str(bad) not in {r.path for r in recs}
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any(n.startswith(f"skipped {bad}: ") for n in notes), notes
