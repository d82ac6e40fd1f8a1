"""Dataset tab: classes, labels for series / slices / slice ranges, CSV import, counts.

Every change is written to the open workspace at once (each write is its own
committed SQLite transaction): there is no save button and nothing is lost if
the app closes. The training-input section (window choice with preview, patient
split) is :class:`~vitdesk.gui.tabs.training_input.TrainingInputPanel`.

Keyboard (anywhere in the main window, see :meth:`DatasetTab.install_shortcuts`):
    Ctrl+1..9          label the current slice with class 1..9
    Ctrl+Shift+1..9    label the whole series with class 1..9
    Ctrl+[ / Ctrl+]    mark the start / end of a slice range
    Ctrl+Alt+1..9      label the marked range with class 1..9
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vitdesk.errors import DataError
from vitdesk.gui.dialogs import show_error
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.suggest_panel import SuggestPanel
from vitdesk.gui.tabs.training_input import TrainingInputPanel, fit_table_height


class DatasetTab(QWidget):
    """Labelling and dataset definition over ``session.workspace``."""

    labels_changed = Signal(str)  # series key ("" = many)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.range_start: int | None = None
        self.range_end: int | None = None
        self._shortcuts: list[QShortcut] = []

        # --- workspace line
        self.ws_label = QLabel(self)
        self.ws_label.setWordWrap(True)
        self.new_ws_button = QPushButton("New workspace…", self)
        self.open_ws_button = QPushButton("Open workspace…", self)
        self.new_ws_button.clicked.connect(self._new_workspace)
        self.open_ws_button.clicked.connect(self._open_workspace)
        ws_row = QHBoxLayout()
        ws_row.addWidget(self.new_ws_button)
        ws_row.addWidget(self.open_ws_button)
        ws_row.addStretch(1)

        # --- classes
        self.class_list = QListWidget(self)
        self.class_list.setMaximumHeight(96)
        self.class_edit = QLineEdit(self)
        self.class_edit.setPlaceholderText("new class name, e.g. lesion")
        self.class_edit.returnPressed.connect(self._add_class_from_edit)
        self.add_class_button = QPushButton("Add", self)
        self.add_class_button.clicked.connect(self._add_class_from_edit)
        self.rename_class_button = QPushButton("Rename…", self)
        self.rename_class_button.clicked.connect(self._rename_selected)
        self.remove_class_button = QPushButton("Remove", self)
        self.remove_class_button.clicked.connect(self._remove_selected)
        classes_box = QGroupBox("Classes (Ctrl+N labels with class N)", self)
        cl = QGridLayout(classes_box)
        cl.addWidget(self.class_list, 0, 0, 1, 4)
        cl.addWidget(self.class_edit, 1, 0, 1, 2)
        cl.addWidget(self.add_class_button, 1, 2)
        cl.addWidget(self.rename_class_button, 2, 2)
        cl.addWidget(self.remove_class_button, 2, 3)
        self.import_csv_button = QPushButton("Import labels CSV…", self)
        self.import_csv_button.clicked.connect(self._import_csv_dialog)
        cl.addWidget(self.import_csv_button, 2, 0, 1, 2)

        # --- labelling
        self.class_combo = QComboBox(self)
        self.current_label = QLabel(self)
        self.current_label.setWordWrap(True)
        self.label_slice_button = QPushButton("Label slice", self)
        self.label_series_button = QPushButton("Label series", self)
        self.mark_start_button = QPushButton("Mark start", self)
        self.mark_end_button = QPushButton("Mark end", self)
        self.label_range_button = QPushButton("Label range", self)
        self.clear_slice_button = QPushButton("Clear slice", self)
        self.clear_series_button = QPushButton("Clear series", self)
        self.range_label = QLabel("Range: not marked", self)
        self.label_slice_button.clicked.connect(lambda: self.label_slice(self._combo_class()))
        self.label_series_button.clicked.connect(lambda: self.label_series(self._combo_class()))
        self.label_range_button.clicked.connect(lambda: self.label_range(self._combo_class()))
        self.mark_start_button.clicked.connect(self.mark_start)
        self.mark_end_button.clicked.connect(self.mark_end)
        self.clear_slice_button.clicked.connect(self.clear_slice)
        self.clear_series_button.clicked.connect(self.clear_series)
        label_box = QGroupBox("Label the open series", self)
        lf = QGridLayout(label_box)
        lf.addWidget(QLabel("Class"), 0, 0)
        lf.addWidget(self.class_combo, 0, 1, 1, 2)
        lf.addWidget(self.label_slice_button, 1, 0)
        lf.addWidget(self.label_series_button, 1, 1)
        lf.addWidget(self.clear_slice_button, 2, 0)
        lf.addWidget(self.clear_series_button, 2, 1)
        lf.addWidget(self.mark_start_button, 3, 0)
        lf.addWidget(self.mark_end_button, 3, 1)
        lf.addWidget(self.label_range_button, 3, 2)
        lf.addWidget(self.range_label, 4, 0, 1, 3)
        lf.addWidget(self.current_label, 5, 0, 1, 3)

        # --- counts
        self.counts_table = QTableWidget(self)
        self.counts_table.verticalHeader().setVisible(False)
        self.counts_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.Stretch)
        self.counts_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        counts_box = QGroupBox("Labelled slices per class and patient group", self)
        QVBoxLayout(counts_box).addWidget(self.counts_table)

        self.training_input = TrainingInputPanel(session, self)
        self.suggest_panel = SuggestPanel(session, self)  # run set by the main window

        body = QWidget(self)
        lay = QVBoxLayout(body)
        lay.addWidget(self.ws_label)
        lay.addLayout(ws_row)
        lay.addWidget(classes_box)
        lay.addWidget(label_box)
        lay.addWidget(counts_box)
        lay.addWidget(self.suggest_panel)
        lay.addWidget(self.training_input)
        lay.addStretch(1)
        self.scroll = scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        session.workspace_changed.connect(lambda _ws: self.refresh())
        session.viewer.slice_changed.connect(lambda _i: self._update_current())
        session.viewer.volume_changed.connect(lambda _v: self._on_volume())
        self.labels_changed.connect(lambda _k: self._after_label_change())
        self.labels_changed.connect(lambda _k: self.suggest_panel.mark_labelled())
        self.refresh()

    # ------------------------------------------------------------------ helpers
    @property
    def workspace(self) -> Any:
        return self.session.workspace

    def classes(self) -> list[str]:
        return self.workspace.classes() if self.workspace is not None else []

    def _series_key(self) -> str | None:
        return self.session.current_key if self.session.viewer.volume is not None else None

    def _combo_class(self) -> str | None:
        return self.class_combo.currentText() or None

    def _class_n(self, n: int) -> str | None:
        cls = self.classes()
        return cls[n - 1] if 1 <= n <= len(cls) else None

    def _run(self, fn, *args) -> bool:
        """Call a workspace write; show user errors instead of raising."""
        if self.workspace is None:
            self.session.message.emit("Open or create a workspace first: labels are kept there.")
            return False
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
            show_error(self, exc)
            return False
        return True

    def _in_workspace(self, key: str | None) -> bool:
        """Make sure the open series is indexed in the workspace (adds it if needed)."""
        if key is None or self.workspace is None:
            return False
        for attempt in range(2):
            try:
                self.workspace.get_series(key)
                return True
            except DataError:
                entry = self.session.library.entries.get(key)
                if entry is None or attempt:
                    break
                self.session.record_in_workspace([entry])
        self.session.message.emit("This series has no files on disk, so it cannot be "
                                  "labelled in a workspace.")
        return False

    # ------------------------------------------------------------------ classes
    def add_class(self, name: str) -> None:
        if self._run(self.workspace.add_class if self.workspace else None, name):
            self.refresh()

    def rename_class(self, old: str, new: str) -> None:
        if self._run(self.workspace.rename_class if self.workspace else None, old, new):
            self.refresh()
            self.labels_changed.emit("")

    def remove_class(self, name: str) -> None:
        if self._run(self.workspace.remove_class if self.workspace else None, name):
            self.refresh()
            self.labels_changed.emit("")

    def _add_class_from_edit(self) -> None:
        name = self.class_edit.text().strip()
        if name:
            self.add_class(name)
            self.class_edit.clear()

    def _selected_class(self) -> str | None:
        item = self.class_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _rename_selected(self) -> None:
        old = self._selected_class()
        if old:
            new, ok = QInputDialog.getText(self, "Rename class", "New name:", text=old)
            if ok and new.strip():
                self.rename_class(old, new.strip())

    def _remove_selected(self) -> None:
        name = self._selected_class()
        if name:
            self.remove_class(name)

    # ------------------------------------------------------------------ labels
    def label_slice(self, label: str | None) -> bool:
        key = self._series_key()
        if label is None or not self._in_workspace(key):
            return False
        ok = self._run(self.workspace.set_slice_label, key, self.session.viewer.index, label)
        if ok:
            self.labels_changed.emit(key)
        return ok

    def label_series(self, label: str | None) -> bool:
        key = self._series_key()
        if label is None or not self._in_workspace(key):
            return False
        ok = self._run(self.workspace.set_series_label, key, label)
        if ok:
            self.labels_changed.emit(key)
        return ok

    def mark_start(self) -> None:
        self.range_start = self.session.viewer.index
        self._update_range()

    def mark_end(self) -> None:
        self.range_end = self.session.viewer.index
        self._update_range()

    def marked_range(self) -> tuple[int, int] | None:
        """(first, last) slice of the marked range, inclusive, in either marking order."""
        if self.range_start is None or self.range_end is None:
            return None
        return (min(self.range_start, self.range_end), max(self.range_start, self.range_end))

    def label_range(self, label: str | None) -> bool:
        key, rng = self._series_key(), self.marked_range()
        if label is None or rng is None or not self._in_workspace(key):
            if rng is None:
                self.session.message.emit("Mark the start and end of the range first.")
            return False
        ok = self._run(self.workspace.set_slice_range_label, key, rng[0], rng[1] + 1, label)
        if ok:
            self.labels_changed.emit(key)
        return ok

    def clear_slice(self) -> None:
        key = self._series_key()
        if key and self._run(self.workspace.clear_label if self.workspace else None, key,
                             self.session.viewer.index):
            self.labels_changed.emit(key)

    def clear_series(self) -> None:
        key = self._series_key()
        if key and self._run(self.workspace.clear_label if self.workspace else None, key):
            self.labels_changed.emit(key)

    def import_labels_csv(self, path: str | Path) -> Any:
        """Apply a labels CSV; returns the workspace's LabelImport summary (or None)."""
        if self.workspace is None:
            self.session.message.emit("Open or create a workspace first: labels are kept there.")
            return None
        try:
            result = self.workspace.import_labels_csv(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
            show_error(self, exc)
            return None
        text = (f"Labels imported: {result.series_labels} series, {result.slice_labels} slices"
                + (f"; {len(result.unmatched)} rows matched nothing imported"
                   if result.unmatched else "."))
        self.session.message.emit(text)
        self.refresh()
        self.labels_changed.emit("")
        return result

    def _import_csv_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import labels", "", "CSV (*.csv)")
        if path:
            self.import_labels_csv(path)

    # ------------------------------------------------------------------ shortcuts
    def install_shortcuts(self, host: QWidget) -> None:
        """Labelling keys that work wherever the focus is in ``host``'s window."""
        def add(seq: str, slot) -> None:
            sc = QShortcut(QKeySequence(seq), host)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            self._shortcuts.append(sc)

        for n in range(1, 10):
            add(f"Ctrl+{n}", lambda n=n: self.label_slice(self._class_n(n)))
            add(f"Ctrl+Shift+{n}", lambda n=n: self.label_series(self._class_n(n)))
            add(f"Ctrl+Alt+{n}", lambda n=n: self.label_range(self._class_n(n)))
        add("Ctrl+[", self.mark_start)
        add("Ctrl+]", self.mark_end)

    # ------------------------------------------------------------------ display
    def refresh(self) -> None:
        ws = self.workspace
        has_ws = ws is not None
        if has_ws:
            self.ws_label.setText(f"Workspace: {ws.folder}\nEvery change is saved at once.")
        else:
            self.ws_label.setText("No workspace open. Labels, classes and splits are kept in "
                                  "a workspace folder: create one (the open series are added) "
                                  "or open an existing one.")
        for w in (self.class_list, self.class_edit, self.add_class_button,
                  self.rename_class_button, self.remove_class_button, self.import_csv_button,
                  self.class_combo, self.label_slice_button, self.label_series_button,
                  self.mark_start_button, self.mark_end_button, self.label_range_button,
                  self.clear_slice_button, self.clear_series_button):
            w.setEnabled(has_ws)
        classes = self.classes()
        current = self.class_combo.currentText()
        self.class_list.clear()
        self.class_combo.clear()
        for n, name in enumerate(classes, start=1):
            hint = f"   Ctrl+{n}" if n <= 9 else ""
            self.class_list.addItem(f"{name}{hint}")
            self.class_list.item(n - 1).setData(Qt.ItemDataRole.UserRole, name)
            self.class_combo.addItem(name)
        if current in classes:
            self.class_combo.setCurrentText(current)
        self._update_counts()
        self._update_current()
        self.training_input.refresh()

    def _on_volume(self) -> None:
        self.range_start = self.range_end = None
        self._update_range()
        self._update_current()

    def _after_label_change(self) -> None:
        self._update_counts()
        self._update_current()

    def _update_range(self) -> None:
        a, b = (("—" if v is None else str(v + 1)) for v in (self.range_start, self.range_end))
        self.range_label.setText(f"Range: slices {a} to {b}")

    def _update_current(self) -> None:
        key = self._series_key()
        if self.workspace is None or key is None:
            self.current_label.setText("")
            return
        i = self.session.viewer.index
        try:
            whole = self.workspace.series_label(key)
            own = self.workspace.slice_labels(key).get(i)
        except Exception:  # noqa: BLE001 - the series may not be indexed yet
            whole, own = None, None
        self.current_label.setText(
            f"Series label: {whole or '—'}    slice {i + 1}: {own or whole or 'unlabelled'}"
            + (" (own label)" if own else ""))

    def _update_counts(self) -> None:
        t = self.counts_table
        t.clear()
        ws = self.workspace
        if ws is None:
            t.setRowCount(0)
            t.setColumnCount(0)
            return
        classes = ws.classes()
        rows: list[tuple[str, dict[str, int]]] = [("All", ws.counts_by_class())]
        for attr, title in (("sex", "Sex"), ("age", "Age")):
            for group, counts in ws.counts_by_group(attr).items():
                rows.append((f"{title} {group}", counts))
        per_patient = ws.counts_by_group("patient")
        rows.append(("Patients", {c: sum(1 for v in per_patient.values() if v.get(c))
                                  for c in classes}))
        t.setColumnCount(len(classes) + 1)
        t.setHorizontalHeaderLabels(["Group", *classes])
        t.setRowCount(len(rows))
        for r, (name, counts) in enumerate(rows):
            t.setItem(r, 0, QTableWidgetItem(name))
            for c, cls in enumerate(classes, start=1):
                if counts:
                    item = QTableWidgetItem(str(counts.get(cls, 0)))
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                    t.setItem(r, c, item)
        fit_table_height(t)

    def counts(self) -> dict[str, int]:
        return self.workspace.counts_by_class() if self.workspace is not None else {}

    # ------------------------------------------------------------------ dialogs
    def _new_workspace(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder for the workspace")
        if folder:
            self.session.new_workspace(folder)

    def _open_workspace(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a workspace folder")
        if folder:
            self.session.open_workspace(folder)

