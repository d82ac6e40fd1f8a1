"""`vitdesk suggest`: the table, the CSV, no paths in either, one-line user errors."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clisuggest")
    run = tiny_run(tiny_sample(root / "sample"), root / "run")
    return run, tiny_sample(root / "pool", patients=9)


def test_suggest_prints_a_table_and_writes_the_csv(setup, tmp_path, capsys):
    run, pool = setup
    out = tmp_path / "next.csv"
    rc = main(["suggest", str(run), "--data", str(pool), "--n", "5", "--seed", "1",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[:5] == ["rank", "series", "description", "slice", "entropy"]
    assert [ln.split()[0] for ln in lines[1:6]] == ["1", "2", "3", "4", "5"]
    assert "most uncertain" in lines[1] and "candidate slices scored; left out:" in lines[6]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(r["description"] == "Synthetic axial chest/abdomen" for r in rows)
    assert all(0 <= int(r["slice"]) < 6 and float(r["uncertainty"]) > 0 for r in rows)
    # keys, descriptions and indices only: no data path, no identity
    text = (captured.out + captured.err + out.read_text()).lower()
    assert str(pool).lower() not in text and ".dcm" not in text
    import pydicom

    for f in pool.rglob("IM_0001.dcm"):  # the synthetic identity of every patient
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for value in (str(ds.PatientName).split("^")[0], ds.PatientID, ds.AccessionNumber,
                      ds.StudyDate, ds.PatientBirthDate):
            assert str(value).lower() not in text, value
    # same seed, same table
    assert main(["suggest", str(run), "--data", str(pool), "--n", "5", "--seed", "1",
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[:6] == lines[:6]


def test_series_mode_lists_slices(setup, capsys):
    run, pool = setup
    assert main(["suggest", str(run), "--data", str(pool), "--n", "2", "--by", "series",
                 "--uncertainty", "margin", "--no-tta", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[4] == "margin"
    assert all(len(ln.split()[5].split("|")) == 3 for ln in lines[1:3])


def test_user_errors_exit_2_with_one_line(setup, tmp_path, capsys):
    run, pool = setup
    folder = tmp_path / "adir"
    folder.mkdir()
    assert main(["suggest", str(run), "--data", str(pool), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "is a folder" in err[0]
    assert main(["suggest", str(run), "--data", str(pool), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    assert main(["suggest", str(run), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "Traceback" not in err[0]
    # the run's own data: everything was trained on or is a test patient
    assert main(["suggest", str(run), "--data", str(run.parent / "sample")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("vitdesk:")]
    assert len(err) == 1 and "no unlabelled slices left to suggest" in err[0]
    assert "12 test patients, 24 trained on" in err[0]
