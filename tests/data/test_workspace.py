"""Workspace: SQLite index of series, labels and runs; crash-safe, thread-safe, no PHI."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from vitdesk.data.workspace import DB_NAME, SCHEMA_VERSION, Workspace
from vitdesk.errors import DataError


@dataclass(frozen=True)
class FakeSeries:
    """Follows the SeriesInfo contract of vitdesk.imaging.scan."""

    key: str
    patient_key: str
    study_key: str
    files: tuple[str, ...]
    modality: str = "CT"
    description: str = ""
    meta: dict = field(default_factory=dict)
    phi: dict = field(default_factory=dict)
    n_frames: int = 0


@dataclass(frozen=True)
class FakeError:
    path: str
    reason: str


@dataclass(frozen=True)
class FakeScan:
    series: list
    errors: list
    n_files: int = 0


def _fake_scan(root: Path) -> FakeScan:
    series = []
    for i, (sex, age) in enumerate([("F", "045Y"), ("M", "071Y")]):
        files = tuple(str(root / f"p{i}" / f"IM_{k}.dcm") for k in range(3))
        series.append(FakeSeries(
            key=f"series{i:06d}", patient_key=f"patient{i:05d}", study_key=f"study{i:06d}",
            files=files, description=f"axial {i}",
            meta={"PatientSex": sex, "PatientAge": age, "KVP": 120.0,
                  "PatientName": "Leaked^Name"},  # a PHI key that must be dropped
            phi={"PatientName": f"Secret^Person{i}", "PatientID": f"MRN-SECRET-{i}"},
            n_frames=3,
        ))
    return FakeScan(series, [FakeError(str(root / "bad.dcm"), "truncated file")])


def _db_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob(DB_NAME + "*"))


def test_create_and_reopen(tmp_path):
    folder = tmp_path / "ws"
    with Workspace.open(folder) as ws:
        assert ws.schema_version == SCHEMA_VERSION
        ws.add_class("normal")
    assert (folder / DB_NAME).is_file()
    conn = sqlite3.connect(folder / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.close()
    with Workspace.open(folder, create=False) as ws:
        assert ws.classes() == ["normal"]
        fk = ws._connect().execute("PRAGMA foreign_keys").fetchone()[0]
        assert fk == 1


def test_open_errors(tmp_path):
    with pytest.raises(DataError, match="not a vitdesk workspace"):
        Workspace.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        Workspace.open(afile)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a readable workspace"):
        Workspace.open(bad)
    newer = tmp_path / "newer"
    Workspace.open(newer).close()
    conn = sqlite3.connect(newer / DB_NAME)
    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="newer vitdesk"):
        Workspace.open(newer)


def test_import_scan_is_idempotent_and_stores_no_phi(tmp_path):
    scan = _fake_scan(tmp_path / "data")
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.import_scan(scan) == 2
        ws.add_class("lesion")
        ws.set_slice_label("series000001", 1, "lesion")
        assert ws.import_scan(scan) == 0  # same folder again: nothing new, labels kept
        series = ws.series()
        assert [s.key for s in series] == ["series000000", "series000001"]
        assert series[0].files == scan.series[0].files and series[0].n_slices == 3
        assert series[0].meta == {"PatientSex": "F", "PatientAge": "045Y", "KVP": 120.0}
        assert ws.labels_for_series("series000001") == {1: "lesion"}
        patients = ws.patients()
        assert [(p.key, p.sex, p.age, p.n_series) for p in patients] == [
            ("patient00000", "F", 45.0, 1), ("patient00001", "M", 71.0, 1)]
        assert ws.import_errors() == [(str(tmp_path / "data" / "bad.dcm"), "truncated file")]
        n = ws._connect().execute("SELECT COUNT(*) FROM series_files").fetchone()[0]
        assert n == 6
    raw = _db_bytes(tmp_path / "ws")
    for secret in (b"Secret^Person", b"MRN-SECRET", b"Leaked^Name"):
        assert secret not in raw


def test_labels_classes_and_counts(tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        ws.import_scan(_fake_scan(tmp_path / "data"))
        for name in ("normal", "lesion"):
            ws.add_class(name)
        ws.add_class("normal")  # no duplicate
        assert ws.classes() == ["normal", "lesion"]
        a, b = "series000000", "series000001"
        ws.set_series_label(a, "normal")
        ws.set_slice_label(a, 2, "lesion")  # a slice label overrides the series label
        assert ws.labels_for_series(a) == {0: "normal", 1: "normal", 2: "lesion"}
        ws.set_slice_range_label(b, 0, 2, "lesion")
        assert ws.labels_for_series(b) == {0: "lesion", 1: "lesion"}
        assert ws.counts_by_class() == {"normal": 2, "lesion": 3}
        assert ws.counts_by_group("sex") == {"F": {"normal": 2, "lesion": 1},
                                             "M": {"normal": 0, "lesion": 2}}
        assert ws.counts_by_group("age") == {"40-49": {"normal": 2, "lesion": 1},
                                             "70-79": {"normal": 0, "lesion": 2}}
        assert set(ws.counts_by_group("KVP")) == {"120.0"}
        with pytest.raises(DataError, match="identifies patients"):
            ws.counts_by_group("PatientID")
        with pytest.raises(DataError, match="unknown class 'tumour'"):
            ws.set_slice_label(b, 0, "tumour")
        with pytest.raises(DataError, match="outside series"):
            ws.set_slice_range_label(b, 2, 4, "lesion")
        with pytest.raises(DataError, match="not in workspace"):
            ws.set_series_label("nope", "normal")
        ws.clear_label(b, 0)
        assert ws.labels_for_series(b) == {1: "lesion"}
        ws.clear_label(a)
        assert ws.labels_for_series(a) == {2: "lesion"}
        ws.rename_class("lesion", "nodule")
        assert ws.labels_for_series(b) == {1: "nodule"} and ws.classes() == ["normal", "nodule"]
        assert ws.remove_class("nodule") == 2
        assert ws.labels_for_series(a) == {} and ws.counts_by_class() == {"normal": 0}


def test_runs(tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        rid = ws.add_run(tmp_path / "ws" / "runs" / "r1", model="vit_tiny", metrics={"acc": 0.5})
        ws.add_run(tmp_path / "elsewhere", model="deit")
        assert ws.add_run(tmp_path / "ws" / "runs" / "r1", model="vit_tiny",
                          metrics={"acc": 0.9}) == rid
        runs = ws.runs()
        assert [(r.path, r.model, r.metrics) for r in runs] == [
            (str(tmp_path / "ws" / "runs" / "r1"), "vit_tiny", {"acc": 0.9}),
            (str(tmp_path / "elsewhere"), "deit", {}),
        ]
    stored = sqlite3.connect(tmp_path / "ws" / DB_NAME).execute(
        "SELECT path FROM runs ORDER BY id").fetchall()
    assert stored[0][0] == "runs/r1"  # inside the workspace: relative, so it can move


def test_settings_roundtrip_and_survive_reopen(tmp_path):
    prefs = {"window": {"names": ["lung", "bone"], "clahe": False}, "seed": 7,
             "fractions": [0.7, 0.15, 0.15]}
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.get_setting("training_input") is None
        assert ws.get_setting("training_input", {"seed": 0}) == {"seed": 0}
        ws.set_setting("training_input", prefs)
        ws.set_setting("count", 3)
        ws.set_setting("count", 4)  # overwrite, not a second row
        ws.set_setting("pair", (1, "a"))
        assert ws.get_setting("training_input") == prefs
        assert ws.get_setting("pair") == [1, "a"]  # JSON has no tuples
    with Workspace.open(tmp_path / "ws", create=False) as ws:
        assert ws.get_setting("training_input") == prefs
        assert ws.get_setting("count") == 4
    rows = sqlite3.connect(tmp_path / "ws" / DB_NAME).execute(
        "SELECT COUNT(*) FROM settings WHERE key = 'count'").fetchone()
    assert rows == (1,)


def test_setting_that_is_not_json_is_refused(tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        ws.set_setting("seed", 1)
        with pytest.raises(DataError, match="setting 'seed' .*not JSON-serialisable"):
            ws.set_setting("seed", {1, 2})
        with pytest.raises(DataError, match="setting 'seed'"):
            ws.set_setting("seed", float("nan"))
        with pytest.raises(DataError, match="empty"):
            ws.set_setting(" ", 1)
        assert ws.get_setting("seed") == 1  # a refused value leaves the old one


def test_old_workspace_without_settings_table_opens_and_gains_it(tmp_path):
    folder = tmp_path / "ws"
    with Workspace.open(folder) as ws:
        ws.add_class("normal")
    # make it look like a schema-1 workspace, written before settings existed
    conn = sqlite3.connect(folder / DB_NAME)
    conn.execute("DROP TABLE settings")
    conn.execute("UPDATE schema_version SET version = 1")
    conn.commit()
    conn.close()
    with Workspace.open(folder, create=False) as ws:
        assert ws.schema_version == SCHEMA_VERSION == 2
        assert ws.classes() == ["normal"]
        assert ws.get_setting("seed", 5) == 5
        ws.set_setting("seed", 9)
    conn = sqlite3.connect(folder / DB_NAME)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    assert conn.execute("SELECT value_json FROM settings").fetchall() == [("9",)]
    conn.close()


def test_real_sample_labels_roundtrip(tmp_path):
    from vitdesk.imaging.scan import scan_path
    from vitdesk.imaging.synthetic import generate_sample

    info = generate_sample(tmp_path / "sample", patients=2, slices=4, size=16, seed=2)
    with open(info.labels_csv, newline="") as f:
        original = {(info.out_dir / r["path"]).resolve().as_posix(): r["label"]
                    for r in csv.DictReader(f)}
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.import_scan(scan_path(info.out_dir)) == 2
        result = ws.import_labels_csv(info.labels_csv)
        assert (result.slice_labels, result.series_labels, result.unmatched) == (8, 0, ())
        assert set(ws.classes()) == {"normal", "lesion"}
        for s in ws.series():
            got = ws.labels_for_series(s.key)
            assert got == {i: original[Path(f).resolve().as_posix()]
                           for i, f in enumerate(s.files)}
        assert ws.counts_by_class()["lesion"] == info.n_positive_slices
        out = tmp_path / "export" / "manifest.csv"
        assert ws.export_manifest(out) == 8
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        exported = {(out.parent / r["path"]).resolve().as_posix(): r["label"] for r in rows}
        assert exported == original
        assert {r["sex"] for r in rows} <= {"M", "F"} and all(r["age"] for r in rows)

        # a folder row labels the whole series
        folder_csv = tmp_path / "folders.csv"
        folder_csv.write_text("path,label\nsample/case_001/series_1,normal\nmissing/x.dcm,a\n")
        res = ws.import_labels_csv(folder_csv)
        assert res.series_labels == 1 and res.unmatched == ("missing/x.dcm",)
        key, idx = ws.slice_of_path(info.out_dir / "case_001" / "series_1" / "IM_0001.dcm")
        assert ws.get_series(key).label == "normal"
    raw = _db_bytes(tmp_path / "ws")
    for f in info.out_dir.glob("case_*/series_1/IM_0001.dcm"):
        ds = pydicom.dcmread(f)
        for secret in (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate,
                       ds.StudyInstanceUID, ds.InstitutionName):
            assert secret.encode() not in raw


_WRITER = """
import sys
from vitdesk.data.workspace import Workspace
ws = Workspace.open(sys.argv[1])
for i in range(100000):
    ws.set_slice_label("series000000", i % 3, ["normal", "lesion"][i % 2])
    ws.add_run(f"run{i}", model="m")
    print(i, flush=True)
"""


def test_labels_survive_sigkill(tmp_path):
    folder = tmp_path / "ws"
    with Workspace.open(folder) as ws:
        ws.import_scan(_fake_scan(tmp_path / "data"))
        ws.add_class("normal")
        ws.add_class("lesion")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(folder)],
                            stdout=subprocess.PIPE, text=True)
    try:
        acknowledged = -1
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 20:
                break
        os.kill(proc.pid, signal.SIGKILL)  # no close(), no cleanup: a crash
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with Workspace.open(folder, create=False) as ws:
        paths = {Path(r.path).name for r in ws.runs()}
        assert {f"run{i}" for i in range(acknowledged + 1)} <= paths
        labels = ws.labels_for_series("series000000")
        # every write acknowledged before the kill is there; the kill may have come
        # between the label write of step `last + 1` and its run write
        last = max(int(p[3:]) for p in paths)
        assert last >= acknowledged

        def state(n: int) -> dict[int, str]:
            return {i % 3: ["normal", "lesion"][i % 2] for i in range(n + 1)}

        assert labels in (state(last), state(last + 1))


def test_reader_and_writer_threads(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    try:
        ws.import_scan(_fake_scan(tmp_path / "data"))
        ws.add_class("normal")
        ws.add_class("lesion")
        errors: list[BaseException] = []
        done = threading.Event()

        def writer() -> None:
            try:
                for i in range(60):
                    ws.set_slice_label("series000001", i % 3, ["normal", "lesion"][i % 2])
                    ws.add_run(f"run{i}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                done.set()

        t = threading.Thread(target=writer)
        t.start()
        reads = 0
        while not done.is_set():
            labels = ws.labels_for_series("series000001")
            assert set(labels.values()) <= {"normal", "lesion"}
            ws.runs()
            reads += 1
        t.join()
        assert not errors and reads > 0
        assert len(ws.runs()) == 60
        assert ws.labels_for_series("series000001") == {0: "lesion", 1: "normal", 2: "lesion"}
    finally:
        ws.close()
    with pytest.raises(DataError, match="closed"):
        ws.classes()


def test_load_records_reads_a_workspace(tmp_path):
    from vitdesk.data.sources import load_records
    from vitdesk.imaging.scan import scan_path
    from vitdesk.imaging.synthetic import generate_sample

    info = generate_sample(tmp_path / "sample", patients=2, slices=3, size=16, seed=1)
    with Workspace.open(tmp_path / "ws") as ws:
        ws.import_scan(scan_path(info.out_dir))
        ws.import_labels_csv(info.labels_csv)
    records = load_records(tmp_path / "ws")
    assert len(records) == 6
    assert sum(r.label == "lesion" for r in records) == info.n_positive_slices
    assert len({r.patient for r in records}) == 2


def test_keys_made_with_another_secret_or_plain_hashes_are_refused(tmp_path, monkeypatch):
    from vitdesk.imaging import deid

    ours = deid.secret_path()
    folder = tmp_path / "ws"
    with Workspace.open(folder) as ws:
        ws.import_scan(_fake_scan(tmp_path / "data"))
        ws.add_class("normal")
        ws.set_series_label("series000000", "normal")
    stored = sqlite3.connect(folder / DB_NAME).execute(
        "SELECT value FROM info WHERE key = 'key_id'").fetchone()[0]
    assert stored == deid.key_id()
    with Workspace.open(folder, create=False) as ws:  # same installation: opens as before
        assert ws.series_label("series000000") == "normal"
    # another installation's secret: its keys would not match this one's scans
    monkeypatch.setenv(deid.SECRET_ENV, str(tmp_path / "other" / "secret.key"))
    with pytest.raises(DataError, match="another vitdesk installation.*VITDESK_SECRET_FILE"):
        Workspace.open(folder, create=False)
    monkeypatch.setenv(deid.SECRET_ENV, str(ours))
    # a workspace written before keyed hashes (no key_id, series present) is refused too
    conn = sqlite3.connect(folder / DB_NAME)
    conn.execute("DELETE FROM info WHERE key = 'key_id'")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="older vitdesk.*re-import"):
        Workspace.open(folder, create=False)
    # an empty workspace simply adopts the current key id
    empty = tmp_path / "empty"
    Workspace.open(empty).close()
    conn = sqlite3.connect(empty / DB_NAME)
    conn.execute("DELETE FROM info WHERE key = 'key_id'")
    conn.commit()
    conn.close()
    with Workspace.open(empty, create=False) as ws:
        assert ws._connect().execute(
            "SELECT value FROM info WHERE key = 'key_id'").fetchone()[0] == deid.key_id()
