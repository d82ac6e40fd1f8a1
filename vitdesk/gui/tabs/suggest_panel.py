"""Dataset tab's "Suggest next": which unlabelled slices of the workspace to label next.

Runs :func:`vitdesk.analysis.suggest.suggest` (the same ranking as ``vitdesk suggest``)
with the loaded run in a worker, lists the result, and a click on a row opens that
series in the viewer at that slice, so the labelling shortcuts apply to it at once.
Rows the user has labelled since are struck through.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QWidget,
)

from vitdesk.gui.dialogs import show_error
from vitdesk.gui.session import Session
from vitdesk.gui.worker import Task
from vitdesk.jobs import NEVER, CancelToken, Listener

_ROLE = Qt.ItemDataRole.UserRole


def suggest_job(run: Any, workspace_folder: str, n: int, unit: str, lock: Any = None,
                cancel: CancelToken = NEVER, listener: Listener | None = None) -> Any:
    """Worker side: the suggestions for the workspace, the shared run's model locked."""
    import contextlib

    from vitdesk.analysis.suggest import suggest

    with lock if lock is not None else contextlib.nullcontext():
        return suggest(run, workspace_folder, n, unit=unit, cancel=cancel, listener=listener)


class SuggestPanel(QGroupBox):
    """"Suggest next": rank, run in the background, jump the viewer on a click."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("Suggest next (active learning)", parent)
        self.session = session
        self.current_run: Any = None  # gui.run_state.CurrentRun, set by the main window
        self.task: Task | None = None
        self.result: Any = None
        self._pending: tuple[str, int] | None = None
        self.n_spin = QSpinBox(self)
        self.n_spin.setRange(1, 500)
        self.n_spin.setValue(20)
        self.unit_combo = QComboBox(self)
        self.unit_combo.addItem("slices", "slice")
        self.unit_combo.addItem("series", "series")
        self.suggest_button = QPushButton("Suggest next", self)
        self.suggest_button.setToolTip(
            "Rank the workspace's unlabelled slices by the loaded run's uncertainty (TTA "
            "entropy) with diversity; test patients of the run are left out")
        self.suggest_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.status.setObjectName("hint")
        self.list = QListWidget(self)
        self.list.setMinimumHeight(120)
        self.list.itemActivated.connect(self._jump)
        self.list.itemClicked.connect(self._jump)
        lay = QGridLayout(self)
        lay.addWidget(QLabel("Show", self), 0, 0)
        lay.addWidget(self.n_spin, 0, 1)
        lay.addWidget(self.unit_combo, 0, 2)
        lay.addWidget(self.suggest_button, 0, 3)
        lay.addWidget(self.cancel_button, 0, 4)
        lay.addWidget(self.status, 1, 0, 1, 5)
        lay.addWidget(self.list, 2, 0, 1, 5)
        session.workspace_changed.connect(lambda _ws: self._clear())
        session.series_shown.connect(self._on_series_shown)
        self.refresh()

    # ------------------------------------------------------------------ state
    def set_current_run(self, current_run: Any) -> None:
        """Use the run shared by the analysis tabs (``changed`` keeps the button right)."""
        self.current_run = current_run
        current_run.changed.connect(lambda _run: self.refresh())
        self.refresh()

    def _run(self) -> Any:
        return None if self.current_run is None else self.current_run.run

    def refresh(self) -> None:
        running = self.task is not None and self.task.is_running()
        ready = self.session.workspace is not None and self._run() is not None
        self.suggest_button.setEnabled(ready and not running)
        self.cancel_button.setEnabled(running)
        if not running and self.result is None:
            self.status.setText("" if ready else
                                "Open a workspace and load a trained run (Attention or "
                                "Inference tab) to get suggestions.")

    def _clear(self) -> None:
        self.result = None
        self.list.clear()
        self.refresh()

    # ------------------------------------------------------------------ work
    def start(self) -> Task | None:
        """Rank the open workspace's unlabelled slices with the loaded run."""
        ws, run = self.session.workspace, self._run()
        if ws is None or run is None or (self.task is not None and self.task.is_running()):
            return None
        lock = getattr(self.current_run, "lock", None)
        task = Task(suggest_job, run, str(ws.folder), self.n_spin.value(),
                    self.unit_combo.currentData(), lock, name="suggest")
        task.finished.connect(self._on_result)
        task.errored.connect(lambda exc: show_error(self, exc))
        task.cancelled.connect(lambda: self.status.setText("Suggestion cancelled."))
        task.done.connect(self.refresh)
        self.task = task
        self.status.setText("Scoring the unlabelled slices…")
        self.session.task_started.emit(task, "Suggesting slices to label")
        task.start()
        self.refresh()
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _on_result(self, result: Any) -> None:
        from vitdesk.analysis.suggest import left_out_text

        self.result = result
        self.list.clear()
        for s in result.suggestions:
            where = (f"slices {', '.join(str(i + 1) for i in s.slices)}" if s.slices
                     else f"slice {s.slice_index + 1}")
            item = QListWidgetItem(
                f"{s.rank}. {s.description or 'series'} · {where} · "
                f"{result.measure} {s.uncertainty:.2f} · {s.predicted} {s.probability:.2f}")
            item.setToolTip(f"series {s.series}: {s.why}")
            item.setData(_ROLE, (s.series, s.slice_index))
            self.list.addItem(item)
        self.status.setText(left_out_text(result) + ". Click a row to open it.")
        self.mark_labelled()

    # ------------------------------------------------------------------ viewer
    def _jump(self, item: QListWidgetItem) -> None:
        key, index = item.data(_ROLE)
        self.jump_to(key, int(index))

    def jump_to(self, key: str, index: int) -> None:
        """Show slice ``index`` of series ``key`` (axial), loading the series if needed."""
        s = self.session
        if s.current_key == key and s.viewer.volume is not None:
            self._show_slice(index)
            return
        if key not in s.library.entries:
            s.message.emit("That series is not in the study list any more: re-open the "
                           "workspace.")
            return
        self._pending = (key, index)
        s.open_series(key)  # series_shown comes now (cached) or once it has loaded

    def _on_series_shown(self, key: Any) -> None:
        if self._pending is not None and self._pending[0] == key:
            index = self._pending[1]
            self._pending = None
            self._show_slice(index)

    def _show_slice(self, index: int) -> None:
        viewer = self.session.viewer
        viewer.set_axis("axial")  # workspace slice indices are axial
        viewer.set_index(index)

    def mark_labelled(self) -> None:
        """Strike through the rows whose slice now has a label."""
        ws = self.session.workspace
        if ws is None:
            return
        cache: dict[str, dict[int, str]] = {}
        for row in range(self.list.count()):
            item = self.list.item(row)
            key, index = item.data(_ROLE)
            if key not in cache:
                try:
                    cache[key] = ws.labels_for_series(key)
                except Exception:  # noqa: BLE001 - the series may have been removed
                    cache[key] = {}
            font = item.font()
            font.setStrikeOut(index in cache[key])
            item.setFont(font)
