"""Status-bar progress for background work: a label, a progress bar and Cancel."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QToolButton, QWidget

from vitdesk.gui.dialogs import gui_words
from vitdesk.gui.resources import icon
from vitdesk.gui.worker import Task
from vitdesk.jobs import Notice, Progress


def progress_text(ev: Progress) -> str:
    """One status line for a progress event: "load dataset 63/64", "evaluate: metrics
    with bootstrap intervals…". Without a total, ``done`` is a step index, not a count,
    so it is not shown ("evaluate: 1 metrics..." read as a count of one metric)."""
    msg = ev.message.strip()
    if ev.total:
        count = f"{min(ev.done, ev.total)}/{ev.total}"
        return f"{ev.task}: {count}" + (f" · {msg}" if msg else "")
    if msg:
        return f"{ev.task}: {msg}…" if not msg.endswith(("…", ".")) else f"{ev.task}: {msg}"
    return f"{ev.task}…" if ev.done <= 0 else f"{ev.task}: {ev.done}"


class JobBar(QWidget):
    """Shows the progress of one :class:`Task` at a time; hidden when idle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel(self)
        self.bar = QProgressBar(self)
        self.bar.setFixedWidth(180)
        self.bar.setTextVisible(False)
        self.cancel_button = QToolButton(self)
        self.cancel_button.setIcon(icon("cancel"))
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("Cancel the running task")
        self.cancel_button.clicked.connect(self.cancel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel_button)
        self.task: Task | None = None
        self.hide()

    def attach(self, task: Task, text: str) -> None:
        """Follow ``task`` until it is done (a newer task replaces the display)."""
        self.task = task
        self.label.setText(text)
        self.bar.setRange(0, 0)  # busy until the first progress event says how much
        self.cancel_button.setEnabled(True)
        task.event.connect(self._on_event)
        task.done.connect(lambda t=task: self._on_done(t))
        self.show()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.cancel_button.setEnabled(False)
            self.label.setText(self.label.text() + " (cancelling…)")

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, Progress):
            if ev.total:
                self.bar.setRange(0, ev.total)
                self.bar.setValue(min(ev.done, ev.total))
            else:
                self.bar.setRange(0, 0)
            self.label.setText(progress_text(ev))
        elif isinstance(ev, Notice):
            self.label.setText(gui_words(ev.message))

    def _on_done(self, task: Task) -> None:
        if task is self.task:
            self.task = None
            self.hide()
