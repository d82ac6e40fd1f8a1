"""File > Export model…: the loaded run as ONNX / TorchScript with its preprocessing contract.

The export is :func:`vitdesk.engine.export.export_run` in a :class:`~vitdesk.gui.worker.Task`
(the same function ``vitdesk export`` calls); the dialog only collects the format, the
int8 option and the folder. Output-path problems are found before the worker starts.
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
        from vitdesk.engine.export_contract import (
            CONTRACT_FILE,
            INT8_FILE,
            MODEL_FILES,
            check_format,
        )
        from vitdesk.errors import ConfigError
        from vitdesk.fileio import check_output_path

        try:
            if self.current.run is None:
                raise ConfigError("Export: no run loaded; pick a trained run first")
            if not out_dir:
                raise ConfigError("Export: choose a folder to write the model to")
            fmt = check_format(fmt)
            int8 = bool(int8) and fmt == "onnx"
            check_output_path(out_dir, "Export folder", folder=True,
                              files=(CONTRACT_FILE, MODEL_FILES[fmt],
                                     *([INT8_FILE] if int8 else [])))
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
