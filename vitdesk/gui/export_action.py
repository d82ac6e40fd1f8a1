"""File > Export model… and File > Write DICOM results…, for the loaded run.

Export model: :func:`vitdesk.engine.export.export_run` (what ``vitdesk export`` calls)
writes the model as ONNX / TorchScript with its preprocessing contract. DICOM results:
the run's prediction of a DICOM folder written by
:func:`vitdesk.report.dicom_results.write_results` (what ``vitdesk predict --dicom``
writes): a Comprehensive SR per series, optionally de-identified. Both run in a
:class:`~vitdesk.gui.worker.Task`; the dialogs only collect options, and output-path
problems are found before the worker starts.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from vitdesk.gui.dialogs import show_error
from vitdesk.gui.worker import Task
from vitdesk.jobs import NEVER, CancelToken, Listener

FORMATS = (("ONNX (ONNX Runtime, no PyTorch needed)", "onnx"),
           ("TorchScript (PyTorch)", "torchscript"))


def export_job(run: Any, lock: threading.Lock | None, fmt: str, out_dir: str,
               int8: bool = False, cancel: CancelToken = NEVER,
               listener: Listener | None = None) -> Any:
    """Export the loaded run (holding its lock, as the other analysis jobs do)."""
    from vitdesk.engine.export import export_run

    if lock is None:
        return export_run(run, fmt, out_dir, int8=int8, cancel=cancel, listener=listener)
    with lock:
        return export_run(run, fmt, out_dir, int8=int8, cancel=cancel, listener=listener)


class ExportDialog(QDialog):
    """Format, int8 and output folder of an export."""

    def __init__(self, default_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export model")
        self.format_combo = QComboBox(self)
        for text, fmt in FORMATS:
            self.format_combo.addItem(text, fmt)
        self.int8_check = QCheckBox("Also int8 (kept only within one accuracy point)", self)
        self.int8_check.setChecked(True)
        self.format_combo.currentIndexChanged.connect(self._on_format)
        self.out_edit = QLineEdit(str(default_dir), self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(browse)
        hint = QLabel("The model and vitdesk-export.json (window, size, normalisation, "
                      "classes, calibration) are written to this folder. No patient data.",
                      self)
        hint.setWordWrap(True)
        hint.setObjectName("hint")
        form = QFormLayout(self)
        form.addRow("Format", self.format_combo)
        form.addRow("", self.int8_check)
        form.addRow("Folder", row)
        form.addRow(hint)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _on_format(self) -> None:
        onnx = self.fmt() == "onnx"
        self.int8_check.setEnabled(onnx)
        if not onnx:
            self.int8_check.setChecked(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the model to a folder")
        if folder:
            self.out_edit.setText(folder)

    def fmt(self) -> str:
        return str(self.format_combo.currentData())

    def values(self) -> tuple[str, bool, str]:
        """(format, int8, folder)."""
        return self.fmt(), self.int8_check.isChecked(), self.out_edit.text().strip()


class ExportModelAction(QObject):
    """The "Export model…" action; enabled while a run is loaded in ``current``."""

    exported = Signal(object)  # ExportResult

    def __init__(self, session: Any, current: Any, parent: QWidget) -> None:
        super().__init__(parent)
        self.session, self.current, self.widget = session, current, parent
        self.task: Task | None = None
        self.dialog: ExportDialog | None = None
        self.result: Any = None
        self.action = QAction("Export &model…", parent)
        self.action.setStatusTip("Write the loaded run's model as ONNX or TorchScript, with "
                                 "its preprocessing, for use outside vitdesk")
        self.action.triggered.connect(self.open_dialog)
        current.changed.connect(lambda run: self.action.setEnabled(run is not None))
        self.action.setEnabled(current.run is not None)

    def open_dialog(self) -> ExportDialog | None:
        if self.current.run is None:
            return None
        self.dialog = ExportDialog(Path(self.current.run.run_dir) / "export", self.widget)
        self.dialog.accepted.connect(lambda: self.export(*self.dialog.values()))
        self.dialog.open()
        return self.dialog

    def export(self, fmt: str, int8: bool, out_dir: str) -> Task | None:
        """Check the folder, then export in a worker; errors go to one dialog."""
        from vitdesk.engine.export_contract import check_export_folder, check_format
        from vitdesk.errors import ConfigError

        try:
            if self.current.run is None:
                raise ConfigError("Export: no run loaded; pick a trained run first")
            if not out_dir:
                raise ConfigError("Export: choose a folder to write the model to")
            fmt = check_format(fmt)
            int8 = bool(int8) and fmt == "onnx"
            check_export_folder(out_dir, fmt, int8, flag="Export folder")
        except ConfigError as exc:
            show_error(self.widget, exc)
            return None
        task = Task(export_job, self.current.run, self.current.lock, fmt, out_dir, int8,
                    name="export")
        task.finished.connect(self._on_done)
        task.errored.connect(self.session.failed)
        task.cancelled.connect(lambda: self.session.message.emit("Export cancelled."))
        self.task = task
        self.session.task_started.emit(task, "Exporting the model")
        return task.start()

    def _on_done(self, result: Any) -> None:
        self.result = result
        c = result.contract
        self.session.message.emit(
            f"Model exported to {result.out_dir} ({c['model_format']}"
            f"{', int8' if c.get('int8_file') else ''}; max difference to the run "
            f"{c['check']['max_abs_diff']:.1e})")
        self.exported.emit(result)


def dicom_results_job(run: Any, lock: threading.Lock | None, input_path: str, out_dir: str,
                      deid: bool = False, cancel: CancelToken = NEVER,
                      listener: Listener | None = None) -> tuple[list[Path], list[Path]]:
    """Predict ``input_path`` with the loaded run and write its DICOM results."""
    import contextlib

    from vitdesk.analysis.predict import predict_input
    from vitdesk.report.dicom_results import run_model_info, write_results

    sources: dict[str, list[str]] = {}
    with lock if lock is not None else contextlib.nullcontext():
        res = predict_input(run, input_path, sources=sources, cancel=cancel,
                            listener=listener)
    r = res.rows
    return write_results(out_dir, [x.key for x in r], [x.slice_index for x in r],
                         [x.probs for x in r], [x.predicted for x in r], [x.set for x in r],
                         sources, res.classes, run_model_info(run), deid=deid)


class DicomResultsDialog(QDialog):
    """The DICOM input (a series or study folder), the output folder and de-identification."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Write DICOM results")
        self.input_edit = QLineEdit(self)
        self.out_edit = QLineEdit(self)
        self.deid_check = QCheckBox("De-identified copies (PS3.15 basic profile, UIDs "
                                    "remapped)", self)
        form = QFormLayout(self)
        for label, edit, title in (("DICOM input", self.input_edit, "Choose the DICOM folder"),
                                   ("Write to", self.out_edit, "Choose the output folder")):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            browse = QPushButton("Browse…", self)
            browse.clicked.connect(lambda _c=False, e=edit, t=title: self._browse(e, t))
            row.addWidget(browse)
            form.addRow(label, row)
        form.addRow("", self.deid_check)
        hint = QLabel("A Comprehensive SR per series (class, probability and conformal set "
                      "of every slice; research use only) in the source study. No name, ID "
                      "or date is copied.", self)
        hint.setWordWrap(True)
        hint.setObjectName("hint")
        form.addRow(hint)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title)
        if folder:
            edit.setText(folder)

    def values(self) -> tuple[str, str, bool]:
        """(input, output folder, de-identify)."""
        return (self.input_edit.text().strip(), self.out_edit.text().strip(),
                self.deid_check.isChecked())


class DicomResultsAction(QObject):
    """The "Write DICOM results…" action; enabled while a run is loaded in ``current``."""

    written = Signal(object)  # (SR files, Secondary Capture files)

    def __init__(self, session: Any, current: Any, parent: QWidget) -> None:
        super().__init__(parent)
        self.session, self.current, self.widget = session, current, parent
        self.task: Task | None = None
        self.dialog: DicomResultsDialog | None = None
        self.action = QAction("Write &DICOM results…", parent)
        self.action.setStatusTip("Predict a DICOM folder with the loaded run and write the "
                                 "results as DICOM SR for the archive")
        self.action.triggered.connect(self.open_dialog)
        current.changed.connect(lambda run: self.action.setEnabled(run is not None))
        self.action.setEnabled(current.run is not None)

    def open_dialog(self) -> DicomResultsDialog | None:
        if self.current.run is None:
            return None
        self.dialog = DicomResultsDialog(self.widget)
        self.dialog.accepted.connect(lambda: self.write(*self.dialog.values()))
        self.dialog.open()
        return self.dialog

    def write(self, input_path: str, out_dir: str, deid: bool = False) -> Task | None:
        """Check input and folder, then predict and write in a worker."""
        from vitdesk.errors import ConfigError
        from vitdesk.fileio import check_output_path

        try:
            if self.current.run is None:
                raise ConfigError("DICOM results: no run loaded; pick a trained run first")
            if not input_path or not Path(input_path).expanduser().exists():
                raise ConfigError(f"DICOM results: input '{input_path}' not found: choose a "
                                  "DICOM series or study folder")
            if not out_dir:
                raise ConfigError("DICOM results: choose a folder to write to")
            check_output_path(out_dir, "Output folder", folder=True)
        except ConfigError as exc:
            show_error(self.widget, exc)
            return None
        task = Task(dicom_results_job, self.current.run, self.current.lock, input_path,
                    out_dir, deid, name="dicom results")
        task.finished.connect(self._on_done)
        task.errored.connect(self.session.failed)
        task.cancelled.connect(lambda: self.session.message.emit("DICOM results cancelled."))
        self.task = task
        self.session.task_started.emit(task, "Writing DICOM results")
        return task.start()

    def _on_done(self, result: Any) -> None:
        srs, _scs = result
        self.session.message.emit(f"{len(srs)} DICOM SR written" if srs else
                                  "No DICOM series in the input: nothing written")
        self.written.emit(result)
