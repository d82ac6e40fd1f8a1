"""What the model will be trained on: the HU windowing and the patient-level split.

The window is one preset (replicated to the model's three channels) or a
three-window stack (one window per channel), previewed on the current slice as
the RGB image the model sees. The split is by patient
(:func:`vitdesk.data.splits.split_by_patient`), computed in the background from
the workspace's labelled slices.

The choices are stored in the workspace (setting ``training_input``, written on
every change) so they travel with the labels. Workspaces from before the settings
table kept them in ``training_input.json``; that file is read once into the
workspace and then left alone.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vitdesk.errors import DataError
from vitdesk.gui import geometry
from vitdesk.gui.dialogs import gui_words
from vitdesk.gui.worker import Task
from vitdesk.imaging.windowing import PRESETS, WindowSpec
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

SETTING_KEY = "training_input"
PREFS_FILE = "training_input.json"  # legacy location, read once into SETTING_KEY
DEFAULT_STACK = ("lung", "mediastinum", "bone")
PREVIEW_PX = 136


@dataclass(frozen=True)
class SplitSummary:
    """Per split: patients, slices and slices per class."""

    classes: tuple[str, ...]
    rows: tuple[tuple[str, int, int, tuple[int, ...]], ...]  # name, patients, slices, per class


def split_workspace(folder: str, fractions: tuple[float, float, float], seed: int,
                    cancel: CancelToken = NEVER, listener: Listener | None = None
                    ) -> SplitSummary:
    """Split the labelled slices of a workspace by patient and summarise (plain function)."""
    from vitdesk.data.sources import read_workspace
    from vitdesk.data.splits import check_no_leak, split_by_patient

    emit(listener, Progress("split", 0, None, "reading labels"))
    records = read_workspace(folder, cancel=cancel, listener=listener)
    cancel.check()
    splits = split_by_patient(records, fractions=fractions, seed=seed)
    check_no_leak(splits)
    classes = tuple(sorted({r.label for r in records if r.label is not None}))
    rows = []
    for name in ("train", "val", "test"):
        recs = splits.get(name, [])
        per = Counter(r.label for r in recs)
        rows.append((name, len({r.patient for r in recs}), len(recs),
                     tuple(per.get(c, 0) for c in classes)))
    emit(listener, Progress("split", 1, 1, "done"))
    return SplitSummary(classes, tuple(rows))


def fit_table_height(table: QTableWidget) -> None:
    """Size a small table to show all its rows (no inner scroll bar inside a scroll area)."""
    table.resizeRowsToContents()
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    table.setFixedHeight(table.horizontalHeader().sizeHint().height() + rows
                         + 2 * table.frameWidth())


def rgb_preview(hu2d: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """(H, W, 3) uint8: the slice as the model's three input channels."""
    chw = spec.apply(hu2d, channels=3)
    return np.ascontiguousarray(np.rint(np.moveaxis(chw, 0, -1) * 255).astype(np.uint8))


class TrainingInputPanel(QGroupBox):
    """Window choice with RGB preview, and the patient split (fractions, seed, table)."""

    def __init__(self, session: Any, parent: QWidget | None = None) -> None:
        super().__init__("Training input", parent)
        self.session = session
        self.split_task: Task | None = None
        self.summary: SplitSummary | None = None
        self._loading = False

        self.single_radio = QRadioButton("One window", self)
        self.stack_radio = QRadioButton("Three-window stack", self)
        self.single_radio.setChecked(True)
        self.single_combo = self._preset_combo("soft_tissue")
        self.stack_combos = [self._preset_combo(k) for k in DEFAULT_STACK]
        self.clahe_box = QCheckBox("CLAHE", self)
        self.preview = QLabel(self)
        self.preview.setFixedSize(PREVIEW_PX, PREVIEW_PX)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setStyleSheet("background:#000; border:1px solid #22262c;")
        self.spec_label = QLabel(self)
        self.spec_label.setObjectName("overlay")

        for w in (self.single_radio, self.stack_radio, self.clahe_box):
            w.toggled.connect(self._changed)
        for c in (self.single_combo, *self.stack_combos):
            c.currentIndexChanged.connect(self._changed)

        win_grid = QGridLayout()
        win_grid.addWidget(self.single_radio, 0, 0)
        win_grid.addWidget(self.single_combo, 1, 0)
        win_grid.addWidget(self.stack_radio, 2, 0)
        for i, c in enumerate(self.stack_combos):
            win_grid.addWidget(c, 3 + i, 0)
        win_grid.addWidget(self.clahe_box, 6, 0)
        win_grid.addWidget(self.preview, 0, 1, 7, 1, Qt.AlignmentFlag.AlignTop)
        win_grid.setColumnStretch(0, 1)

        self.fraction_spins = []
        frac_row = QGridLayout()
        for i, (name, value) in enumerate((("train", 0.7), ("val", 0.15), ("test", 0.15))):
            s = QDoubleSpinBox(self)
            s.setRange(0.0, 1.0)
            s.setSingleStep(0.05)
            s.setDecimals(2)
            s.setValue(value)
            s.setPrefix(f"{name} ")
            s.valueChanged.connect(self._changed)
            self.fraction_spins.append(s)
            frac_row.addWidget(s, i // 2, i % 2)
        self.seed_spin = QSpinBox(self)
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setPrefix("seed ")
        self.seed_spin.valueChanged.connect(self._changed)
        frac_row.addWidget(self.seed_spin, 1, 1)
        self.split_button = QPushButton("Show split", self)
        self.split_button.clicked.connect(self.compute_split)
        self.split_table = QTableWidget(self)
        self.split_table.verticalHeader().setVisible(False)
        self.split_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.split_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        fit_table_height(self.split_table)
        self.split_status = QLabel("Split by patient: no patient is in two splits.", self)
        self.split_status.setWordWrap(True)

        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Windowing", objectName="sectionTitle"))
        lay.addLayout(win_grid)
        lay.addWidget(self.spec_label)
        lay.addWidget(QLabel("Patient split", objectName="sectionTitle"))
        lay.addLayout(frac_row)
        lay.addWidget(self.split_button)
        lay.addWidget(self.split_status)
        lay.addWidget(self.split_table)

        session.viewer.slice_changed.connect(lambda _i: self.update_preview())
        session.viewer.volume_changed.connect(lambda _v: self.update_preview())
        self.refresh()

    def _preset_combo(self, key: str) -> QComboBox:
        c = QComboBox(self)
        for k, p in PRESETS.items():
            c.addItem(f"{p.name} {p.width:g}/{p.level:g}", k)
        c.setCurrentIndex(list(PRESETS).index(key))
        return c

    # ------------------------------------------------------------------ values
    def window_spec(self) -> WindowSpec:
        if self.stack_radio.isChecked():
            keys = [c.currentData() for c in self.stack_combos]
        else:
            keys = [self.single_combo.currentData()]
        return WindowSpec.parse(",".join(keys), clahe=self.clahe_box.isChecked())

    def fractions(self) -> tuple[float, float, float]:
        return tuple(s.value() for s in self.fraction_spins)  # type: ignore[return-value]

    def prefs(self) -> dict:
        return {"window": self.window_spec().to_dict(), "fractions": list(self.fractions()),
                "seed": self.seed_spin.value()}

    def set_window_spec(self, spec: WindowSpec) -> None:
        if len(spec.names) == 3:
            self.stack_radio.setChecked(True)
            for c, name in zip(self.stack_combos, spec.names, strict=True):
                if name in PRESETS:
                    c.setCurrentIndex(list(PRESETS).index(name))
        elif spec.names and spec.names[0] in PRESETS:
            self.single_radio.setChecked(True)
            self.single_combo.setCurrentIndex(list(PRESETS).index(spec.names[0]))
        self.clahe_box.setChecked(spec.clahe)

    # ------------------------------------------------------------------ persistence
    def _changed(self, *_args) -> None:
        if self._loading:
            return
        self.update_preview()
        ws = self.session.workspace
        if ws is not None:
            ws.set_setting(SETTING_KEY, self.prefs())

    def _stored_prefs(self, ws: Any) -> Any:
        """The workspace's stored choices, adopting a legacy ``training_input.json`` once."""
        data = ws.get_setting(SETTING_KEY)
        legacy = Path(ws.folder) / PREFS_FILE
        if data is None and legacy.is_file():
            try:
                data = json.loads(legacy.read_text())
                # the user's file is left in place; from now on the setting wins
                ws.set_setting(SETTING_KEY, data)
            except (ValueError, OSError, DataError):
                return None  # unreadable: keep the defaults, the setting is written on change
        return data

    def refresh(self) -> None:
        """Load the workspace's stored choices (or keep the defaults)."""
        ws = self.session.workspace
        self.split_button.setEnabled(ws is not None)
        data = self._stored_prefs(ws) if ws is not None else None
        if data is not None:
            self._loading = True
            try:
                self.set_window_spec(WindowSpec.from_dict(data["window"]))
                for s, v in zip(self.fraction_spins, data.get("fractions", []), strict=False):
                    s.setValue(float(v))
                self.seed_spin.setValue(int(data.get("seed", 0)))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # unusable choices: keep the defaults, they are rewritten on change
            finally:
                self._loading = False
        self.update_preview()

    # ------------------------------------------------------------------ preview
    def update_preview(self) -> None:
        spec = self.window_spec()
        self.spec_label.setText(f"--window {spec.label()}" + (" + CLAHE" if spec.clahe else ""))
        vol = self.session.viewer.volume
        if vol is None:
            self.preview.setText("no slice")
            return
        hu = geometry.plane(vol, "axial", min(self.session.viewer.index if
                                                 self.session.viewer.axis == "axial"
                                                 else vol.n_slices // 2, vol.n_slices - 1))
        rgb = rgb_preview(hu, spec)
        h, w, _ = rgb.shape
        img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.preview.setPixmap(QPixmap.fromImage(img).scaled(
            PREVIEW_PX, PREVIEW_PX, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation))
        self.preview_rgb = rgb

    # ------------------------------------------------------------------ split
    def compute_split(self) -> Task | None:
        ws = self.session.workspace
        if ws is None or (self.split_task is not None and self.split_task.is_running()):
            return None
        task = Task(split_workspace, str(ws.folder), self.fractions(), self.seed_spin.value(),
                    name="split")
        task.finished.connect(self._show_split)
        task.errored.connect(
            lambda exc: self.split_status.setText(f"No split: {gui_words(str(exc))}"))
        self.split_task = task
        self.split_status.setText("Computing the split…")
        self.session.task_started.emit(task, "Splitting by patient")
        return task.start()

    def _show_split(self, summary: SplitSummary) -> None:
        self.summary = summary
        t = self.split_table
        t.clear()
        t.setColumnCount(3 + len(summary.classes))
        t.setHorizontalHeaderLabels(["Split", "Patients", "Slices", *summary.classes])
        t.setRowCount(len(summary.rows))
        for r, (name, n_pat, n_sl, per) in enumerate(summary.rows):
            for c, v in enumerate((name, n_pat, n_sl, *per)):
                t.setItem(r, c, QTableWidgetItem(str(v)))
        fit_table_height(t)
        self.split_status.setText(
            f"Split by patient with seed {self.seed_spin.value()}: no patient is in two splits.")
