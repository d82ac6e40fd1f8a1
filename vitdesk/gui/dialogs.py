"""Error and notice dialogs: user errors in one line, bugs with collapsed details."""

from __future__ import annotations

import re
from collections.abc import Sequence

from PySide6.QtCore import Qt
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

# Engine and data errors are shared with the command line and some still name its
# flags. Shown in the workbench they must use its words: one table, applied wherever
# an error reaches the screen (error_box, the training log). Specific phrases first.
_GUI_WORDS: tuple[tuple[str, str], ...] = (
    (r"resume it with 'vitdesk pretrain --resume --out ([^']+)'",
     r"resume it from the Pretrain page of the Training tab (folder \1)"),
    (r"pass it with --pretrained (?:PATH|DIR)", "choose it under Weights"),
    (r"resume with --resume", "resume it with Resume in the Training tab"),
    (r"continue with --resume", "continue it with Resume in the Training tab"),
    (r"start without --resume", "start it as a new run"),
    (r"add --resume to continue it", "resume it from the Training tab"),
    (r"choose a new --out", "choose a new run folder"),
    (r"(?:use )?--pretrained (?:PATH|DIR)", "choose that file under Weights"),
    (r"use --pretrained none or a file", "choose 'none' or a weights file under Weights"),
    (r"--pretrained none", "Weights 'none (random init)'"),
    (r"use --pretrained ([^\s)]+)", r"choose \1 under Weights"),
    (r"--recipe full", "the 'full' recipe"),
    (r"--window ([^\s:;,)]+)", r"window \1"),
    (r"--device cpu or auto", "device cpu or auto"),
    (r"--device (\w+)", r"device \1"),
    (r"--distill soft\|hard", "distillation soft or hard"),
    (r"--teacher RUN", "a teacher run"),
    (r"\(--force-staged, or ('[^']+') in the workbench\)", r"(\1)"),
    (r"--force-staged", "'Keep staged without weights'"),
    (r"--epochs ", "epochs "),
    (r"--data SRC", "the data source"),
    (r"--val SRC", "the validation source"),
    (r"(?:a )?--out (?:RUN|DIR)", "a run folder"),
    (r"(?:another|a new) --out", "another run folder"),
    (r"--data\b", "the data source"),
    (r"--batch-size", "the batch size"),
)
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z-]*)")


def gui_words(text: str) -> str:
    """``text`` with command-line phrasing ("--pretrained PATH", "resume with --resume")
    put in the workbench's words; any other ``--flag`` becomes "the 'flag' setting"."""
    for pattern, repl in _GUI_WORDS:
        text = re.sub(pattern, repl, text)
    return _FLAG.sub(lambda m: f"the '{m.group(1).replace('-', ' ')}' setting", text)


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
        box.setText(gui_words(str(exc)))
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
    """Files of an import (or of a series being opened) that need the user's attention.

    Two kinds, never mixed up: files that were *not* imported (with the reason for
    each) and files of imported series that carry a remark (no preview). Reasons are
    shown in full: cells wrap, rows grow, and the tooltip repeats the text.
    """

    def __init__(self, errors: Sequence[tuple[str, str]], parent: QWidget | None = None,
                 notes: Sequence[tuple[str, str]] = (), imported: tuple[int, int] | None = None,
                 ignored: int = 0, title: str = "Import: files that need attention",
                 intro: str | None = None, error_status: str = "not imported") -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(900, 420)
        lay = QVBoxLayout(self)
        self.summary = QLabel(intro or import_summary(len(errors), len(notes), imported,
                                                      ignored), self)
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        rows = [(path, reason, error_status) for path, reason in errors]
        rows += [(path, reason, "imported") for path, reason in notes]
        self.table = QTableWidget(len(rows), 3, self)
        self.table.setHorizontalHeaderLabels(["File", "Status", "Reason"])
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long paths: keep the name
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        head.setStretchLastSection(True)
        self.table.setColumnWidth(0, 300)
        for row, (path, reason, status) in enumerate(rows):
            for col, text in enumerate((path, status, reason)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(row, col, item)
        self.table.resizeRowsToContents()
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, parent=self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def rows(self) -> list[tuple[str, str, str]]:
        """(file, status, reason) of every row, as shown (tests)."""
        t = self.table
        return [tuple(t.item(r, c).text() for c in range(3)) for r in range(t.rowCount())]

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().resizeEvent(ev)
        self.table.resizeRowsToContents()  # wrapped reasons need taller rows when narrower


def import_summary(n_errors: int, n_notes: int, imported: tuple[int, int] | None,
                   ignored: int = 0) -> str:
    """The sentence above the file list: what was imported and what was not."""
    parts = []
    if imported is not None:
        n_series, n_files = imported
        parts.append(f"Imported {n_series} series ({n_files} file{'s' * (n_files != 1)}).")
    if n_errors:
        parts.append(f"{n_errors} file{'s' * (n_errors != 1)} could not be read and "
                     f"{'were' if n_errors != 1 else 'was'} not imported; the reason for "
                     "each is below.")
    if n_notes:
        parts.append(f"{n_notes} imported file{'s' * (n_notes != 1)} "
                     f"{'have' if n_notes != 1 else 'has'} a remark.")
    if ignored:
        parts.append(f"{ignored} other file{'s' * (ignored != 1)} "
                     f"{'are' if ignored != 1 else 'is'} not an image (not DICOM, a DICOMDIR "
                     "index, a report or a presentation state) and "
                     f"{'were' if ignored != 1 else 'was'} left aside.")
    return " ".join(parts)
