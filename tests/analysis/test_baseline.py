"""Transfer effectiveness against a baseline run: paired on the same slices, CLI, report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.evalrun import tiny_cnn_run, tiny_run, tiny_sample
from vitdesk.analysis import metrics as M
from vitdesk.analysis.baseline import compare_with_baseline
from vitdesk.cli import main
from vitdesk.config import RunConfig, save_config
from vitdesk.errors import DataError


def _fake_run(folder, model: str):
    folder.mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.name, cfg.weights.pretrained = model, "none"
    save_config(cfg, folder / "config.toml")
    return folder


def _fake_eval(labels, probs, patients, keys, classes=("normal", "lesion")):
    ev = M.evaluate(labels, probs, list(classes), patients, n_boot=50, seed=0)
    return SimpleNamespace(classes=list(classes), labels=labels, probs=probs,
                           patients=patients, keys=np.asarray(keys), metrics=ev)


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    labels = np.arange(n) % 2
    patients = np.asarray([f"p{i // 3}" for i in range(n)])
    keys = [f"k{i}" for i in range(n)]
    good = np.where(rng.random(n) < 0.9, labels, 1 - labels)  # 90 % right
    weak = np.where(rng.random(n) < 0.6, labels, 1 - labels)  # 60 % right
    p_run = np.eye(2)[good] * 0.8 + 0.1
    p_base = np.eye(2)[weak] * 0.8 + 0.1
    run = _fake_run(tmp_path / "vit", "vit_test_tiny")
    base = _fake_run(tmp_path / "cnn", "cnn_test_tiny")
    ev = _fake_eval(labels, p_run, patients, keys)
    # the baseline scored the same slices in another order: pairing must follow the keys
    perm = rng.permutation(n)
    b = _fake_eval(labels[perm], p_base[perm], patients[perm], [keys[i] for i in perm])
    return ev, b, run, base, (good == labels).mean() - (weak == labels).mean()


def test_the_difference_is_paired_by_slice(pair):
    ev, b, run, base, expected = pair
    t = compare_with_baseline(ev, b, run, base, n_boot=200)
    d = t["paired"]["accuracy"]
    assert d["value"] == pytest.approx(expected) and d["lo"] < d["value"] < d["hi"]
    assert t["absolute_improvement"] == pytest.approx(expected)
    assert t["paired"]["auc"]["value"] > 0
    assert t["baseline_model"] == "cnn_test_tiny (weights: none)"
    assert t["n_slices"] == 60 and t["n_patients"] == 20
    # patients: scored from the paired slices, the baseline's put back in the run's order
    y, s_run, _ = M.aggregate_by_patient(ev.labels, ev.probs, ev.patients)
    idx = {k: i for i, k in enumerate(b.keys.tolist())}
    b_probs = b.probs[[idx[k] for k in ev.keys.tolist()]]
    _, s_base, _ = M.aggregate_by_patient(ev.labels, b_probs, ev.patients)
    assert t["paired"]["patient_auc"]["value"] == pytest.approx(
        M.roc_auc(y, s_run) - M.roc_auc(y, s_base))


def test_other_slices_or_classes_are_refused(pair):
    ev, b, run, base, _ = pair
    b.keys = np.asarray([f"x{i}" for i in range(len(b.keys))])
    with pytest.raises(DataError, match="other slices .0 of 60 shared"):
        compare_with_baseline(ev, b, run, base)
    b.keys, b.classes = ev.keys, ["a", "b"]
    with pytest.raises(DataError, match="has classes"):
        compare_with_baseline(ev, b, run, base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("baseline")
    data = tiny_sample(root / "sample")
    return data, tiny_run(data, root / "vit"), tiny_cnn_run(data, root / "cnn")


def test_report_with_a_cnn_baseline(runs, tmp_path, capsys):
    data, vit, cnn = runs
    out = tmp_path / "report"
    assert main(["report", str(vit), "--data", str(data), "--baseline", str(cnn),
                 "--out", str(out), "--device", "cpu"]) == 0
    t = json.loads((out / "metrics.json").read_text())["transfer"]
    split = json.loads((vit / "split.json").read_text())
    assert t["n_slices"] == len(split["splits"]["test"])
    assert t["baseline_model"].startswith("cnn_test_tiny")
    # the paired difference is exactly the two runs' accuracies apart on these slices
    assert t["paired"]["accuracy"]["value"] == pytest.approx(
        t["accuracy"] - t["baseline_accuracy"])
    printed = capsys.readouterr().out
    assert "minus the baseline cnn_test_tiny (weights: none)" in printed
    html = (out / "report.html").read_text()
    assert "Transfer effectiveness" in html and "Baseline run" in html
    assert "cnn_test_tiny (weights: none)" in html
    # a folder that is no run: one line, exit 2, nothing written
    bad = tmp_path / "bad"
    assert main(["report", str(vit), "--data", str(data), "--baseline", str(tmp_path),
                 "--out", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vitdesk: error: --baseline") and not bad.exists()


def test_evaluate_with_a_baseline_writes_the_paired_block(runs, tmp_path, capsys):
    data, vit, cnn = runs
    out = tmp_path / "ev"
    assert main(["evaluate", str(vit), "--data", str(data), "--baseline", str(cnn),
                 "--out", str(out), "--device", "cpu"]) == 0
    d = json.loads((out / "metrics.json").read_text())
    t = d["transfer"]
    assert t["n_slices"] == d["n_slices"]
    assert t["accuracy"] == pytest.approx(d["metrics"]["slice"]["metrics"]["accuracy"]["value"])
    assert "AUC" in capsys.readouterr().out
