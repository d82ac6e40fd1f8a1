"""Outputs checked before work, and a full disk while writing them: one line, exit 2, no
temp file, earlier outputs intact."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import vitdesk.analysis.evaluation as evaluation
import vitdesk.commands._common as common
from vitdesk.cli import main
from vitdesk.errors import DiskFullError
from vitdesk.report.build import write_report
from vitdesk.report.data import ModelCard, ReportData


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("vitdesk: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the run is loaded or any evaluation/prediction starts."""
    def forbidden(*a, **kw):
        raise AssertionError("heavy work ran before the output paths were checked")

    for name in ("evaluate_run", "predict_input"):
        monkeypatch.setattr(evaluation, name, forbidden)
    monkeypatch.setattr(common, "load_run_for", forbidden)
    import vitdesk.engine.run as run

    monkeypatch.setattr(run, "load_run", forbidden)


@pytest.fixture
def paths(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    a_file = tmp_path / "existing.txt"
    a_file.write_text("keep me")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    return SimpleNamespace(run=run, file=a_file, dir=a_dir, data=tmp_path)


def test_out_paths_are_checked_before_any_work(paths, no_work, capsys):
    run, data = str(paths.run), str(paths.data)
    blocked = paths.dir / "blocked"
    (blocked / "report.pdf").mkdir(parents=True)
    cases = [
        (["evaluate", run, "--data", data, "--out", str(paths.file)], "--out", "is a file"),
        (["report", run, "--data", data, "--out", str(paths.file)], "--out", "is a file"),
        (["report", run, "--data", data, "--out", str(blocked)], "--out",
         "report.pdf is a folder"),
        (["evaluate", run, "--data", data, "--out", str(paths.file / "sub")], "--out",
         "is a file, not a folder"),
        (["predict", run, data, "--out", str(paths.dir)], "--out", "is a folder"),
        (["predict", run, data, "--attention", str(paths.file)], "--attention", "is a file"),
    ]
    for argv, flag, needle in cases:
        assert main(argv) == 2, argv
        line = _one_error_line(capsys)
        assert flag in line and needle in line, (argv, line)
    assert paths.file.read_text() == "keep me"
    # the default output folder (RUN/eval) is checked too
    (paths.run / "eval").write_text("not a folder")
    assert main(["evaluate", run, "--data", data]) == 2
    assert "eval is a file" in _one_error_line(capsys)


def _enospc_after_half(monkeypatch):
    """Every ``Path.write_bytes`` gets half its data onto the disk, then finds it full."""
    def write_bytes(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def _fake_evaluation(monkeypatch):
    ev = SimpleNamespace(to_dict=lambda: {"n_slices": 3, "auc": 0.75}, run_id="r1",
                         split="test", summary_rows=lambda: [("slice accuracy", "0.75")])
    monkeypatch.setattr(common, "load_run_for", lambda args: object())
    monkeypatch.setattr(evaluation, "evaluate_run", lambda *a, **kw: ev)


def test_evaluate_on_a_full_disk_keeps_the_previous_metrics(paths, monkeypatch, capsys):
    _fake_evaluation(monkeypatch)
    out = paths.dir / "ev"
    assert main(["evaluate", str(paths.run), "--data", str(paths.data), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["auc"] == 0.75
    capsys.readouterr()
    (out / "metrics.json").write_text('{"auc": 0.5}')  # an earlier evaluation
    _enospc_after_half(monkeypatch)
    assert main(["evaluate", str(paths.run), "--data", str(paths.data), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"disk full writing {out / 'metrics.json'}" in line and "needs about" in line
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # no metrics.json.tmp
    assert (out / "metrics.json").read_text() == '{"auc": 0.5}'


def test_predict_on_a_full_disk_leaves_no_empty_csv(paths, monkeypatch, capsys):
    row = SimpleNamespace()
    res = SimpleNamespace(errors=[], overlays=[], rows=[row, row],
                          csv_header=lambda: ["key", "slice", "p_a"],
                          csv_rows=lambda: [["k", "0", "0.25"], ["k", "1", "0.75"]])
    monkeypatch.setattr(common, "load_run_for", lambda args: object())
    monkeypatch.setattr(evaluation, "predict_input", lambda *a, **kw: res)
    csv_path = paths.dir / "p.csv"
    argv = ["predict", str(paths.run), str(paths.data), "--out", str(csv_path)]
    assert main(argv) == 0
    assert csv_path.read_text() == "key,slice,p_a\nk,0,0.25\nk,1,0.75\n"
    capsys.readouterr()
    _enospc_after_half(monkeypatch)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"disk full writing {csv_path}" in line
    assert sorted(p.name for p in paths.dir.iterdir()) == ["p.csv"]  # no temp file
    assert csv_path.read_text() == "key,slice,p_a\nk,0,0.25\nk,1,0.75\n"  # not emptied


def test_report_on_a_full_disk_keeps_the_previous_report(tmp_path, monkeypatch):
    import vitdesk.report.build as build

    data = ReportData(title="full disk", model=ModelCard(architecture="vit_test_tiny"))
    files = write_report(data, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"report.html", "report.pdf"}

    def pdf_on_full_disk(data, sections, path):
        Path(path).write_bytes(b"%PDF-1.4 half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(build, "render_pdf", pdf_on_full_disk)
    with pytest.raises(DiskFullError, match=f"disk full writing {files.pdf}.*needs about"):
        write_report(data, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file
