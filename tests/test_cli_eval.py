"""`vitdesk evaluate`, `predict` and `report` end to end on a tiny run."""

from __future__ import annotations

import csv
import json

import cv2
import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clieval")
    return tiny_run(tiny_sample(root / "sample"), root / "run")


def test_evaluate_writes_metrics_and_prints_a_summary(run, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", str(run), "--data", str(run.parent / "sample"), "--tta",
                 "--out", str(out), "--device", "cpu"]) == 0
    d = json.loads((out / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert d["split"] == "test" and d["n_slices"] == len(split["splits"]["test"])
    assert d["tta"]["n_views"] == 6
    printed = capsys.readouterr().out
    assert "slice accuracy" in printed and "patient auc" in printed
    assert str(out / "metrics.json") in printed


def test_predict_csv_rows_equal_slices_and_overlays(run, tmp_path, capsys):
    case = run.parent / "sample" / "case_002" / "series_1"
    out, att = tmp_path / "p.csv", tmp_path / "att"
    assert main(["predict", str(run), str(case), "--out", str(out), "--attention", str(att),
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert set(rows[0]) == {"key", "slice", "p_lesion", "p_normal", "predicted", "uncertainty",
                            "set"}
    assert list(rows[0])[-2:] == ["uncertainty", "set"]  # the set column comes last
    for r in rows:
        assert float(r["p_lesion"]) + float(r["p_normal"]) == pytest.approx(1.0, abs=1e-5)
        # the conformal set: one class, both ("refer"), or "(empty)"
        assert r["set"] in ("normal", "lesion", "normal|lesion", "lesion|normal", "(empty)")
    pngs = sorted(att.glob("*.png"))
    assert len(pngs) == 12 and cv2.imread(str(pngs[0])).shape == (48, 48, 3)
    # without --out the CSV goes to stdout
    capsys.readouterr()
    assert main(["predict", str(run), str(case / "IM_0001.dcm"), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("key,slice,") and len(lines) == 2


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vitdesk: error:") and "not a vitdesk run folder" in last
