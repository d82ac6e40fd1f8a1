"""Offline pretraining with its own progress and loss curve: MAE on the open workspace's
images, or formula-driven on generated contours or fractals (no images needed).

The encoder is written to ``WORKSPACE/pretrain/<model>-<source>-<date-time>`` and, once
finished, appears in the Training tab's weights list (its ``card.json``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from vitdesk.engine.events import StepDone, TrainingFailed
from vitdesk.gui.dialogs import gui_words, show_error
from vitdesk.gui.job_bar import progress_text
from vitdesk.gui.plots import LossPlot
from vitdesk.gui.tabs.training_widgets import combo_box, dspin_box, spin_box
from vitdesk.gui.worker import Task
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress


def run_pretrain(settings: dict[str, Any], cancel: CancelToken = NEVER,
                 listener: Listener | None = None) -> Path:
    """Plain function for the worker: pretraining with these PretrainConfig fields."""
    from vitdesk.engine.pretrain import PretrainConfig, pretrain

    return pretrain(PretrainConfig.from_dict(settings), cancel,
                    [listener] if listener is not None else [])


NO_WORKSPACE = ("Open a workspace: pretraining reads its images (MAE) and writes the encoder "
                "into it.")


class PretrainPanel(QWidget):
    """Settings, Start/Cancel, progress and the reconstruction-loss curve.

    Args:
        settings: returns the shared settings (model, img_size, window, clahe, device,
            seed) from the training form, or raises ConfigError.
        workspace: returns the open workspace folder (or None).
    """

    finished = Signal(object)  # Path of the encoder folder

    def __init__(self, settings: Callable[[], dict[str, Any]],
                 workspace: Callable[[], str | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings, self.workspace = settings, workspace
        self.task: Task | None = None
        self.epochs_spin = spin_box(self, 1, 10000, 20)
        self.batch_spin = spin_box(self, 1, 4096, 32)
        self.mask_spin = dspin_box(self, 0.1, 0.95, 0.75, 0.05)
        self.source_combo = combo_box(self, [
            ("This workspace's images (MAE)", ""),
            ("Generated contours (formula-driven)", "contours"),
            ("Generated fractals (formula-driven)", "fractals"),
        ])
        self.source_combo.setToolTip(
            "MAE: masked-autoencoder pretraining on every slice of the workspace, labels "
            "ignored.\nFormula-driven: the ViT learns to tell generated contour or fractal "
            "formulas apart; no patient image is used.")
        self.classes_spin = spin_box(self, 2, 10000, 64)
        self.classes_spin.setToolTip("Formulas (classes) to tell apart; each epoch draws 16 "
                                     "fresh images of each")
        self.start_button = QPushButton("Pretrain", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar(self)
        self.bar.setTextVisible(False)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.plot = LossPlot(self, title="Pretraining loss")
        self.plot.setMinimumHeight(100)

        grid = QGridLayout()
        grid.addWidget(QLabel("Source"), 0, 0)
        grid.addWidget(self.source_combo, 0, 1, 1, 3)
        grid.addWidget(QLabel("Epochs"), 1, 0)
        grid.addWidget(self.epochs_spin, 1, 1)
        grid.addWidget(QLabel("Batch"), 1, 2)
        grid.addWidget(self.batch_spin, 1, 3)
        grid.addWidget(QLabel("Mask ratio"), 2, 0)
        grid.addWidget(self.mask_spin, 2, 1)
        grid.addWidget(QLabel("Formulas"), 2, 2)
        grid.addWidget(self.classes_spin, 2, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Uses the model, image size, window (MAE) and device of the "
                             "Setup page.", objectName="overlay", wordWrap=True))
        lay.addLayout(grid)
        lay.addLayout(row)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addWidget(self.plot, 1)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.source_combo.currentIndexChanged.connect(self._on_source)
        self._on_source()

    @property
    def formula(self) -> str:
        """The chosen formula family, or "" for MAE on the workspace's images."""
        return str(self.source_combo.currentData() or "")

    def _source_text(self) -> str:
        return ("Pretrain the backbone on generated formula images (no patient images): it "
                "learns to tell the formulas apart; the encoder then appears under Weights."
                if self.formula else
                "Pretrain the backbone on this workspace's images (no labels needed); the "
                "encoder then appears under Weights.")

    def _on_source(self) -> None:
        if not self.is_running():
            self.status.setText(self._source_text())
        self.refresh()

    def refresh(self) -> None:
        """Enable the controls for the open workspace (or its absence), and say so."""
        running = self.is_running()
        self.start_button.setEnabled(bool(self.workspace()) and not running)
        self.cancel_button.setEnabled(running)
        self.mask_spin.setEnabled(not self.formula and not running)
        self.classes_spin.setEnabled(bool(self.formula) and not running)
        self.source_combo.setEnabled(not running)
        if running:
            return
        if not self.workspace():
            self.status.setText(NO_WORKSPACE)
        elif self.status.text() in ("", NO_WORKSPACE):
            # a workspace was opened since: the request to open one no longer applies
            self.status.setText(self._source_text())

    def is_running(self) -> bool:
        return self.task is not None and self.task.is_running()

    def pretrain_settings(self, out: str | None = None) -> dict[str, Any]:
        """The PretrainConfig fields of a run on the open workspace."""
        base = self.settings()
        ws = self.workspace()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        formula = self.formula
        extra: dict[str, Any] = (
            {"formula": formula, "formula_classes": self.classes_spin.value(), "data": ""}
            if formula else {"data": str(ws), "mask_ratio": round(self.mask_spin.value(), 4)})
        name = f"{base['model']}-{formula or 'mae'}-{stamp}"
        return {**base, **extra, "epochs": self.epochs_spin.value(),
                "batch_size": self.batch_spin.value(),
                "out": out or str(Path(ws) / "pretrain" / name)}

    def start(self, out: str | None = None) -> Task | None:
        if self.is_running() or not self.workspace():
            return None
        try:
            settings = self.pretrain_settings(out)
        except Exception as exc:  # noqa: BLE001 - shown, never a crash
            show_error(self, exc)
            return None
        self.plot.reset()
        self.plot.start()
        self.bar.setRange(0, 0)
        self.status.setText("Generating formulas…" if self.formula else "Loading images…")
        self._epochs = settings["epochs"]
        task = Task(run_pretrain, settings, name="pretrain")
        task.event.connect(self._on_event)
        task.finished.connect(self._on_finished)
        task.errored.connect(self._on_error)
        task.cancelled.connect(lambda: self.status.setText(
            "Pretraining cancelled; the last checkpoint is kept."))
        task.done.connect(self._on_done)
        self.task = task
        task.start()
        self.refresh()
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.setText("Cancelling at the next step…")

    def _on_event(self, ev: Any) -> None:
        name = type(ev).__name__
        if isinstance(ev, StepDone):
            self.plot.step.append(ev.global_step, ev.loss)
        elif name == "PretrainEpochEnded":
            self.plot.epoch.append(ev.global_step, ev.loss)
            self.bar.setRange(0, ev.epochs)
            self.bar.setValue(ev.epoch + 1)
            self.status.setText(ev.describe())
        elif name == "PretrainStarted":
            self.bar.setRange(0, ev.epochs)
            self.bar.setValue(ev.start_epoch)
            self.status.setText(ev.describe())
        elif isinstance(ev, Progress) and ev.task != "pretrain":
            self.status.setText(progress_text(ev))
        elif isinstance(ev, TrainingFailed):
            self.status.setText(gui_words(ev.message))

    def _on_finished(self, out: Path) -> None:
        loss = self.plot.epoch.data.y[-1] if len(self.plot.epoch.data) else math.nan
        self.status.setText(f"Encoder ready: {out} (final loss {loss:.4f}); pick it under "
                            "Weights.")
        self.finished.emit(Path(out))

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"Pretraining failed: {gui_words(str(exc))}")
        show_error(self, exc)

    def _on_done(self) -> None:
        self.plot.stop()
        self.refresh()
