"""The report's "Learning across sites and over time" section: forgetting of a continued
run and source/target accuracy of an adapted run, in the HTML and the PDF alike."""

from __future__ import annotations

import html
import json

from pypdf import PdfReader

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.report.build import write_report
from vitdesk.report.data import ModelCard, ReportData
from vitdesk.report.from_run import adapt_figures
from vitdesk.report.sections import build_sections, sites_section

CONTINUAL = {"parent": "first", "split": "test", "n_slices": 12, "n_patients": 2,
             "parent_acc": 0.75, "run_acc": 0.5, "forgetting": 0.25,
             "forgetting_ci": [0.0, 0.5]}
ADAPT = {"weight": 0.5, "target_patients": 6, "target_slices": 36,
         "source_test_acc": 0.625, "target_acc": 0.8125,
         "target_note": "on the unlabelled target slices adapted on (transductive)"}


def _rows(section) -> dict[str, str]:
    return {r[0]: r[1] for t in section.tables for r in t.rows}


def test_forgetting_and_target_figures_are_tabled():
    s = sites_section(ReportData(continual=CONTINUAL, adapt=ADAPT))
    rows = _rows(s)
    assert rows["Parent run"] == "first"
    assert rows["Parent's accuracy there [argmax]"] == "0.750"
    assert rows["This run's accuracy there [argmax]"] == "0.500"
    assert rows["Forgetting, parent - this run (95% CI, patient bootstrap)"] == \
        "0.250 (0.000 to 0.500)"
    assert "12 slices of 2 patients" in rows["Scored on"]
    assert rows["Source test accuracy [argmax]"] == "0.625"
    assert rows["Target accuracy [argmax]"] == "0.812"
    assert rows["Target slices adapted on"] == "36" and rows["Target patients"] == "6"
    assert "transductive" in s.tables[1].caption


def test_no_parent_no_adaptation_no_section():
    assert sites_section(ReportData()) is None
    titles = [s.title for s in build_sections(ReportData(model=ModelCard("vit_test_tiny")))]
    assert "Learning across sites and over time" not in titles


def test_unmeasured_forgetting_says_why_without_a_table():
    s = sites_section(ReportData(continual={"parent": "first", "note": "put them side by side"}))
    assert not s.tables
    assert s.paragraphs == ["Continued from parent run first; forgetting not measured: "
                            "put them side by side"]


def test_html_and_pdf_both_show_the_section(tmp_path):
    data = ReportData(model=ModelCard(architecture="vit_test_tiny"), continual=CONTINUAL,
                      adapt=ADAPT)
    files = write_report(data, tmp_path)
    doc = files.html.read_text()
    assert "Learning across sites and over time" in doc and "0.250 (0.000 to 0.500)" in doc
    pdf = "".join(p.extract_text() for p in PdfReader(files.pdf).pages)
    assert "Forgetting" in pdf and "0.812" in pdf


def test_adapt_figures_come_from_the_runs_metrics(tmp_path):
    assert adapt_figures(tmp_path) is None  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"finished": True}))
    assert adapt_figures(tmp_path) is None  # a run that was not adapted
    (tmp_path / "metrics.json").write_text(json.dumps({"finished": True, "adapt": ADAPT}))
    assert adapt_figures(tmp_path) == ADAPT


def test_cli_report_of_a_continued_run_shows_forgetting(tiny_run, tmp_path, capsys):  # noqa: F811
    """`vitdesk report` of a run trained with `--continue` writes the section, with the
    numbers `vitdesk evaluate --earlier` computes; a moved parent gives a note, not a stop."""
    import shutil

    import torch

    from vitdesk.analysis.forgetting import forgetting
    from vitdesk.cli import main
    from vitdesk.engine.run import load_run
    from vitdesk.imaging.synthetic import generate_sample

    new = tmp_path / "b"
    generate_sample(new, patients=6, slices=6, size=48, seed=1)
    parent = shutil.copytree(tiny_run, tmp_path / "runs" / "first")
    child = tmp_path / "runs" / "second"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--data", str(new), "--continue", str(parent), "--rehearsal",
                     "6", "--recipe", "full", "--epochs", "1", "--batch-size", "8",
                     "--device", "cpu", "--out", str(child)]) == 0
        assert main(["report", str(child), "--data", str(new), "--device", "cpu",
                     "--out", str(tmp_path / "rep")]) == 0
    finally:
        torch.set_num_threads(before)
    doc = html.unescape((tmp_path / "rep" / "report.html").read_text())
    f = forgetting(load_run(child, "cpu"), None)
    assert f"Parent's accuracy there [argmax]</td><td>{f['parent_acc']:.3f}<" in doc
    assert f"This run's accuracy there [argmax]</td><td>{f['run_acc']:.3f}<" in doc
    assert str(tmp_path) not in doc

    shutil.move(parent, tmp_path / "elsewhere")  # the parent is no longer beside it
    assert main(["report", str(child), "--data", str(new), "--device", "cpu",
                 "--out", str(tmp_path / "rep2")]) == 0
    doc = html.unescape((tmp_path / "rep2" / "report.html").read_text())
    assert "forgetting not measured" in doc and "Parent's accuracy there" not in doc
    assert str(tmp_path) not in doc
    assert "forgetting not measured" in capsys.readouterr().err  # the reason, on the console
