"""Preferences: default device, CPU threads, output folder, theme; kept in QSettings.

:class:`Preferences` is the plain value (read with :func:`load`, written with
:func:`save`); :class:`PreferencesDialog` edits one; :func:`apply` puts one into
effect in a running workbench. vitdesk is always offline (``vitdesk.offline`` sets
the switches before any hub library loads); the dialog shows that state rather
than offering to turn it off.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

DEVICES = (("Automatic (GPU when present)", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda"))
THEMES = (("Dark", "dark"), ("Light", "light"))


@dataclass(frozen=True)
class Preferences:
    """What the user chose once for every session."""

    device: str = "auto"  # auto | cpu | cuda: the training form's default device
    threads: int = 0  # CPU threads for torch; 0 = torch's own choice
    output_folder: str = ""  # parent of run folders when no workspace is open ("" = ~/vitdesk)
    theme: str = "dark"


def load(settings: QSettings) -> Preferences:
    """The saved preferences (defaults for anything missing or unreadable)."""
    d = Preferences()

    def get(key: str, default: Any, kind: type) -> Any:
        try:
            return kind(settings.value(f"preferences/{key}", default))
        except (TypeError, ValueError):
            return default

    prefs = Preferences(device=get("device", d.device, str),
                        threads=max(0, get("threads", d.threads, int)),
                        output_folder=get("output_folder", d.output_folder, str),
                        theme=get("theme", d.theme, str))
    if prefs.device not in {v for _, v in DEVICES}:
        prefs = replace(prefs, device=d.device)
    if prefs.theme not in {v for _, v in THEMES}:
        prefs = replace(prefs, theme=d.theme)
    return prefs


def save(settings: QSettings, prefs: Preferences) -> None:
    for key in ("device", "threads", "output_folder", "theme"):
        settings.setValue(f"preferences/{key}", getattr(prefs, key))
    settings.sync()


def apply_threads(threads: int) -> None:
    """CPU threads for torch: now if torch is loaded, else when it loads."""
    if threads <= 0:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    else:  # torch reads it when imported (intra-op pool size)
        os.environ["OMP_NUM_THREADS"] = str(int(threads))


def apply_theme(theme: str, app: QApplication | None = None) -> None:
    from vitdesk.gui.resources import stylesheet

    app = app or QApplication.instance()
    if app is not None:
        app.setStyleSheet(stylesheet() if theme == "dark" else "")


def apply(prefs: Preferences, window: Any, theme: bool = True) -> None:
    """Put ``prefs`` into effect in a main window (form defaults, threads, and with
    ``theme`` the style sheet: at start-up the application has set it already)."""
    form = window.training_tab.form
    form.output_root = prefs.output_folder or None
    if prefs.device != "auto":
        form.prefer_device(prefs.device)
    form.refresh_workspace()
    apply_threads(prefs.threads)
    if theme:
        apply_theme(prefs.theme)


class PreferencesDialog(QDialog):
    """Edit the preferences; ``preferences()`` is the value shown."""

    def __init__(self, prefs: Preferences, settings_file: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.device_combo = QComboBox(self)
        for text, value in DEVICES:
            self.device_combo.addItem(text, value)
        self.threads_spin = QSpinBox(self)
        self.threads_spin.setRange(0, max(1, os.cpu_count() or 1))
        self.threads_spin.setSpecialValueText("automatic")
        self.threads_spin.setToolTip("CPU threads for training and inference (torch)")
        self.output_edit = QLineEdit(self)
        self.output_edit.setPlaceholderText(str(Path.home() / "vitdesk"))
        self.output_edit.setToolTip("Runs go to OUTPUT/runs/<date-time> when no workspace "
                                    "is open (a workspace keeps its runs inside it)")
        browse = QToolButton(self)
        browse.setText("…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit, 1)
        out_row.addWidget(browse)
        self.offline_box = QCheckBox("Offline: never use the network", self)
        self.offline_box.setChecked(True)
        self.offline_box.setEnabled(False)
        self.offline_box.setToolTip("vitdesk is always offline: hub weights come from the "
                                    "local cache only, nothing is downloaded or sent")
        self.theme_combo = QComboBox(self)
        for text, value in THEMES:
            self.theme_combo.addItem(text, value)
        form = QFormLayout()
        form.addRow("Default device", self.device_combo)
        form.addRow("CPU threads", self.threads_spin)
        form.addRow("Output folder", out_row)
        form.addRow("Network", self.offline_box)
        form.addRow("Theme", self.theme_combo)
        where = QLabel(f"Kept in {settings_file}. Custom window presets are edited in the "
                       "Windowing tab." if settings_file else "", self)
        where.setObjectName("hint")
        where.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(where)
        lay.addWidget(buttons)
        self.show_preferences(prefs)

    def show_preferences(self, prefs: Preferences) -> None:
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(prefs.device)))
        self.threads_spin.setValue(prefs.threads)
        self.output_edit.setText(prefs.output_folder)
        self.theme_combo.setCurrentIndex(max(0, self.theme_combo.findData(prefs.theme)))

    def preferences(self) -> Preferences:
        return Preferences(device=self.device_combo.currentData(),
                           threads=self.threads_spin.value(),
                           output_folder=self.output_edit.text().strip(),
                           theme=self.theme_combo.currentData())

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder for runs")
        if folder:
            self.output_edit.setText(folder)
