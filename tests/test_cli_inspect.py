"""`vitdesk inspect`: safe one-line summaries, clean errors, exit codes, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.imaging.dcmfactory import PHI_STRINGS, ct_series
from vitdesk.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_inspect_prints_safe_lines(tmp_path, capsys):
    stored = np.zeros((4, 8, 6), np.int16)
    ct_series(tmp_path / "s", stored, positions=[0, 2, 4, 10],
              extra={"SeriesDescription": "chest"})
    (tmp_path / "s" / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    before = _listing(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    series = [ln for ln in lines if "'chest'" in ln]
    assert len(series) == 1
    assert "CT" in series[0] and "4 slices" in series[0] and "6x8" in series[0]
    assert "spacing 2.00x0.70x0.80" in series[0] and "sex F age 054Y" in series[0]
    assert any(ln.startswith("    warning: missing slices") for ln in lines)
    assert any(ln.startswith(str(tmp_path / "s" / "broken.dcm") + ": ") for ln in lines)
    assert not any(s in out for s in PHI_STRINGS + ("1.2.826",))
    assert _listing(tmp_path) == before  # inspect writes nothing


def test_inspect_errors_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing to see")
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("vitdesk: error:")]
    assert len(errors) == 1 and "no DICOM series" in errors[0] and str(tmp_path) in errors[0]
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_inspect_subprocess_unreadable_file(tmp_path):
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")
    proc = subprocess.run(
        [sys.executable, "-m", "vitdesk", "inspect", str(bad)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert f"{bad}: " in proc.stdout
    assert "Traceback" not in proc.stderr and "no series could be loaded" in proc.stderr
