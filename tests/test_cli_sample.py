"""``vitdesk sample``: writes a sample, exits 2 with one line on a bad --out."""

from __future__ import annotations

import csv
import subprocess
import sys

import pydicom

from vitdesk.cli import main


def test_sample_command_writes_files(tmp_path, capsys):
    out = tmp_path / "sample"
    rc = main(["sample", "--out", str(out), "--patients", "2", "--slices", "3", "--size", "32",
               "--seed", "4"])
    assert rc == 0
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert all((out / r["path"]).is_file() for r in rows)
    stdout = capsys.readouterr().out
    assert "2 synthetic CT studies" in stdout and "6 slices" in stdout


def test_existing_file_as_out_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("x")
    rc = main(["sample", "--out", str(target)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "taken.txt" in err[0] and "Traceback" not in err[0]
    assert target.read_text() == "x"


def test_bad_counts_exit_2(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path / "s"), "--patients", "0"]) == 2
    assert "--patients" in capsys.readouterr().err


def test_sample_command_imports_neither_torch_nor_qt(tmp_path):
    code = (
        "import sys; from vitdesk.cli import main; "
        f"rc = main(['sample', '--out', {str(tmp_path / 's')!r}, '--patients', '1', "
        "'--slices', '1', '--size', '16']); "
        "bad = [m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules]; "
        "print(rc, bad)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "0 []"


def test_scanner_flag_records_the_profile(tmp_path, capsys):
    out = tmp_path / "siteB"
    rc = main(["sample", "--out", str(out), "--patients", "1", "--slices", "2", "--size", "32",
               "--scanner", "B"])
    assert rc == 0
    assert "(scanner B)" in capsys.readouterr().out
    ds = pydicom.dcmread(next(out.rglob("*.dcm")))
    assert (ds.ManufacturerModelName, ds.ConvolutionKernel) == ("Synthetic CT B", "SHARP")
    assert float(ds.SliceThickness) == 1.0


def test_unknown_scanner_exits_2_with_one_line(tmp_path, capsys):
    rc = main(["sample", "--out", str(tmp_path / "s"), "--scanner", "Q"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scanner 'Q'" in err[0] and "A, B, C" in err[0]
    assert not (tmp_path / "s").exists()
