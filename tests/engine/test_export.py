"""Exported models (ONNX, TorchScript, int8) reproduce the run; the contract; no torch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from tests.pngdata import write_square_pngs
from vitdesk.engine.export import FP32_TOLERANCE, check_slices, export_run
from vitdesk.engine.export_contract import CONTRACT_FILE, INT8_FILE, MODEL_FILES, read_contract
from vitdesk.engine.exported_model import ExportedModel, softmax
from vitdesk.engine.run import load_run
from vitdesk.errors import ConfigError, DataError, LoadError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A vit_test_tiny run on the synthetic CT sample (its test split: 2 patients)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    return tiny_run(tiny_sample(root / "sample"), root / "run")


@pytest.fixture(scope="module")
def square_run(tmp_path_factory):
    """A run that is well above chance: bright squares vs noise (PNG class folders)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("squares")
    data = write_square_pngs(root / "pngs", per_class=40)
    return tiny_run(data, root / "run", epochs=6)


def _test_x(run_dir: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's test slices, preprocessed the way training sees them (SliceDataset)."""
    from vitdesk.data.dataset import SliceDataset
    from vitdesk.data.splits import load_split

    lr = load_run(run_dir, "cpu")
    recs = load_split(run_dir / "split.json", data_src=data)["test"]
    ds = SliceDataset(recs, lr.classes, lr.window, lr.img_size, lr.mean, lr.std, cache=False)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        p = torch.softmax(lr.model(x), -1).numpy()
    return x.numpy(), p


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_equals_the_run_on_its_test_slices(run, tmp_path, fmt):
    data = run.parent / "sample"
    res = export_run(run, fmt, tmp_path / fmt, data_src=data)
    assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == sorted(
        [CONTRACT_FILE, MODEL_FILES[fmt]])
    x, p_torch = _test_x(run, data)
    assert len(x) == len(json.loads((run / "split.json").read_text())["splits"]["test"]) == 12
    m = ExportedModel(tmp_path / fmt)
    p_export = m.probs(x, calibrated=False)
    assert np.abs(p_export - p_torch).max() <= FP32_TOLERANCE
    # the batch axis is dynamic: one slice at a time gives the same numbers
    one = np.concatenate([m.probs(x[i:i + 1], calibrated=False) for i in range(3)])
    assert np.abs(one - p_torch[:3]).max() <= FP32_TOLERANCE
    c = res.contract
    assert c["check"]["on"] == "test slices" and c["check"]["n"] == 12
    assert c["check"]["max_abs_diff"] <= FP32_TOLERANCE
    # calibrated probabilities use the run's temperature, as a run's predict does
    from vitdesk.engine.calibration import apply_temperature, read_calibration

    t = read_calibration(run).temperature
    assert c["calibration"]["temperature"] == pytest.approx(t)
    assert np.allclose(m.probs(x), apply_temperature(p_torch, t), atol=FP32_TOLERANCE)


def test_contract_holds_the_preprocessing_and_no_path(run, tmp_path):
    out = tmp_path / "exp"
    export_run(run, "onnx", out, data_src=run.parent / "sample")
    text = (out / CONTRACT_FILE).read_text()
    c = read_contract(out)
    lr = load_run(run, "cpu")
    pre = c["preprocessing"]
    assert c["classes"] == lr.classes == ["lesion", "normal"]
    assert pre["img_size"] == 32 and pre["window"]["windows"] == [[400.0, 40.0]]
    assert pre["window"]["label"] == "soft_tissue"
    assert pre["mean"] == pytest.approx(lr.mean) and pre["std"] == pytest.approx(lr.std)
    assert "pad_top = (S - H) // 2" in pre["letterbox"]["pad"]
    assert c["model"] == {"name": "vit_test_tiny", "pooling": "avg",
                          "parameters": sum(p.numel() for p in lr.model.parameters())}
    assert c["data_fingerprint"].startswith("ref:")
    assert c["versions"]["vitdesk"] and c["versions"]["opset"] == 17
    assert "Research use only" in c["research_use"]
    conf = c["conformal_calibration"]
    assert conf["n"] == len(conf["labels"]) == len(conf["probs"]) > 0
    import hashlib

    digest = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert c["sha256"]["model.onnx"] == digest
    # no paths: neither the run's, the data's nor the export's folder
    for p in (run, run.parent, out, tmp_path):
        assert str(p) not in text
    assert "/" not in "".join(str(v) for v in (c["model_file"], c["data_fingerprint"]))


def test_int8_accuracy_within_one_point_of_fp32(square_run, tmp_path):
    res = export_run(square_run, "onnx", tmp_path / "q", int8=True)
    q = res.contract["int8"]
    assert q["on"] == "test slices" and q["n"] >= 20
    assert q["accuracy_fp32"] >= 0.85  # chance is 0.5
    assert q["accuracy_int8"] >= q["accuracy_fp32"] - 0.01
    # measured again here, independently of the exporter's own numbers
    lr = load_run(square_run, "cpu")
    x, y, on = check_slices(lr)
    assert on == "test slices" and y is not None
    acc = {prec: float((ExportedModel(tmp_path / "q", prec).probs(x).argmax(1) == y).mean())
           for prec in ("fp32", "int8")}
    assert acc["fp32"] == pytest.approx(q["accuracy_fp32"])
    assert acc["int8"] >= acc["fp32"] - 0.01
    assert ExportedModel(tmp_path / "q").precision == "int8"  # auto picks the kept int8
    assert (tmp_path / "q" / INT8_FILE).stat().st_size < (tmp_path / "q" / "model.onnx"
                                                           ).stat().st_size * 0.7


def test_exported_predict_matches_run_predict_and_imports_no_torch(run, tmp_path):
    from vitdesk.cli import main

    case = run.parent / "sample" / "case_002" / "series_1"
    exp = tmp_path / "exp"
    export_run(run, "onnx", exp, data_src=run.parent / "sample")
    assert main(["predict", str(run), str(case), "--out", str(tmp_path / "run.csv"),
                 "--device", "cpu"]) == 0
    code = ("import sys\nfrom vitdesk.cli import main\n"
            f"rc = main(['predict', {str(exp)!r}, {str(case)!r}, '--out', "
            f"{str(tmp_path / 'exp.csv')!r}])\n"
            "print('RC', rc, 'TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert "RC 0 TORCH False" in out.stdout, out.stderr[-2000:]
    a = list(csv.DictReader((tmp_path / "run.csv").open()))
    b = list(csv.DictReader((tmp_path / "exp.csv").open()))
    assert list(a[0]) == list(b[0]) == ["key", "slice", "p_lesion", "p_normal", "predicted",
                                        "uncertainty", "set"]
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b, strict=True):
        assert (ra["key"], ra["slice"]) == (rb["key"], rb["slice"])
        for col in ("p_lesion", "p_normal"):
            assert float(ra[col]) == pytest.approx(float(rb[col]), abs=2e-6)
        assert ra["predicted"] == rb["predicted"] and ra["set"] == rb["set"] != ""


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    with pytest.raises(ConfigError, match="use onnx or torchscript"):
        export_run(run, "tflite", tmp_path / "x")
    with pytest.raises(ConfigError, match="--format onnx --int8"):
        export_run(run, "torchscript", tmp_path / "x", int8=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_run(run, "onnx", tmp_path / "file")
    exp = tmp_path / "exp"
    export_run(run, "onnx", exp, data_src=run.parent / "sample")
    with pytest.raises(LoadError, match="int8"):
        ExportedModel(exp, "int8")
    (exp / "model.onnx").unlink()
    with pytest.raises(LoadError, match="model file missing"):
        ExportedModel(exp)
    (exp / CONTRACT_FILE).write_text("{not json")
    with pytest.raises(LoadError, match="export the run again"):
        read_contract(exp)
    with pytest.raises(LoadError, match="not a vitdesk export"):
        read_contract(tmp_path)


def test_without_the_data_the_export_is_checked_on_random_inputs(run, tmp_path, monkeypatch):
    from vitdesk.data import source_refs

    monkeypatch.setattr(source_refs, "find_root", lambda ref, data_src=None: None)
    res = export_run(run, "onnx", tmp_path / "r")
    assert res.contract["check"]["on"].startswith("random inputs")
    assert res.contract["check"]["max_abs_diff"] <= FP32_TOLERANCE
    assert softmax(np.zeros((1, 2))).tolist() == [[0.5, 0.5]]


def test_int8_that_loses_accuracy_is_refused(square_run, tmp_path, monkeypatch):
    import vitdesk.engine.export as ex

    real = ex._session_probs
    calls = []

    def worse(session, x, batch=32):  # the second session scored is the int8 one
        p = real(session, x, batch)
        calls.append(1)
        return p[:, ::-1].copy() if len(calls) == 2 else p

    monkeypatch.setattr(ex, "_session_probs", worse)
    with pytest.raises(DataError, match="export without --int8"):
        export_run(square_run, "onnx", tmp_path / "q", int8=True)
    assert not (tmp_path / "q" / INT8_FILE).exists()
