"""The run the analysis tabs work on: loaded once, shared by Attention, Inference,
Fairness, Robustness and Report, plus a small picker widget to choose it.

:class:`CurrentRun` holds one :class:`~vitdesk.engine.run.LoadedRun` (the model in
eval mode). Loading happens in a :class:`~vitdesk.gui.worker.Task`; every tab
listens to ``changed``. Tabs run their own background work on the same model, so
``lock`` serialises model use across worker threads (attention extraction switches
the fused-attention flag and Grad-CAM writes gradients: neither may interleave
with another pass).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from vitdesk.config import run_folder_problem
from vitdesk.gui.resources import icon
from vitdesk.gui.session import Session
from vitdesk.gui.worker import Task
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, emit


def load_run_job(run_dir: str, device: str = "auto", cancel: CancelToken = NEVER,
                 listener: Listener | None = None) -> Any:
    """Load a run folder (worker-thread function in the Task calling convention)."""
    from vitdesk.engine.run import load_run

    emit(listener, Notice("load run", f"Loading run {Path(run_dir).name}"))
    cancel.check()
    return load_run(run_dir, device=device, listener=listener)  # e.g. best -> last notice


def find_runs(session: Session, extra: list[str] | None = None) -> list[Path]:
    """Run folders to offer: the workspace's recorded runs, WORKSPACE/runs/*, ``extra``,
    and runs in or directly below the folders opened this session.

    A run folder is one holding a ``config.toml`` and a ``checkpoints`` folder.
    Order: most recently modified first; duplicates removed.
    """
    found: list[Path] = []
    ws = session.workspace
    if ws is not None:
        # an old or locked index must not hide the runs on disk
        with contextlib.suppress(Exception):
            found += [Path(r.path) for r in ws.runs()]
        folder = Path(getattr(ws, "folder", ""))
        runs_dir = folder / "runs"
        if runs_dir.is_dir():
            found += [p for p in runs_dir.iterdir() if p.is_dir()]
    found += [Path(p) for p in extra or []]
    for folder in getattr(session, "opened_folders", []):
        with contextlib.suppress(OSError):
            found += [folder, *(p for p in folder.iterdir() if p.is_dir())]
    seen: set[str] = set()
    out = []
    for p in found:
        key = str(p.resolve())
        if key in seen or run_folder_problem(p) is not None:
            continue
        seen.add(key)
        out.append(p)
    out.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return out


class CurrentRun(QObject):
    """The loaded run shared by the analysis tabs."""

    changed = Signal(object)  # LoadedRun | None
    failed = Signal(object)  # exception

    def __init__(self, session: Session, parent: QObject | None = None,
                 device: str = "auto") -> None:
        super().__init__(parent)
        self.session = session
        self.device = device
        self.run: Any = None
        self.lock = threading.Lock()
        self.task: Task | None = None
        self.recent: list[str] = []  # folders chosen in this session (also outside workspaces)

    @property
    def run_dir(self) -> Path | None:
        return None if self.run is None else Path(self.run.run_dir)

    def load(self, run_dir: str | Path) -> Task | None:
        """Load ``run_dir`` in the background; ``changed`` fires when it is ready."""
        run_dir = str(run_dir)
        if self.run is not None and str(self.run.run_dir) == run_dir:
            return None
        if run_dir not in self.recent:
            self.recent.append(run_dir)
        task = Task(load_run_job, run_dir, self.device, name="load run")
        task.finished.connect(self._on_loaded)
        task.errored.connect(self.failed)
        task.errored.connect(self.session.failed)
        self.task = task
        self.session.task_started.emit(task, f"Loading run {Path(run_dir).name}")
        return task.start()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel every background task still running and wait for it (window close)."""
        from vitdesk.gui.worker import shutdown

        return shutdown(timeout_ms)

    def set_run(self, run: Any) -> None:
        """Use an already loaded run (tests, or a run the Training tab just finished)."""
        self._on_loaded(run)

    def _on_loaded(self, run: Any) -> None:
        self.run = run
        self.changed.emit(run)


class RunPicker(QWidget):
    """A combo of known runs, a Browse button and a one-line summary of the loaded run."""

    def __init__(self, current: CurrentRun, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current = current
        self.combo = QComboBox(self)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(12)
        self.combo.setToolTip("Trained runs of the open workspace (WORKSPACE/runs)")
        self.combo.activated.connect(self._on_activated)
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.setToolTip("Choose a run folder (holds config.toml and checkpoints/)")
        self.browse_button.clicked.connect(self._browse)
        self.refresh_button = QPushButton(icon("reset"), "", self)
        self.refresh_button.setToolTip("Look for new runs")
        self.refresh_button.setFixedWidth(30)
        self.refresh_button.clicked.connect(self.refresh)
        self.summary = QLabel("No run loaded: pick a trained run.", self)
        self.summary.setObjectName("hint")
        self.summary.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Run", self))
        row.addWidget(self.combo, 1)
        row.addWidget(self.refresh_button)
        row.addWidget(self.browse_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(row)
        lay.addWidget(self.summary)
        current.changed.connect(self._on_changed)
        current.session.workspace_changed.connect(lambda _ws: self.refresh())
        current.session.import_finished.connect(lambda _res: self.refresh())
        self.refresh()
        self._on_changed(current.run)

    def refresh(self) -> None:
        """Re-list the runs (keeps the loaded one selected)."""
        runs = find_runs(self.current.session, self.current.recent)
        self.combo.blockSignals(True)
        self.combo.clear()
        from vitdesk.gui.run_compare import human_name, run_summary

        for p in runs:  # by what the run is (model, data, date, best metric), not its stamp
            self.combo.addItem(human_name(run_summary(p)), str(p))
            self.combo.setItemData(self.combo.count() - 1, str(p),
                                   Qt.ItemDataRole.ToolTipRole)
        loaded = self.current.run_dir
        idx = self.combo.findData(str(loaded)) if loaded is not None else -1
        if idx < 0 and runs:
            self.combo.insertItem(0, "— choose a run —", "")
            idx = 0
        if not runs:
            self.combo.addItem("no runs found: Browse…", "")
            idx = 0
        self.combo.setCurrentIndex(max(idx, 0))
        self.combo.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        path = self.combo.itemData(index)
        if path:
            self.current.load(path)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a run folder")
        if folder:
            self.current.load(folder)

    def _on_changed(self, run: Any) -> None:
        if run is None:
            self.summary.setText("No run loaded: pick a trained run.")
            return
        self.refresh()
        self.summary.setText(
            f"{Path(run.run_dir).name}: {run.cfg.model.name}, {run.img_size} px, "
            f"window {run.window.label()}, classes {', '.join(run.classes)}")
