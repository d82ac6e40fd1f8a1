"""`vitdesk export` and `vitdesk predict EXPORTED_DIR` end to end; user errors exit 2."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cliexport")
    return tiny_run(tiny_sample(root / "sample"), root / "run")


def _last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("vitdesk: error:")
    return lines[-1]


def test_export_onnx_int8_then_predict(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "onnx", "--int8", "--data",
                 str(run.parent / "sample"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |p - p_torch|" in printed and "on 12 test slices" in printed
    assert "int8" in printed
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx",
                                                      "vitdesk-export.json"]
    c = json.loads((out / "vitdesk-export.json").read_text())
    assert c["int8"]["accuracy_int8"] >= c["int8"]["accuracy_fp32"] - 0.01
    case = run.parent / "sample" / "case_003" / "series_1"
    assert main(["predict", str(out), str(case), "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 6 and rows[0]["set"]
    for r in rows:
        assert float(r["p_lesion"]) + float(r["p_normal"]) == pytest.approx(1.0, abs=1e-5)
        assert r["predicted"] == max(("lesion", "normal"), key=lambda c: float(r[f"p_{c}"]))
    assert "(int8)" in capsys.readouterr().err
    # to stdout, one file
    assert main(["predict", str(out), str(case / "IM_0001.dcm"), "--alpha", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "key,slice,p_lesion,p_normal,predicted,uncertainty,set"
    assert len(lines) == 2


def test_export_torchscript(run, tmp_path, capsys):
    out = tmp_path / "ts"
    assert main(["export", str(run), "--format", "torchscript", "--data",
                 str(run.parent / "sample"), "--out", str(out)]) == 0
    assert (out / "model.ts.pt").stat().st_size > 10_000
    c = json.loads((out / "vitdesk-export.json").read_text())
    assert c["model_format"] == "torchscript" and c["check"]["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx"], "not found"),  # RUN replaced below by a missing folder
    (["--format", "tflite"], "use onnx or torchscript"),
    (["--format", "torchscript", "--int8"], "--format onnx --int8"),
])
def test_export_user_errors_exit_2(run, tmp_path, capsys, argv, message):
    target = str(tmp_path / "missing") if message == "not found" else str(run)
    assert main(["export", target, *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in _last_line(capsys)


def test_export_out_is_a_file_exit_2_before_any_work(run, tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["export", str(run), "--format", "onnx", "--out", str(f)]) == 2
    assert "is a file" in _last_line(capsys)
    blocker = tmp_path / "o" / "model.onnx"
    blocker.mkdir(parents=True)
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "is a folder where a file is written" in _last_line(capsys)
    assert not (tmp_path / "o" / "vitdesk-export.json").exists()
    # never into a run folder: its predict would read the export instead of the run
    assert main(["export", str(run), "--format", "onnx", "--out", str(run)]) == 2
    assert "is a run folder" in _last_line(capsys)
    assert not (run / "vitdesk-export.json").exists()


def test_predict_export_user_errors_exit_2(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    case = run.parent / "sample" / "case_003" / "series_1"
    assert main(["predict", str(out), str(case), "--tta"]) == 2
    assert "--tta needs the run's PyTorch model" in _last_line(capsys)
    assert main(["predict", str(out), str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in _last_line(capsys)
    assert main(["predict", str(out), str(case), "--out", str(tmp_path)]) == 2
    assert "is a folder" in _last_line(capsys)
    (out / "model.onnx").write_bytes(b"not a model")
    assert main(["predict", str(out), str(case)]) == 2
    assert "the model file differs from the one exported" in _last_line(capsys)
    contract = json.loads((out / "vitdesk-export.json").read_text())
    contract["sha256"] = {}  # an export without hashes: ONNX Runtime names the problem
    (out / "vitdesk-export.json").write_text(json.dumps(contract))
    assert main(["predict", str(out), str(case)]) == 2
    assert "ONNX Runtime cannot open the model" in _last_line(capsys)
    (out / "vitdesk-export.json").write_text("[]")
    assert main(["predict", str(out), str(case)]) == 2
    assert "export the run again" in _last_line(capsys)
