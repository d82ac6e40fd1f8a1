"""Error and notice dialogs: user errors in one line, bugs with collapsed details."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vitdesk.errors import VitdeskError
from vitdesk.gui.worker import format_exception


def error_box(parent: QWidget | None, exc: BaseException, title: str = "vitdesk") -> QMessageBox:
    """Build (not show) the message box for ``exc``.

    A :class:`VitdeskError` is the user's to fix: its one-line message is the whole
    story. Anything else is a bug: a short line plus the traceback under
    "Show Details..." (collapsed by default).
    """
    box = QMessageBox(parent)
    box.setWindowTitle(title)
    if isinstance(exc, VitdeskError):
        box.setIcon(QMessageBox.Icon.Warning)
        box.setText(str(exc))
    else:
        box.setIcon(QMessageBox.Icon.Critical)
        box.setText(f"Something went wrong inside vitdesk: {type(exc).__name__}: {exc}")
        box.setInformativeText("This is a bug. The details below help to report it.")
        box.setDetailedText(format_exception(exc))
    return box


def show_error(parent: QWidget | None, exc: BaseException, title: str = "vitdesk") -> None:
    """Show ``exc`` to the user without blocking the event loop."""
    box = error_box(parent, exc, title)
    box.setModal(True)
    box.open()


class FileErrorsDialog(QDialog):
    """Unreadable files with the reason for each (path, reason pairs)."""

    def __init__(self, errors: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Files that could not be read")
        self.resize(760, 360)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"{len(errors)} file(s) were skipped. The rest were imported."))
        self.table = QTableWidget(len(errors), 2, self)
        self.table.setHorizontalHeaderLabels(["File", "Reason"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setColumnWidth(0, 320)
        for row, (path, reason) in enumerate(errors):
            self.table.setItem(row, 0, QTableWidgetItem(path))
            self.table.setItem(row, 1, QTableWidgetItem(reason))
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
