"""Windowing tab: presets with their reading task, W/L spin boxes, custom presets,
CLAHE, reset to the file's own window, and the patient-identifier toggle.

Every control writes to the shared :class:`WindowState` / :class:`ViewerState`
and redraws from their signals, so the viewer's mouse drag, the number keys and
this tab always agree.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings, QSignalBlocker, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vitdesk.gui import settings as gui_settings
from vitdesk.gui.resources import icon, preset_keys
from vitdesk.gui.state import (
    MAX_LEVEL,
    MAX_WIDTH,
    MIN_LEVEL,
    MIN_WIDTH,
    ViewerState,
    WindowState,
    is_ct,
)

_KEY_ROLE = Qt.ItemDataRole.UserRole


class WindowingTab(QWidget):
    """Preset list + W/L controls bound two-way to a :class:`WindowState`."""

    def __init__(self, window: WindowState, viewer: ViewerState, settings: QSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.window, self.viewer, self.settings = window, viewer, settings
        window.custom = gui_settings.custom_presets(settings)

        self.presets = QTreeWidget(self)
        self.presets.setColumnCount(3)
        self.presets.setHeaderLabels(["Key · Preset", "W / L", "Reading task"])
        self.presets.setRootIsDecorated(False)
        self.presets.setAlternatingRowColors(True)
        self.presets.setColumnWidth(0, 118)
        self.presets.setColumnWidth(1, 88)
        self.presets.itemClicked.connect(self._on_item)
        self.presets.itemActivated.connect(self._on_item)

        self.width_spin = QDoubleSpinBox(self)
        self.width_spin.setRange(MIN_WIDTH, MAX_WIDTH)
        self.width_spin.setDecimals(0)
        self.width_spin.setSuffix(" HU")
        self.width_spin.setKeyboardTracking(False)
        self.level_spin = QDoubleSpinBox(self)
        self.level_spin.setRange(MIN_LEVEL, MAX_LEVEL)
        self.level_spin.setDecimals(0)
        self.level_spin.setSuffix(" HU")
        self.level_spin.setKeyboardTracking(False)
        self.width_spin.valueChanged.connect(window.set_width)
        self.level_spin.valueChanged.connect(window.set_level)

        self.reset_button = QPushButton(icon("reset"), "Reset to file's window", self)
        self.reset_button.setToolTip("Window stored in the DICOM file (Window Center/Width), R")
        self.reset_button.clicked.connect(window.reset)
        self.default_label = QLabel(self)

        self.add_button = QPushButton("Save as preset…", self)
        self.rename_button = QPushButton("Rename…", self)
        self.delete_button = QPushButton("Delete", self)
        self.add_button.clicked.connect(self._add_custom)
        self.rename_button.clicked.connect(self._rename_custom)
        self.delete_button.clicked.connect(self._delete_custom)

        self.clahe_box = QCheckBox("CLAHE (adaptive contrast, display only)", self)
        self.clahe_box.toggled.connect(window.set_clahe)
        self.phi_box = QCheckBox("Show patient identifiers", self)
        self.phi_box.setToolTip("Names, IDs and dates are hidden unless you ask for them; "
                                "they never go into reports, logs or files.")
        self.phi_box.toggled.connect(viewer.set_show_phi)

        wl = QGroupBox("Window", self)
        form = QFormLayout(wl)
        form.addRow("Width", self.width_spin)
        form.addRow("Level", self.level_spin)
        form.addRow(self.reset_button)
        form.addRow(self.default_label)

        custom = QHBoxLayout()
        custom.addWidget(self.add_button)
        custom.addWidget(self.rename_button)
        custom.addWidget(self.delete_button)
        custom.addStretch(1)

        display = QGroupBox("Display", self)
        dl = QVBoxLayout(display)
        dl.addWidget(self.clahe_box)
        dl.addWidget(self.phi_box)

        hint = QLabel("Left-drag on the image: right = wider, up = higher level. "
                      "Keys 1-9 apply the presets, R resets.", self)
        hint.setWordWrap(True)
        hint.setObjectName("placeholder")
        hint.setStyleSheet("padding: 4px;")

        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Presets", objectName="sectionTitle"))
        lay.addWidget(self.presets, 1)
        lay.addLayout(custom)
        lay.addWidget(wl)
        lay.addWidget(display)
        lay.addWidget(hint)

        window.scale_changed.connect(self._sync_scale)
        window.changed.connect(self._sync_spins)
        window.preset_changed.connect(self._sync_selection)
        window.clahe_changed.connect(self._sync_clahe)
        viewer.show_phi_changed.connect(self._sync_phi)
        viewer.volume_changed.connect(self._on_volume)
        self._fill()
        self._sync_spins(window.width, window.level)
        self._on_volume(viewer.volume)

    # ------------------------------------------------------------------ list
    def _fill(self) -> None:
        self.presets.clear()
        for n, p in enumerate(preset_keys(), start=1):
            key = p.name.lower().replace(" ", "_")
            item = QTreeWidgetItem([f"{n}  {p.name}", f"{p.width:g} / {p.level:g}", p.viewer])
            item.setData(0, _KEY_ROLE, key)
            item.setToolTip(2, p.viewer)
            self.presets.addTopLevelItem(item)
        for name, (w, lv) in sorted(self.window.custom.items()):
            item = QTreeWidgetItem([f"   {name}", f"{w:g} / {lv:g}", "custom preset"])
            item.setData(0, _KEY_ROLE, f"custom:{name}")
            self.presets.addTopLevelItem(item)
        self._sync_selection(self.window.preset)

    def item_for(self, key: str) -> QTreeWidgetItem | None:
        for i in range(self.presets.topLevelItemCount()):
            item = self.presets.topLevelItem(i)
            if item.data(0, _KEY_ROLE) == key:
                return item
        return None

    def _on_item(self, item: QTreeWidgetItem, _col: int = 0) -> None:
        self.window.apply_preset(item.data(0, _KEY_ROLE))

    # ------------------------------------------------------------------ state -> widgets
    def _sync_spins(self, width: float, level: float) -> None:
        with QSignalBlocker(self.width_spin), QSignalBlocker(self.level_spin):
            self.width_spin.setValue(width)
            self.level_spin.setValue(level)

    def _sync_scale(self) -> None:
        """Unit and ranges of the spin boxes follow the series (HU for CT, else values)."""
        min_w, max_w, min_l, max_l = self.window.limits
        # values spanning a few units (PET, some MR maps) need decimals to be adjusted
        decimals = 0 if max_w >= 1000 and min_w >= 1 else 3
        with QSignalBlocker(self.width_spin), QSignalBlocker(self.level_spin):
            for spin, lo, hi in ((self.width_spin, min_w, max_w),
                                 (self.level_spin, min_l, max_l)):
                spin.setDecimals(decimals)
                spin.setRange(lo, hi)
                spin.setSuffix(f" {self.window.unit}")
        self._sync_spins(self.window.width, self.window.level)

    def _sync_selection(self, key: str) -> None:
        item = self.item_for(key) if key else None
        with QSignalBlocker(self.presets):
            self.presets.setCurrentItem(item)
            if item is None:
                self.presets.clearSelection()
        custom = bool(key.startswith("custom:"))
        self.rename_button.setEnabled(custom)
        self.delete_button.setEnabled(custom)

    def _sync_clahe(self, on: bool) -> None:
        with QSignalBlocker(self.clahe_box):
            self.clahe_box.setChecked(on)

    def _sync_phi(self, on: bool) -> None:
        with QSignalBlocker(self.phi_box):
            self.phi_box.setChecked(on)

    def _on_volume(self, volume) -> None:
        if volume is not None and volume.default_window:
            w, lv = volume.default_window
            self.default_label.setText(f"File's window: W {w:g} / L {lv:g}")
        elif volume is not None and not is_ct(volume):
            w, lv = self.window.default
            self.default_label.setText(f"No window in the file; reset uses the 1st-99th "
                                       f"percentile of its values: W {w:.4g} / L {lv:.4g}")
        else:
            w, lv = self.window.default
            self.default_label.setText(f"No window in the file; reset uses W {w:g} / L {lv:g}")

    # ------------------------------------------------------------------ custom presets
    def add_custom(self, name: str) -> str:
        """Save the current window as custom preset ``name``; returns its key."""
        name = name.strip()
        self.window.custom[name] = (self.window.width, self.window.level)
        self._save()
        key = f"custom:{name}"
        self.window.set_window(self.window.width, self.window.level, key)
        self._fill()
        return key

    def rename_custom(self, old: str, new: str) -> None:
        new = new.strip()
        if not new or old not in self.window.custom:
            return
        self.window.custom[new] = self.window.custom.pop(old)
        self._save()
        self.window.set_window(self.window.width, self.window.level, f"custom:{new}")
        self._fill()

    def delete_custom(self, name: str) -> None:
        self.window.custom.pop(name, None)
        self._save()
        self.window.set_window(self.window.width, self.window.level, "")
        self._fill()

    def _save(self) -> None:
        gui_settings.save_custom_presets(self.settings, self.window.custom)

    def _add_custom(self) -> None:
        name, ok = QInputDialog.getText(self, "Save window as preset", "Preset name:")
        if ok and name.strip():
            self.add_custom(name)

    def _current_custom(self) -> str | None:
        key = self.window.preset
        return key[7:] if key.startswith("custom:") else None

    def _rename_custom(self) -> None:
        old = self._current_custom()
        if old is None:
            return
        new, ok = QInputDialog.getText(self, "Rename preset", "New name:", text=old)
        if ok:
            self.rename_custom(old, new)

    def _delete_custom(self) -> None:
        name = self._current_custom()
        if name is not None:
            self.delete_custom(name)
