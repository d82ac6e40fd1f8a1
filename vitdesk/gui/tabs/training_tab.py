"""Training tab: set up a run, start/pause/resume/cancel it, watch live curves.

The run itself is :func:`vitdesk.engine.run.train` in a
:class:`~vitdesk.gui.worker.Task` (its own thread); the tab only turns the
engine's events into plot points, a status line and epoch log lines. Curves are
redrawn at most 10 times a second (:class:`~vitdesk.gui.plots.TrainingPlots`),
and step events are thinned in the worker (:class:`StepThrottle`), so the window
stays responsive however fast the steps come. Nothing heavy is imported on the
GUI thread: torch and timm load in the worker (and in a one-off background probe
for CUDA and the model names the first time the tab is shown).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from vitdesk.config import RunConfig, load_config
from vitdesk.engine.events import (
    EpochEnded,
    StageStarted,
    StepDone,
    TrainingDone,
    TrainingFailed,
)
from vitdesk.engine.history import read_history
from vitdesk.errors import CheckpointError
from vitdesk.gui.dialogs import gui_words, show_error
from vitdesk.gui.job_bar import progress_text
from vitdesk.gui.plots import TrainingPlots
from vitdesk.gui.run_state import find_runs
from vitdesk.gui.tabs.plan_panel import PlanPanel
from vitdesk.gui.tabs.training_form import TrainingForm
from vitdesk.gui.tabs.training_plan import (
    RunProgress,
    epoch_line,
    history_point,
)
from vitdesk.gui.tabs.training_pretrain import PretrainPanel
from vitdesk.gui.tabs.training_watch import OneClassWatch
from vitdesk.gui.worker import Task
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress

MAX_LOG_LINES = 5000


class EpochProgress:
    """Adds a :class:`Progress` per epoch (the status bar's job display reads those)."""

    def __init__(self, listener: Listener, total_epochs: int, done: int = 0) -> None:
        self.listener, self.total, self.done = listener, total_epochs, done

    def __call__(self, ev: Any) -> None:
        self.listener(ev)
        if isinstance(ev, EpochEnded):
            self.done += 1
            self.listener(Progress("training epochs", min(self.done, self.total),
                                   self.total))


class StepThrottle:
    """Forwards every event, but StepDone at most once per ``interval`` seconds.

    Runs in the worker: a fast tiny model can finish hundreds of steps a second,
    and each forwarded event is a queued call on the GUI thread.
    """

    def __init__(self, listener: Listener, interval: float = 0.05) -> None:
        self.listener, self.interval = listener, interval
        self._last = -math.inf
        self.dropped = 0

    def __call__(self, ev: Any) -> None:
        if isinstance(ev, StepDone):
            now = time.perf_counter()
            if now - self._last < self.interval:
                self.dropped += 1
                return
            self._last = now
        self.listener(ev)


def run_training(cfg: RunConfig, resume: bool = False, cancel: CancelToken = NEVER,
                 listener: Listener | None = None, step_interval: float = 0.05) -> Path:
    """Plain function for the worker: :func:`vitdesk.engine.run.train` with thinned steps."""
    import torch

    from vitdesk.engine.run import train

    listeners = []
    if listener is not None:
        total = sum(s.epochs for s in cfg.stage_plan())
        done = len(read_history(cfg.out)) if resume else 0
        listeners = [StepThrottle(EpochProgress(listener, total, done), step_interval)]
    # Leave one core to the GUI thread. With as many OpenMP threads as cores, a busy
    # machine stalls both: on 2 shared cores the tiny test ViT trained at 0.5 steps/s
    # with 2 threads and 15 steps/s with 1 (bench/gui_latency.py --mode training).
    before = torch.get_num_threads()
    torch.set_num_threads(training_threads(before))
    lower_thread_priority()
    try:
        return train(cfg, cancel, listeners, resume=resume)
    finally:
        torch.set_num_threads(before)


def training_threads(current: int) -> int:
    """The torch threads a workbench run trains with: one core left to the GUI thread
    (the plan panel times its steps with the same number)."""
    return max(1, min(current, (os.cpu_count() or 2) - 1))


def lower_thread_priority(step: int = 5) -> bool:
    """Make the calling (worker) thread yield the CPU to the GUI thread when both want it.

    Linux only: ``setpriority`` on a thread id renices just that thread (it ends with
    the task). Elsewhere, or without permission, nothing changes. Returns True if done.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + step))
    except (OSError, AttributeError):
        return False
    return True


def probe_engine(cancel: CancelToken = NEVER, listener: Listener | None = None
                 ) -> dict[str, Any]:
    """Devices and model names, looked up off the GUI thread (importing torch takes seconds)."""
    import torch

    from vitdesk.engine.models import available_models

    devices = [("CPU", "cpu")]
    if torch.cuda.is_available():
        devices.append((f"CUDA ({torch.cuda.get_device_name(0)})", "cuda"))
    return {"devices": devices, "models": available_models()}


class TrainingTab(QWidget):
    """Setup form, run controls, live curves, epoch log, MAE pretraining.

    Args:
        session: the :class:`~vitdesk.gui.session.Session` (workspace, task display).
        training_input: the Dataset tab's training-input panel (window, split, seed);
            optional.
    """

    run_finished = Signal(object)  # Path of a finished run

    def __init__(self, session: Any, training_input: Any = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.training_input = training_input
        self.task: Task | None = None
        self.probe_task: Task | None = None
        self.progress: RunProgress | None = None
        self.run_cfg: RunConfig | None = None
        self.last_run: Path | None = None
        self.best_val_acc = math.nan
        self._stages_marked: set[int] = set()
        self._status_dirty = False

        self.form = TrainingForm(self._workspace_folder, self._data_prefs, self)
        # teachers: every run the session knows (recorded, under runs/, beside opened folders)
        self.form.teacher_box.runs = lambda extra: find_runs(self.session, extra)
        self.form.sites_box.runs = lambda extra: find_runs(self.session, extra)
        # the planner's run for a time budget, above the form it fills in
        self.plan_panel = PlanPanel(lambda: self.form.run_config(validate=False),
                                    self.form.set_config, self, threads=training_threads)
        holder = QWidget(self)
        hl = QVBoxLayout(holder)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addWidget(self.plan_panel)
        hl.addWidget(self.form)
        setup = QScrollArea(self)
        setup.setWidgetResizable(True)
        setup.setWidget(holder)
        setup.setFrameShape(QScrollArea.Shape.NoFrame)
        # the panel is narrow: the form wraps instead of scrolling sideways
        setup.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        # ---- progress page
        self.status_label = QLabel("No run yet.", self)
        self.status_label.setObjectName("overlay")
        self.status_label.setWordWrap(True)
        self.bar = QProgressBar(self)
        self.bar.setTextVisible(False)
        self.result_label = QLabel(self)
        self.result_label.setWordWrap(True)
        self.result_label.hide()
        # "the model predicts one class" (validation accuracy stuck at the majority rate)
        self.one_class_label = QLabel(self)
        self.one_class_label.setObjectName("banner")
        self.one_class_label.setWordWrap(True)
        self.one_class_label.hide()
        self.one_class: OneClassWatch | None = None
        self.plots = TrainingPlots(self)
        self.plots.setMinimumHeight(150)
        self.log = QListWidget(self)
        self.log.setObjectName("trainingLog")
        self.log.setMinimumHeight(40)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.plots)
        split.addWidget(self.log)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([3000, 1000])  # plots get three quarters
        monitor = QWidget(self)
        ml = QVBoxLayout(monitor)
        ml.setContentsMargins(4, 4, 4, 4)
        ml.addWidget(self.status_label)
        ml.addWidget(self.bar)
        ml.addWidget(self.result_label)
        ml.addWidget(self.one_class_label)
        ml.addWidget(split, 1)

        self.pretrain = PretrainPanel(self._pretrain_settings, self._workspace_folder, self)
        self.pages = QTabWidget(self)
        self.pages.addTab(setup, "Setup")
        self.pages.addTab(monitor, "Progress")
        self.pages.addTab(self.pretrain, "Pretrain")

        # ---- controls (always visible)
        self.start_button = QPushButton("Start", self)
        self.start_button.setDefault(True)
        self.pause_button = QPushButton("Pause", self)
        self.resume_button = QPushButton("Resume", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.resume_run_button = QPushButton("Resume run…", self)
        self.resume_run_button.setToolTip("Continue a cancelled or unfinished run from its "
                                          "folder (checkpoints/last)")
        row = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.resume_button,
                  self.cancel_button):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.resume_run_button)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(row)
        lay.addWidget(self.pages, 1)

        self.start_button.clicked.connect(lambda: self.start())
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_run_button.clicked.connect(self._resume_run_dialog)
        self.form.changed.connect(self._update_buttons)
        self.pretrain.finished.connect(self._on_pretrained)
        self.plots.throttle.timer.timeout.connect(self._flush_status)
        session.workspace_changed.connect(self._on_workspace)
        self._update_buttons()

    # ---- sources ---------------------------------------------------------------------
    def _workspace_folder(self) -> str | None:
        ws = getattr(self.session, "workspace", None)
        return str(ws.folder) if ws is not None else None

    def _data_prefs(self) -> dict | None:
        return self.training_input.prefs() if self.training_input is not None else None

    def _pretrain_settings(self) -> dict[str, Any]:
        cfg = self.form.run_config(out="-", validate=False)
        return {"model": cfg.model.name, "img_size": cfg.model.img_size,
                "window": cfg.data.window, "clahe": cfg.data.clahe, "seed": cfg.seed,
                "device": cfg.device if cfg.device in ("cpu", "cuda") else "auto",
                "attention": cfg.model.attention if cfg.model.attention in (
                    "auto", "sdpa", "eager") else "auto"}

    def _on_workspace(self, _ws: Any) -> None:
        self.form.refresh_workspace()
        self.pretrain.refresh()

    def _on_pretrained(self, folder: Path) -> None:
        self.form.refresh_weights()
        self.form.set_weights(str(folder))

    # ---- background probe --------------------------------------------------------------
    def showEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().showEvent(ev)
        if self.probe_task is None:
            self.probe_task = Task(probe_engine, name="probe")
            self.probe_task.finished.connect(self._on_probe)
            self.probe_task.start()

    def _on_probe(self, info: dict[str, Any]) -> None:
        self.form.known_models = set(info["models"])
        self.form.set_devices(info["devices"])

    # ---- state -------------------------------------------------------------------------
    def is_training(self) -> bool:
        return self.task is not None and self.task.is_running()

    def is_busy(self) -> bool:
        return self.is_training() or self.pretrain.is_running()

    def _update_buttons(self) -> None:
        running = self.is_training()
        paused = running and self.task.token.paused
        self.start_button.setEnabled(not running and not self.form.problem)
        self.start_button.setToolTip(gui_words(self.form.problem) or "Train with these settings")
        self.pause_button.setEnabled(running and not paused)
        self.resume_button.setEnabled(paused)
        self.cancel_button.setEnabled(running and not self.task.token.cancelled)
        self.resume_run_button.setEnabled(not running)
        self.form.setEnabled(not running)
        self.plan_panel.setEnabled(not running)

    # ---- run control -------------------------------------------------------------------
    def start(self, out: str | None = None) -> Task | None:
        """Start a new run with the form's settings (``out`` overrides the run folder)."""
        if self.is_training():
            return None
        try:
            cfg = self.form.run_config(out=out)
        except Exception as exc:  # noqa: BLE001 - a user error, shown in a dialog
            show_error(self, exc)
            return None
        return self._launch(cfg, resume=False, history=[])

    def resume_run(self, folder: str | Path) -> Task | None:
        """Continue the run in ``folder`` from its ``checkpoints/last``."""
        if self.is_training():
            return None
        folder = Path(folder)
        try:
            from vitdesk.engine.run_folder import dead_end_folder

            # a folder its run left before the first checkpoint starts again (train() says so)
            if not (folder / "checkpoints" / "last.json").is_file() and not (
                    folder.is_dir() and dead_end_folder(folder)):
                raise CheckpointError(f"cannot resume {folder}: it has no checkpoints/last; "
                                      "choose a run folder that trained at least one step")
            cfg = load_config(folder / "config.toml")
        except Exception as exc:  # noqa: BLE001 - a user error, shown in a dialog
            show_error(self, exc)
            return None
        cfg.out = str(folder)
        self.form.set_config(cfg)
        return self._launch(cfg, resume=True, history=read_history(folder))

    def _resume_run_dialog(self) -> None:
        start = str(self.last_run.parent) if self.last_run else (self._workspace_folder() or "")
        folder = QFileDialog.getExistingDirectory(self, "Run folder to resume", start)
        if folder:
            self.resume_run(folder)

    def _launch(self, cfg: RunConfig, resume: bool, history: list[dict]) -> Task:
        stages = cfg.stage_plan()
        names = [s.name for s in stages]
        self.run_cfg = cfg
        self.last_run = Path(cfg.out)
        self.best_val_acc = math.nan
        self.progress = RunProgress([s.epochs for s in stages], names)
        self.plots.reset()
        self.log.clear()
        self._stages_marked = set()
        self.result_label.hide()
        self.one_class_label.hide()
        self.one_class = OneClassWatch(cfg.out)
        self._prefill(history, names)
        self.bar.setRange(0, 1000)
        self.bar.setValue(int(1000 * self.progress.fraction()))
        self.status_label.setText(("Resuming " if resume else "Starting ") + str(cfg.out))
        task = Task(run_training, cfg, resume=resume, name="training")
        task.event.connect(self._on_event)
        task.finished.connect(self._on_finished)
        task.errored.connect(self._on_error)
        task.cancelled.connect(self._on_cancelled)
        task.done.connect(self._on_done)
        self.task = task
        self.plots.start()
        task.start()
        self.session.task_started.emit(task, "Training")
        self.pages.setCurrentIndex(1)
        self._update_buttons()
        return task

    def _prefill(self, rows: list[dict], names: list[str]) -> None:
        """Draw a resumed run's past epochs (from history.jsonl)."""
        prev_step, stage = 0, -1
        for row in rows:
            s = int(row.get("stage", 0))
            if s != stage:
                stage = s
                self._mark_stage(s, prev_step, names)
            step, train, val, acc = history_point(row)
            self.plots.add_epoch(step, train, val, acc)
            prev_step = step
            past = EpochEnded(s, int(row.get("epoch", 0)), step, train, val, acc,
                              float(row.get("lr") or math.nan), float(row.get("seconds") or 0))
            self.log.addItem(epoch_line(past, names) + " (before resume)")
        if rows:
            self.progress.add_past_epochs(rows)
        self.plots.flush()

    def _mark_stage(self, stage: int, step: float, names: list[str]) -> None:
        if stage not in self._stages_marked:
            self._stages_marked.add(stage)
            name = names[stage] if stage < len(names) else ""
            self.plots.start_stage(step, f"{stage + 1} {name}".strip())

    def pause(self) -> None:
        if self.is_training():
            self.task.pause()
            if self.progress is not None:
                self.progress.paused()
            self.status_label.setText("Paused at the next step. " + self.status_label.text())
            self._update_buttons()

    def resume(self) -> None:
        if self.is_training():
            self.task.resume()
            self._update_buttons()

    def cancel(self) -> None:
        if self.is_training():
            self.task.cancel()
            self.status_label.setText("Cancelling: stopping at the next safe point and writing "
                                      "checkpoints/last…")
            self._update_buttons()

    # ---- events (GUI thread, queued from the worker) ------------------------------------
    def _on_event(self, ev: Any) -> None:
        p = self.progress
        if p is None:
            return
        if isinstance(ev, StepDone):
            self.plots.add_step(ev.global_step, ev.loss, ev.lr)
            p.on_event(ev)
            self._status_dirty = True
        elif isinstance(ev, EpochEnded):
            p.on_event(ev)
            self.plots.add_epoch(ev.global_step, ev.train_loss, ev.val_loss, ev.val_acc)
            self._add_log(epoch_line(ev, p.stage_names))
            self._status_dirty = True
            stuck = self.one_class.check(ev.val_acc) if self.one_class is not None else None
            if stuck:
                self.one_class_label.setText("⚠ " + stuck)
                self.one_class_label.show()
                self._add_log("warning: " + stuck)
        elif isinstance(ev, StageStarted):
            self._mark_stage(ev.stage, p.global_step, p.stage_names)
            p.on_event(ev)
            self._add_log(ev.describe())
            self._status_dirty = True
        elif isinstance(ev, TrainingDone):
            p.on_event(ev)
            self.best_val_acc = ev.best_val_acc
        elif isinstance(ev, TrainingFailed | Notice):  # Notice: e.g. a window mismatch
            self._add_log(gui_words(ev.message))
        elif isinstance(ev, Progress) and ev.task != "training epochs":
            self.status_label.setText(progress_text(ev))

    def _add_log(self, text: str) -> None:
        if text:
            self.log.addItem(text)
            if self.log.count() > MAX_LOG_LINES:
                self.log.takeItem(0)
            self.log.scrollToBottom()

    def _flush_status(self) -> None:
        if not self._status_dirty or self.progress is None:
            return
        self._status_dirty = False
        text = self.progress.status()
        if self.is_training() and self.task.token.paused:
            text = "Paused · " + text
        self.status_label.setText(text)
        self.bar.setValue(int(1000 * self.progress.fraction()))

    def _on_finished(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        self.last_run = run_dir
        acc = self.best_val_acc
        acc_text = f"{acc:.3f}" if math.isfinite(acc) else "n/a (no validation split)"
        self.result_label.setText(f"Finished. Best val acc {acc_text}\nRun folder: {run_dir}")
        self.result_label.show()
        self.bar.setValue(1000)
        self.status_label.setText("Finished.")
        ws = getattr(self.session, "workspace", None)
        if ws is not None:
            try:
                p = self.progress
                ws.add_run(run_dir, model=self.run_cfg.model.name if self.run_cfg else "",
                           metrics={"best_val_acc": _num(p.best_val_acc) if p else None,
                                    "best_val_loss": _num(p.best_val_loss) if p else None})
            except Exception as exc:  # noqa: BLE001 - the run is fine; say why it is unlisted
                show_error(self, exc)
        self.run_finished.emit(run_dir)

    def _on_error(self, exc: BaseException) -> None:
        self.status_label.setText(f"Training failed: {gui_words(str(exc))}")
        show_error(self, exc)

    def _on_cancelled(self) -> None:
        self.status_label.setText(f"Cancelled. checkpoints/last is in {self.last_run}; "
                                  "'Resume run…' continues it.")

    def _on_done(self) -> None:
        self.plots.stop()
        self._update_buttons()

    # ---- closing -------------------------------------------------------------------------
    def ask_stop(self) -> bool:
        """Ask the user whether to stop the running work (tests patch this)."""
        answer = QMessageBox.question(
            self, "Training is running",
            "Stop training and close? The run stops at the next safe point with "
            "checkpoints/last written; 'Resume run…' continues it later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def confirm_close(self) -> bool:
        """For the main window's close: True when it may close (work stopped or none)."""
        if not self.is_busy():
            self.shutdown()
            return True
        if not self.ask_stop():
            return False
        return self.shutdown()

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Cancel training, pretraining and the probe; wait for their threads to end."""
        tasks = [t for t in (self.task, self.pretrain.task, self.probe_task,
                             self.plan_panel.task)
                 if t is not None and t.is_running()]
        for t in tasks:
            t.cancel()
        return wait_for_tasks(tasks, timeout_ms)


def wait_for_tasks(tasks: list[Task], timeout_ms: int) -> bool:
    """Block until every task's thread has ended (shutdown only); True if all did.

    Runs a local event loop instead of ``Task.wait``: a Task's thread is told to quit
    by a signal queued to the GUI thread, so a GUI thread blocked in ``QThread.wait``
    would wait out the whole timeout. User input is held back meanwhile.
    """
    pending = [t for t in tasks if t.is_running()]
    if not pending:
        return True
    loop = QEventLoop()
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: None if any(t.is_running() for t in pending) else loop.quit())
    timer.start(timeout_ms)
    poll.start()
    loop.exec(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
    poll.stop()
    timer.stop()
    return all(t.wait(1000) for t in pending)


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None
