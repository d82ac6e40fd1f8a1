"""A run folder + its evaluation -> ReportData and report files."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import torch
from pypdf import PdfReader

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.analysis.evaluation import evaluate_run
from vitdesk.engine.pretrain import CARD, CARD_FORMAT
from vitdesk.report.data import NOTICE
from vitdesk.report.from_run import (
    backbone_details,
    backbone_provenance,
    report_data_from_run,
    write_run_report,
)


@pytest.fixture(scope="module")
def run_and_eval(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fromrun")
    run = tiny_run(tiny_sample(root / "sample"), root / "run")
    ev = evaluate_run(run, n_boot=50, robustness_cases=6, attention_samples=1,
                      shift_train_cases=12, adversarial_eps=(0.0, 4 / 255), device="cpu")
    return run, ev


def test_report_data_holds_the_card_history_and_results(run_and_eval):
    run, ev = run_and_eval
    data = report_data_from_run(run, ev)
    card = data.model
    assert card.architecture == "vit_test_tiny" and card.img_size == 32
    assert card.backbone.startswith("random init") and card.weights_source == "none"
    split = json.loads((run / "split.json").read_text())["splits"]
    assert card.data_sizes == {k: len(v) for k, v in split.items()}
    assert card.patients["test"] == ev.n_patients
    assert card.classes == ["normal", "lesion"]
    lines = (run / "history.jsonl").read_text().splitlines()
    assert len(data.history) == len(lines) == 2
    assert data.evaluation is ev.metrics and len(data.attention) == 2
    assert data.subtitle == f"run {run.name}"


def test_mae_backbone_is_described_from_its_card(tmp_path):
    folder = tmp_path / "mae_enc"
    folder.mkdir()
    (folder / CARD).write_text(json.dumps({
        "format": CARD_FORMAT, "model": "vit_test_tiny", "img_size": 64, "epochs": 7,
        "mask_ratio": 0.75, "window_label": "soft_tissue", "loss_per_epoch": [1.0, 0.5],
        "data": {"n_images": 120, "n_patients": 10, "fingerprint": "abc123"}}))
    source, text = backbone_provenance(str(folder), str(folder / "encoder.safetensors"))
    assert source == "local MAE folder 'mae_enc'"
    assert text == "MAE, 7 epochs, 120 unlabelled slices (10 patients)"
    details = backbone_details(str(folder))
    assert "mask ratio 0.75" in details and "1.000 -> 0.500" in details
    assert str(tmp_path) not in source + text  # only the folder name, never the full path


def test_write_run_report_files_parse(run_and_eval, tmp_path):
    run, ev = run_and_eval
    files = write_run_report(run, ev, tmp_path / "rep")
    html = files.html.read_text(encoding="utf-8")

    class Collect(HTMLParser):
        text = ""

        def handle_data(self, data):
            self.text += data

    p = Collect()
    p.feed(html)
    p.close()
    assert NOTICE in p.text and "Model card" in p.text and "random init" in p.text
    reader = PdfReader(str(files.pdf))
    assert len(reader.pages) == files.pages >= 3
    assert all(NOTICE in page.extract_text() for page in reader.pages)


def test_report_shows_calibration_before_and_after(run_and_eval, tmp_path):
    from vitdesk.analysis.metrics import expected_calibration_error

    run, ev = run_and_eval
    data = report_data_from_run(run, ev)
    assert data.calibration is ev.calibration and data.calibration["fitted"]
    assert data.calibration["ece_after"] == pytest.approx(
        expected_calibration_error(ev.labels, ev.plain_probs), abs=1e-6)
    files = write_run_report(run, ev, tmp_path / "rep")
    html = files.html.read_text(encoding="utf-8")
    assert "Calibration (temperature scaling)" in html
    assert f"{ev.calibration['temperature']:.3f}" in html
    assert f"{ev.calibration['ece_before']:.3f}" in html
    assert f"{ev.calibration['ece_after']:.3f}" in html
    pdf = " ".join(p.extract_text() for p in PdfReader(str(files.pdf)).pages)
    assert "Slice ECE after" in pdf and "Temperature" in pdf


def test_report_shows_the_fairness_gap_intervals(run_and_eval, tmp_path):
    """The patient-bootstrap intervals of the gaps (once GUI-only) are in the report."""
    run, ev = run_and_eval
    files = write_run_report(run, ev, tmp_path / "gaps")
    html = files.html.read_text(encoding="utf-8")
    assert "Between groups (intervals: bootstrap of patients)" in html
    rep = ev.fairness[0]
    lo, hi = rep.gap_ci["accuracy_gap"]
    if lo == lo:  # finite: printed as lo–hi next to the gap
        assert f"{lo:.3f}–{hi:.3f}" in html
    # robustness curves say which slices their clean accuracy is of
    n_sub = ev.robustness[-1].n
    assert n_sub > 0 and "class-balanced subset of" in html and f"{n_sub} slices" in html
    # accuracy rows name their level, cut and TTA
    assert "Accuracy [p &gt;= 0.5, TTA off]" in html or "Accuracy [p >= 0.5, TTA off]" in html
