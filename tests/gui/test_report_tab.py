"""Report tab: evaluate + write HTML/PDF in a worker, preview, notice, PHI markers."""

from __future__ import annotations

from pypdf import PdfReader

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from tests.gui.helpers import make_volume
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.report_tab import ReportTab
from vitdesk.report.data import NOTICE


def _build_small(qtbot, tab: ReportTab, out, attention: int) -> None:
    """Build a quick report into ``out`` (no robustness or shift, 50 resamples)."""
    tab.out_edit.setText(str(out))
    tab.robust_check.setChecked(False)
    tab.shift_check.setChecked(False)
    tab.att_spin.setValue(attention)
    tab.boot_spin.setValue(50)
    with qtbot.waitSignal(tab.build().done, timeout=60000):
        pass


def test_report_export_and_preview(qtbot, tiny_run, tmp_path):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = ReportTab(session, current)
    qtbot.addWidget(tab)
    tab.show()
    assert NOTICE in tab.notice.text() and tab.notice.isVisible()
    current.set_run(load_run(tiny_run, "cpu"))
    assert tab.out_dir() == tiny_run / "report"
    session.viewer.set_volume(make_volume(phi={"PatientName": "DOE^JANE", "PatientID": "X123"}))
    assert tab.forbidden_markers() == ["DOE^JANE", "X123"]

    _build_small(qtbot, tab, tmp_path / "rep", attention=1)
    assert tab.files is not None, tab.status.text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert NOTICE in html
    assert "DOE" not in html and "X123" not in html
    pdf = PdfReader(str(tmp_path / "rep" / "report.pdf"))
    assert len(pdf.pages) == tab.files.pages >= 1
    assert NOTICE in pdf.pages[0].extract_text()
    # the preview shows the written report
    text = tab.preview.toPlainText()
    assert NOTICE in text and "tiny" in text
    assert tab.open_html_button.isEnabled()
    session.shutdown()


def test_export_report_action_opens_the_report_tab(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from vitdesk.gui.main_window import TAB_ORDER, MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    built = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: str(tmp_path / "out")))
    monkeypatch.setattr(win.report_tab, "_build_or_cancel", lambda: built.append(True))
    assert win.export_action.isEnabled()
    win.export_action.trigger()
    assert win.tabs.currentIndex() == TAB_ORDER.index("Report")
    assert win.report_tab.out_dir() == tmp_path / "out" and built == [True]


def test_report_compares_with_a_baseline_run(qtbot, tiny_run, sample_dir, tmp_path):  # noqa: F811
    import torch

    from tests.evalrun import tiny_cnn_run
    from vitdesk.engine.run import load_run

    torch.set_num_threads(1)
    cnn = tiny_cnn_run(sample_dir, tmp_path / "cnn", epochs=1)
    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = ReportTab(session, current)
    qtbot.addWidget(tab)
    current.set_run(load_run(tiny_run, "cpu"))
    assert tab.baseline() is None and tab.baseline_combo.itemText(0) == "no baseline"
    tab.set_baseline(cnn)
    assert tab.baseline() == str(cnn) and "(cnn_test_tiny)" in tab.baseline_combo.currentText()
    tab.set_baseline(tiny_run)  # the loaded run is never its own baseline
    assert tab.baseline_combo.findData(str(tiny_run)) < 0
    tab.baseline_combo.setCurrentIndex(tab.baseline_combo.findData(str(cnn)))
    _build_small(qtbot, tab, tmp_path / "rep", attention=0)
    assert tab.files is not None, tab.status.text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Baseline run" in html and "cnn_test_tiny (weights: none)" in html
    assert "Paired accuracy difference" in html
    session.shutdown()
