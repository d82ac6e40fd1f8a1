"""Patient-level splits: no leak, deterministic, stratified, small datasets, JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from vitdesk.data.records import SliceRecord
from vitdesk.data.source_refs import source_ref
from vitdesk.data.splits import (
    check_no_leak,
    fold_split,
    kfold_patients,
    load_split,
    parse_fold,
    save_split,
    split_by_patient,
    split_root,
)
from vitdesk.errors import DataError


def make_records(n_a: int, n_b: int, slices: int = 3, root: str = "/data") -> list[SliceRecord]:
    recs = []
    for i in range(n_a + n_b):
        label = "a" if i < n_a else "b"
        for k in range(slices):
            recs.append(SliceRecord(f"{root}/p{i:03d}/s{k}.dcm", 0, label, f"key{i:03d}",
                                    f"ser{i:03d}", "F", 50.0))
    return recs


def patients(split):
    return {r.patient for r in split}


def test_no_patient_in_two_splits_and_all_kept():
    recs = make_records(30, 10)
    s = split_by_patient(recs, seed=3)
    tr, va, te = patients(s["train"]), patients(s["val"]), patients(s["test"])
    assert not (tr & va or tr & te or va & te)
    assert sum(len(v) for v in s.values()) == len(recs)
    assert (len(tr), len(va), len(te)) == (28, 6, 6)  # 0.7/0.15/0.15 of 40 patients
    check_no_leak(s)


def test_deterministic_and_seed_dependent():
    recs = make_records(20, 20)
    a = split_by_patient(recs, seed=1)
    b = split_by_patient(list(reversed(recs)), seed=1)
    assert patients(a["train"]) == patients(b["train"])  # input order does not matter
    c = split_by_patient(recs, seed=2)
    assert patients(a["test"]) != patients(c["test"])


def test_stratified_by_majority_label():
    recs = make_records(40, 20)
    s = split_by_patient(recs, seed=0)
    for name, n_a, n_b in (("train", 28, 14), ("val", 6, 3), ("test", 6, 3)):
        c = Counter(r.label for r in s[name])
        assert (c["a"] // 3, c["b"] // 3) == (n_a, n_b), name


def test_four_patients_every_class_in_train_and_every_split_used():
    recs = make_records(2, 2)
    for seed in range(10):
        s = split_by_patient(recs, seed=seed)
        assert {r.label for r in s["train"]} == {"a", "b"}
        assert [len(patients(s[k])) for k in ("train", "val", "test")] == [2, 1, 1]


def test_rare_class_reaches_train():
    recs = make_records(10, 1)
    for seed in range(10):
        assert "b" in {r.label for r in split_by_patient(recs, seed=seed)["train"]}


def test_leak_check_raises():
    recs = make_records(2, 2)
    s = {"train": recs[:4], "val": recs[3:6], "test": []}
    with pytest.raises(DataError, match="patient key001 is in both the train and val"):
        check_no_leak(s)


def test_bad_fractions():
    with pytest.raises(DataError, match="fractions"):
        split_by_patient(make_records(2, 2), fractions=(0.5, -0.1, 0.6))


def touch_all(recs: list[SliceRecord]) -> None:
    for r in recs:
        Path(r.path).parent.mkdir(parents=True, exist_ok=True)
        Path(r.path).touch()


def test_save_load_roundtrip_keyed_files_and_rebased(tmp_path):
    recs = make_records(5, 5, root=str(tmp_path / "data" / "DOE^JANE"))
    recs += make_records(1, 1, root=str(tmp_path / "data" / "ROE^RICHARD"))
    touch_all(recs)
    s = split_by_patient(recs, seed=0)
    path = save_split(s, tmp_path / "run" / "split.json")
    doc = json.loads(path.read_text())
    text = path.read_text()
    # the root is a keyed fingerprint and files are keyed hashes of their path below it:
    # real exports name subfolders for the patient
    assert "root" not in doc and str(tmp_path) not in text
    assert "DOE" not in text and "ROE" not in text and "s0.dcm" not in text
    assert doc["root_ref"] == source_ref(tmp_path / "data")
    assert all("path" not in d and d["file"].startswith("f")
               for rows in doc["splits"].values() for d in rows)
    assert load_split(path) == s  # this installation remembers the root
    moved_root = tmp_path / "moved"
    (tmp_path / "data").rename(moved_root)
    moved = load_split(path, data_root=moved_root)
    assert moved["val"][0].path.startswith(str(moved_root))
    assert {r.path for r in moved["train"]} == {
        r.path.replace(str(tmp_path / "data"), str(moved_root)) for r in s["train"]}
    next(moved_root.rglob("s1.dcm")).unlink()
    with pytest.raises(DataError, match="1 of the split's .* files are not under"):
        load_split(path, data_root=moved_root)


def test_version2_relative_paths_still_load(tmp_path):
    recs = make_records(2, 2, root=str(tmp_path / "data"))
    doc = {"version": 2, "root_ref": source_ref(tmp_path / "data"),
           "splits": {"train": [{**r.to_dict(), "path": r.path.split("/data/")[1]}
                                for r in recs]}}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(doc))
    assert load_split(path, data_root="/elsewhere")["train"][0].path == "/elsewhere/p000/s0.dcm"


def test_split_root_found_from_the_data_source_when_not_remembered(tmp_path, monkeypatch):
    from vitdesk.imaging import deid

    data = tmp_path / "DOE^JOHN_12345678"
    (data / "p0").mkdir(parents=True)
    recs = make_records(5, 5, root=str(data))
    touch_all(recs)
    s = split_by_patient(recs, seed=0)
    path = save_split(s, tmp_path / "run" / "split.json")
    assert "DOE^JOHN" not in path.read_text()
    # another installation that shares this one's secret (copied, as keyed file and
    # patient keys need) but has no registry entry for the data folder
    other = tmp_path / "other" / "secret.key"
    other.parent.mkdir()
    other.write_bytes(deid.secret_path().read_bytes())
    monkeypatch.setenv(deid.SECRET_ENV, str(other))
    with pytest.raises(DataError, match="give the run's data source"):
        load_split(path)
    assert split_root(path, data_src=data / "labels.csv") == str(data)  # the CSV's folder
    assert split_root(path, data_src=data / "p0") == str(data)  # a parent
    assert split_root(path, data_src=tmp_path) == str(data)  # a subfolder
    assert load_split(path, data_src=data) == s
    with pytest.raises(DataError, match="not known on this machine"):
        load_split(path, data_src=tmp_path / "run")


def test_version1_split_with_absolute_root_still_loads(tmp_path):
    recs = make_records(3, 3, root=str(tmp_path / "d"))
    s = split_by_patient(recs, seed=0)
    rows = {n: [{**r.to_dict(), "path": os.path.relpath(r.path, tmp_path / "d")} for r in v]
            for n, v in s.items()}
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"version": 1, "root": str(tmp_path / "d"), "splits": rows}))
    assert load_split(path) == s


def test_mixed_patients_stratified_by_rare_label():
    # 10 patients with only "normal" slices, 10 with 8 normal + 2 lesion slices: by
    # majority all are "normal"; the lesion patients must still be spread 7/1.5/1.5.
    recs = []
    for i in range(20):
        for k in range(10):
            label = "lesion" if i >= 10 and k < 2 else "normal"
            recs.append(SliceRecord(f"/d/p{i}/s{k}.dcm", 0, label, f"k{i:02d}"))
    for seed in range(5):
        s = split_by_patient(recs, seed=seed)
        with_lesion = [len({r.patient for r in s[n] if r.label == "lesion"})
                       for n in ("train", "val", "test")]
        assert with_lesion[0] == 7 and min(with_lesion[1:]) >= 1, with_lesion


# ---- k-fold cross-validation ------------------------------------------------------------


def test_kfold_partitions_patients_stratified_and_balanced():
    recs = make_records(13, 7)  # 20 patients: 13 of class a, 7 of class b
    strata = {r.patient: r.label for r in recs}
    for seed in range(5):
        folds = kfold_patients(recs, 5, seed=seed)
        assert len(folds) == 5
        flat = [p for f in folds for p in f]
        assert sorted(flat) == sorted(strata) and len(set(flat)) == len(flat)  # a partition
        assert [len(f) for f in folds] == [4, 4, 4, 4, 4]
        for cls, n in (("a", 13), ("b", 7)):
            per_fold = [sum(strata[p] == cls for p in f) for f in folds]
            assert sum(per_fold) == n and max(per_fold) - min(per_fold) <= 1, (cls, per_fold)


def test_kfold_deterministic_by_seed_and_input_order():
    recs = make_records(12, 8)
    a = kfold_patients(recs, 4, seed=7)
    assert kfold_patients(list(reversed(recs)), 4, seed=7) == a
    assert kfold_patients(recs, 4, seed=8) != a


def test_fold_split_tests_every_patient_once_and_carves_validation_from_the_rest():
    recs = make_records(14, 6)
    folds = kfold_patients(recs, 5, seed=2)
    tested: list[str] = []
    for i in range(1, 6):
        s = fold_split(recs, i, 5, seed=2)
        check_no_leak(s)
        tr, va, te = patients(s["train"]), patients(s["val"]), patients(s["test"])
        assert te == set(folds[i - 1])
        assert tr | va | te == {r.patient for r in recs} and not (tr & va)
        # the train:val ratio of the default fractions (0.7:0.15) on the 16 other patients
        assert (len(tr), len(va)) == (13, 3)
        assert {r.label for r in s["train"]} == {"a", "b"}
        assert sum(len(v) for v in s.values()) == len(recs)
        tested += sorted(te)
    assert sorted(tested) == sorted({r.patient for r in recs})  # each tested exactly once
    assert fold_split(recs, 3, 5, seed=2) == fold_split(recs, 3, 5, seed=2)


def test_kfold_needs_as_many_patients_as_folds_and_a_valid_fold():
    with pytest.raises(DataError, match="--folds 5 needs at least 5 patients"):
        kfold_patients(make_records(2, 2), 5)
    with pytest.raises(DataError, match="2 or more"):
        kfold_patients(make_records(2, 2), 1)
    assert parse_fold("2/5") == (2, 5)
    for bad in ("6/5", "0/5", "1/1", "two/5", "3"):
        with pytest.raises(DataError, match="data.fold"):
            parse_fold(bad)
