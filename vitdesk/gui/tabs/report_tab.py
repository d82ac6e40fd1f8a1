"""Report tab: evaluate the run and export the HTML/PDF report, with a preview.

The work is :func:`vitdesk.analysis.evaluation.evaluate_run` followed by
:func:`vitdesk.report.from_run.write_run_report` in a worker. The report is refused
(a DataError, nothing written) if any text in it contains an identifier of the
series open in the workbench: their names, IDs and dates are passed as forbidden
markers. The preview shows the written ``report.html``; the research-use-only
notice is on the tab itself and on every page of the report.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QTextDocument
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from vitdesk.gui.analysis_jobs import report_job
from vitdesk.gui.dialogs import gui_words, show_error
from vitdesk.gui.run_state import CurrentRun, RunPicker, find_runs
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import SourceChooser, hint, run_or_cancel, scroll_layout
from vitdesk.gui.worker import Task
from vitdesk.report.data import NOTICE

_PHI_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
             "InstitutionName", "OtherPatientIDs", "ReferringPhysicianName")


class ReportPreview(QTextBrowser):
    """A QTextBrowser that shows the report's embedded (data: URI) PNG figures,
    scaled to the preview's width."""

    def loadResource(self, kind: int, url: QUrl) -> Any:  # noqa: N802 - Qt naming
        if url.scheme() == "data" and kind == QTextDocument.ResourceType.ImageResource.value:
            raw = url.toString()
            _, _, payload = raw.partition("base64,")
            img = QImage.fromData(base64.b64decode(payload))
            width = max(200, self.viewport().width() - 40)
            return img.scaledToWidth(width) if img.width() > width else img
        return super().loadResource(kind, url)


class ReportTab(QWidget):
    """Build, preview and export the evaluation report of the current run."""

    def __init__(self, session: Session, current: CurrentRun,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.current = session, current
        self.files: Any = None
        self.task: Task | None = None
        self.last_message: QMessageBox | None = None

        self.notice = QLabel(f"⚠ {NOTICE}. Reports describe a research model; they are not "
                             "medical findings.", self)
        self.notice.setObjectName("ruoNotice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #e0a040; font-weight: bold;")

        self.picker = RunPicker(current, self)
        self.source = SourceChooser(self)
        self.tta_check = QCheckBox("Test-time augmentation", self)
        self.robust_check = QCheckBox("Robustness curves", self)
        self.robust_check.setChecked(True)
        self.shift_check = QCheckBox("Distribution shift", self)
        self.shift_check.setChecked(True)
        self.att_spin = QSpinBox(self)
        self.att_spin.setRange(0, 16)
        self.att_spin.setValue(4)
        self.att_spin.setToolTip("Slices shown with attention rollout and Grad-CAM overlays")
        self.boot_spin = QSpinBox(self)
        self.boot_spin.setRange(50, 5000)
        self.boot_spin.setSingleStep(100)
        self.boot_spin.setValue(500)
        self.baseline_combo = QComboBox(self)
        self.baseline_combo.setToolTip(
            "A baseline run, e.g. a CNN trained from scratch on the same labels: scored on "
            "the same slices, it fills the report's transfer-effectiveness table (paired "
            "accuracy and AUC differences with 95% intervals)")
        self.baseline_button = QPushButton("Browse…", self)
        self.baseline_button.clicked.connect(self._browse_baseline)
        self._baseline_extra: list[str] = []
        base_row = QHBoxLayout()
        base_row.addWidget(self.baseline_combo, 1)
        base_row.addWidget(self.baseline_button)
        self.out_edit = QLineEdit(self)
        self.out_edit.setPlaceholderText("the run's report/ folder")
        self.out_button = QPushButton("Browse…", self)
        self.out_button.clicked.connect(self._choose_out)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.out_button)
        # a continued run's forgetting is scored on its parent's test split: the parent's
        # data, when it is no longer where the parent's split recorded it
        self.earlier_edit = QLineEdit(self)
        self.earlier_edit.setPlaceholderText("where the parent's split recorded it")
        self.earlier_edit.setToolTip("The data the parent run was trained on: the report "
                                     "scores the parent and this run on the parent's test "
                                     "patients (forgetting)")
        self.earlier_button = QPushButton("Browse…", self)
        self.earlier_button.clicked.connect(self._choose_earlier)
        self.earlier_row = QWidget(self)
        earlier_lay = QHBoxLayout(self.earlier_row)
        earlier_lay.setContentsMargins(0, 0, 0, 0)
        earlier_lay.addWidget(self.earlier_edit, 1)
        earlier_lay.addWidget(self.earlier_button)
        checks = QGridLayout()
        checks.addWidget(self.tta_check, 0, 0)
        checks.addWidget(self.robust_check, 1, 0)
        checks.addWidget(self.shift_check, 2, 0)
        box = QGroupBox("Contents", self)
        form = QFormLayout(box)
        # labels go above their field when the tab is narrow, instead of widening it
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow(checks)
        form.addRow("Attention samples", self.att_spin)
        form.addRow("Bootstrap resamples", self.boot_spin)
        form.addRow("Compare with", base_row)
        self.earlier_label = QLabel("Earlier data", self)
        form.addRow(self.earlier_label, self.earlier_row)
        self.earlier_label.hide()
        self.earlier_row.hide()
        form.addRow("Folder", out_row)

        self.build_button = QPushButton("Build report", self)
        self.build_button.setToolTip("Evaluate the run and write report.html and report.pdf")
        self.build_button.clicked.connect(self._build_or_cancel)
        self.open_html_button = QPushButton("Open HTML", self)
        self.open_pdf_button = QPushButton("Open PDF", self)
        for b in (self.open_html_button, self.open_pdf_button):
            b.setEnabled(False)
        self.open_html_button.clicked.connect(lambda: self._open(self.files.html))
        self.open_pdf_button.clicked.connect(lambda: self._open(self.files.pdf))
        buttons = QHBoxLayout()
        buttons.addWidget(self.build_button, 1)
        buttons.addWidget(self.open_html_button)
        buttons.addWidget(self.open_pdf_button)
        self.status = hint("The report covers accuracy with confidence intervals, "
                           "calibration, fairness by sex and age, robustness, shift and "
                           "attention examples.", self)

        self.preview = ReportPreview(self)
        self.preview.setOpenExternalLinks(False)
        self.preview.setPlaceholderText("The report preview appears here once it is built.")
        # The report is a light, printable page: preview it as paper, not in the dark theme.
        self.preview.setStyleSheet("QTextBrowser { background: #ffffff; color: #1a1a1a; }")
        self.preview.setMinimumHeight(160)

        # Options scroll (vertically only) above the buttons; the preview takes the rest
        # below a splitter. Every control may shrink to the tab's width: long run names
        # used to widen the page past the tab, which then scrolled sideways on focus.
        for combo in (self.baseline_combo, self.source.combo):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
            combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.out_edit.setMinimumWidth(60)
        top = QWidget(self)
        top_lay = QVBoxLayout(top)
        top_lay.setContentsMargins(0, 0, 0, 0)
        options = QWidget(top)
        lay = scroll_layout(options)
        lay.setContentsMargins(9, 9, 9, 0)
        lay.addWidget(self.notice)
        lay.addWidget(self.picker)
        lay.addWidget(self.source)
        lay.addWidget(box)
        lay.addStretch(1)
        self.options_area = options.findChild(QScrollArea)
        top_lay.addWidget(options, 1)
        bottom_bar = QVBoxLayout()
        bottom_bar.setContentsMargins(9, 0, 9, 0)
        bottom_bar.addLayout(buttons)
        bottom_bar.addWidget(self.status)
        top_lay.addLayout(bottom_bar)
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.preview)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([470, 330])
        self._bottom_bar = bottom_bar
        self._split_done = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 9)
        outer.addWidget(self.splitter)
        current.changed.connect(self._on_run)
        self.refresh_baselines()

    def showEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().showEvent(ev)
        if not self._split_done:
            self._split_done = True
            QTimer.singleShot(0, self, self._size_split)  # once laid out: wrapped labels known

    def _size_split(self) -> None:
        """Options at their natural height (at most 70 %), the preview below."""
        body = self.options_area.widget()
        width = self.options_area.viewport().width()
        natural = body.heightForWidth(width) if body.hasHeightForWidth() else -1
        natural = natural if natural > 0 else body.sizeHint().height()
        want = (natural + 2 * self.options_area.frameWidth()
                + self._bottom_bar.sizeHint().height() + 12)
        total = self.splitter.height()
        top = min(want, int(total * 0.7))
        self.splitter.setSizes([top, max(160, total - top)])

    # ----------------------------------------------------------------- options
    def refresh_baselines(self) -> None:
        """Offer every known run but the loaded one (keeps the choice when still there)."""
        from vitdesk.config import load_config
        from vitdesk.errors import ConfigError

        chosen = self.baseline()
        loaded = self.current.run_dir
        self.baseline_combo.blockSignals(True)
        self.baseline_combo.clear()
        self.baseline_combo.addItem("no baseline", "")
        for p in find_runs(self.session, self._baseline_extra):
            if loaded is not None and p.resolve() == Path(loaded).resolve():
                continue
            try:
                model = load_config(p / "config.toml").model.name
            except ConfigError:
                continue
            self.baseline_combo.addItem(f"{p.name} ({model})", str(p))
        i = self.baseline_combo.findData(chosen) if chosen else 0
        self.baseline_combo.setCurrentIndex(max(i, 0))
        self.baseline_combo.blockSignals(False)

    def baseline(self) -> str | None:
        """The chosen baseline run folder, or None."""
        return self.baseline_combo.currentData() or None

    def set_baseline(self, folder: str | Path) -> None:
        if str(folder) not in self._baseline_extra:
            self._baseline_extra.append(str(folder))
        self.refresh_baselines()
        i = self.baseline_combo.findData(str(folder))
        if i >= 0:
            self.baseline_combo.setCurrentIndex(i)

    def _browse_baseline(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Baseline run folder")
        if folder:
            self.set_baseline(folder)

    def _on_run(self, run: Any) -> None:
        self.refresh_baselines()
        continued = run is not None and bool(run.cfg.continual.continue_from)
        self.earlier_label.setVisible(continued)  # only a continued run has a parent
        self.earlier_row.setVisible(continued)
        self.files = None
        for b in (self.open_html_button, self.open_pdf_button):
            b.setEnabled(False)
        if run is not None and not self.out_edit.text().strip():
            self.out_edit.setPlaceholderText(str(Path(run.run_dir) / "report"))

    def out_dir(self) -> Path:
        text = self.out_edit.text().strip()
        if text:
            return Path(text).expanduser()
        if self.current.run is None:
            from vitdesk.errors import ConfigError

            raise ConfigError("Report: no run loaded; pick a trained run first")
        return Path(self.current.run.run_dir) / "report"

    def earlier(self) -> str | None:
        """The parent's data for the forgetting figures (None: as its split recorded)."""
        return self.earlier_edit.text().strip() or None

    def _choose_earlier(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data the parent run was trained on")
        if folder:
            self.earlier_edit.setText(folder)

    def _choose_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for report.html and report.pdf")
        if folder:
            self.out_edit.setText(folder)

    def forbidden_markers(self) -> list[str]:
        """Identifiers of every series open in the workbench (never allowed in a report)."""
        marks: set[str] = set()
        phis = [e.phi for e in self.session.library.entries.values()]
        vol = self.session.viewer.volume
        if vol is not None:
            phis.append(vol.phi)
        for phi in phis:
            for k in _PHI_KEYS:
                v = (phi or {}).get(k)
                if v:
                    marks.add(str(v))
        return sorted(marks)

    # ----------------------------------------------------------------- build
    def _build_or_cancel(self) -> None:
        run_or_cancel(self, self.task, self.build)

    def build(self) -> Task:
        """Evaluate and write the report in a worker."""
        from vitdesk.analysis.tta import TTAConfig
        from vitdesk.errors import ConfigError

        if self.current.run is None:
            raise ConfigError("Report: no run loaded; pick a trained run first")
        out = self.out_dir()
        src, split = self.source.value()
        task = Task(report_job, self.current.run, self.current.lock, str(out), src, split,
                    self.forbidden_markers(), name="report", baseline=self.baseline(),
                    earlier=self.earlier() if self.earlier_row.isVisibleTo(self) else None,
                    tta=TTAConfig() if self.tta_check.isChecked() else None,
                    robustness=self.robust_check.isChecked(),
                    shift=self.shift_check.isChecked(),
                    attention_samples=self.att_spin.value(), n_boot=self.boot_spin.value())
        task.finished.connect(self._on_written)
        task.errored.connect(self._on_error)
        task.cancelled.connect(lambda: self.status.setText("Cancelled: nothing was written."))
        task.done.connect(lambda: self.build_button.setText("Build report"))
        self.task = task
        self.build_button.setText("Cancel")
        self.status.setText(f"Evaluating on {self.source.describe()} and writing to {out}…")
        self.session.task_started.emit(task, "Report")
        return task.start()

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"Report not written: {gui_words(str(exc))}")
        show_error(self, exc)

    def _on_written(self, files: Any) -> None:
        self.files = files
        self.preview.setHtml(Path(files.html).read_text(encoding="utf-8"))
        for b in (self.open_html_button, self.open_pdf_button):
            b.setEnabled(True)
        self.status.setText(f"Written: {files.html.name} and {files.pdf.name} "
                            f"({files.pages} pages) in {files.html.parent}")
        self.session.message.emit(f"Report written to {files.html.parent}")

    def export_dialog(self) -> None:
        """Ask for a folder, then build the report there (File > Export report)."""
        folder = QFileDialog.getExistingDirectory(self, "Export the report to a folder")
        if folder:
            self.out_edit.setText(folder)
            self._build_or_cancel()

    def _open(self, path: Path) -> bool:
        """Open a written file in the desktop's viewer; without one, say where it is."""
        opened = QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        if not opened:
            text = (f"No application to open {Path(path).suffix.lstrip('.').upper()} files "
                    f"was found on this desktop. The file is {path}")
            self.status.setText(text)
            self.session.message.emit(f"Report file: {path}")
            box = QMessageBox(QMessageBox.Icon.Information, "Report file", text,
                              QMessageBox.StandardButton.Ok, self)
            box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            box.open()
            self.last_message = box
        return opened
