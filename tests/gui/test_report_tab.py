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
    # embedded figures are base64: "DOE" can occur there by chance; the words cannot
    import re

    words = re.sub(r"data:[^\"')]+", "", html)
    assert "DOE" not in words and "X123" not in words
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


def _inside(widget, tab) -> bool:
    """True when ``widget`` is shown whole inside ``tab`` (nothing cut off)."""
    from PySide6.QtCore import QRect

    top_left = widget.mapTo(tab, widget.rect().topLeft())
    rect = QRect(top_left, widget.size())
    return widget.isVisible() and tab.rect().contains(rect)


def test_report_tab_fits_its_place_at_1440x880(qtbot):
    """Issue 16 #7: buttons and preview were cut and the page scrolled sideways. At
    1440x880 the tab is about 418 x 781 px; with long run names everything fits."""
    session = Session()
    tab = ReportTab(session, CurrentRun(session, device="cpu"))
    qtbot.addWidget(tab)
    long = "vit_tiny_patch16_224-20261202-171500-a-long-run-name"
    tab.baseline_combo.addItem(f"{long} (vit_tiny_patch16_224)", "x")
    tab.baseline_combo.setCurrentIndex(1)
    tab.picker.combo.addItem(f"vitdesk-demo/{long}", "y")
    tab.picker.summary.setText(f"{long}: vit_tiny_patch16_224, 224 px, window brain+subdural"
                               "+bone, classes normal, lesion")
    tab.out_edit.setText("/home/someone/a/very/long/folder/for/the/report/output/files")
    tab.resize(418, 781)
    tab.show()
    qtbot.waitExposed(tab)
    qtbot.wait(20)  # the splitter is sized once laid out
    area = tab.options_area
    body = area.widget()
    assert body.minimumSizeHint().width() <= area.viewport().width()  # no sideways scroll
    assert area.horizontalScrollBar().maximum() == 0
    for w in (tab.build_button, tab.open_html_button, tab.open_pdf_button, tab.status):
        assert _inside(w, tab), w
    assert _inside(tab.preview, tab) and tab.preview.height() >= 160
    # focus on the last option must not shift the page sideways
    tab.out_button.setFocus()
    area.ensureWidgetVisible(tab.out_button)
    assert area.horizontalScrollBar().value() == 0
    session.shutdown()


def test_open_without_a_desktop_viewer_says_where_the_file_is(qtbot, tmp_path, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    session = Session()
    tab = ReportTab(session, CurrentRun(session, device="cpu"))
    qtbot.addWidget(tab)
    messages = []
    session.message.connect(messages.append)
    asked = []
    monkeypatch.setattr(QDesktopServices, "openUrl",
                        staticmethod(lambda url: asked.append(url.toLocalFile()) or False))
    pdf = tmp_path / "rep" / "report.pdf"
    assert tab._open(pdf) is False
    assert asked == [str(pdf)]
    assert str(pdf) in tab.status.text() and "PDF" in tab.status.text()
    assert tab.last_message is not None and str(pdf) in tab.last_message.text()
    assert messages and str(pdf) in messages[-1]
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: True))
    tab.last_message = None
    assert tab._open(tmp_path / "report.html") is True and tab.last_message is None
    session.shutdown()
