"""Study browser: patient > study > series tree with safe metadata and thumbnails.

Patients are shown by their short safe key, sex and age; names and IDs appear
only while "Show patient identifiers" is on (``ViewerState.show_phi``).

The search box filters as you type: every word must appear in the series' line,
its key, its study or its patient's line (names only while identifiers are
shown); the modality box keeps one modality. ``KEY#N`` (as the Inference and
Fairness tables name a slice) and Enter open slice N of that series.
"""

from __future__ import annotations

import re

import numpy as np
from PySide6.QtCore import QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from vitdesk.gui.library import Library, SeriesEntry
from vitdesk.gui.state import ViewerState

KEY_ROLE = Qt.ItemDataRole.UserRole + 1
KIND_ROLE = Qt.ItemDataRole.UserRole + 2
ALL_MODALITIES = "All modalities"
_SLICE_REF = re.compile(r"^\s*(\w{4,})\s*#\s*(\d+)\s*$")  # "3ab31538#9"


def parse_slice_ref(text: str) -> tuple[str, int] | None:
    """``"KEY#N"`` -> (key prefix, N) with N counted from 1, else None."""
    m = _SLICE_REF.match(text or "")
    return (m.group(1).lower(), int(m.group(2))) if m else None


def _pixmap(thumb: np.ndarray) -> QPixmap:
    u8 = np.ascontiguousarray(thumb, dtype=np.uint8)
    h, w = u8.shape
    img = QImage(u8.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QPixmap.fromImage(img)


def _age(text: str | None) -> str:
    if not text:
        return ""
    t = str(text).strip()
    if len(t) == 4 and t[:3].isdigit():  # DICOM "045Y" -> "45y"
        return f"{int(t[:3])}{t[3].lower()}"
    return t


class StudyBrowser(QWidget):
    """Tree of the library's series; emits ``series_selected(key)`` on selection."""

    series_selected = Signal(str)
    slice_requested = Signal(str, int)  # key (or prefix), 0-based axial index

    def __init__(self, library: Library, viewer: ViewerState,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library, self.viewer = library, viewer
        self.model = QStandardItemModel(self)
        self.model.setHorizontalHeaderLabels(["Series", "Slices"])
        self.tree = QTreeView(self)
        self.tree.setModel(self.model)
        self.tree.setIconSize(QSize(48, 48))
        self.tree.setIndentation(12)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setUniformRowHeights(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().resizeSection(1, 52)
        self.tree.header().setSectionResizeMode(0, self.tree.header().ResizeMode.Stretch)
        self.tree.selectionModel().currentChanged.connect(self._on_current)
        self.empty = QLabel("Open a folder, a file or a workspace,\nor drop files here.", self)
        self.empty.setObjectName("placeholder")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search series, keys, patients… (KEY#N: slice N)")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Every word must match. KEY#N and Enter open slice N of "
                               "that series (as the Inference and Fairness tables name it).")
        self.search.textChanged.connect(lambda _t: self.apply_filter())
        self.search.returnPressed.connect(self._on_search_enter)
        self.modality_combo = QComboBox(self)
        self.modality_combo.addItem(ALL_MODALITIES)
        self.modality_combo.currentIndexChanged.connect(lambda _i: self.apply_filter())
        self.count_label = QLabel("", self)
        self.count_label.setObjectName("hint")
        filter_row = QHBoxLayout()
        filter_row.setContentsMargins(0, 0, 0, 0)
        filter_row.addWidget(self.search, 1)
        filter_row.addWidget(self.modality_combo)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(filter_row)
        lay.addWidget(self.count_label)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.empty)
        self.tree.hide()
        self._patients: dict[str, QStandardItem] = {}
        self._studies: dict[tuple[str, str], QStandardItem] = {}
        self._series: dict[str, QStandardItem] = {}
        self._quiet = False  # selecting to mirror the viewer must not reload the series
        library.entries_added.connect(self.add_entries)
        library.cleared.connect(self.clear)
        library.thumbnail_ready.connect(self._on_thumbnail)
        viewer.show_phi_changed.connect(lambda _on: (self._relabel_patients(),
                                                     self.apply_filter()))

    def clear(self) -> None:
        self.model.removeRows(0, self.model.rowCount())
        self._patients.clear()
        self._studies.clear()
        self._series.clear()
        self.modality_combo.blockSignals(True)
        self.modality_combo.clear()
        self.modality_combo.addItem(ALL_MODALITIES)
        self.modality_combo.blockSignals(False)
        self.count_label.setText("")
        self.tree.hide()
        self.empty.show()

    def add_entries(self, entries: list[SeriesEntry]) -> None:
        for e in entries:
            patient = self._patients.get(e.patient_key)
            if patient is None:
                patient = QStandardItem()
                patient.setData(e.patient_key, KEY_ROLE)
                patient.setData("patient", KIND_ROLE)
                patient.setData(e, Qt.ItemDataRole.UserRole + 3)
                self.model.appendRow([patient, QStandardItem("")])
                self._patients[e.patient_key] = patient
                self._label_patient(patient)
            skey = (e.patient_key, e.study_key)
            study = self._studies.get(skey)
            if study is None:
                study = QStandardItem(e.study_label)
                study.setData("study", KIND_ROLE)
                patient.appendRow([study, QStandardItem("")])
                self._studies[skey] = study
            text = f"{e.modality or '?'} · {e.description or 'no description'}"
            item = QStandardItem(text)
            item.setData(e.key, KEY_ROLE)
            item.setData("series", KIND_ROLE)
            tip = [f"Series {e.key}", f"{e.n_slices} slices"]
            if e.meta.get("SliceThickness"):
                tip.append(f"thickness {float(e.meta['SliceThickness']):g} mm")
            item.setToolTip(" · ".join(tip))
            if e.thumbnail is not None:
                item.setIcon(QIcon(_pixmap(e.thumbnail)))
            count = QStandardItem(str(e.n_slices))
            count.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            study.appendRow([item, count])
            self._series[e.key] = item
            modality = e.modality or "?"
            if self.modality_combo.findText(modality) < 0:
                self.modality_combo.addItem(modality)
        self.empty.hide()
        self.tree.show()
        self.tree.expandAll()
        self.apply_filter()
        if self.tree.currentIndex().isValid() is False and entries:
            self.select(entries[0].key)

    def _on_thumbnail(self, key: str) -> None:
        item = self._series.get(key)
        entry = self.library.entries.get(key)
        if item is not None and entry is not None and entry.thumbnail is not None:
            item.setIcon(QIcon(_pixmap(entry.thumbnail)))

    def _label_patient(self, item: QStandardItem) -> None:
        e: SeriesEntry = item.data(Qt.ItemDataRole.UserRole + 3)
        bits = [f"Patient {e.patient_key[:6]}"]
        if self.viewer.show_phi:
            name = e.phi.get("PatientName")
            pid = e.phi.get("PatientID")
            bits = [str(x) for x in (name, pid) if x] or bits
        demo = " ".join(x for x in (e.sex or "", _age(e.age)) if x)
        item.setText(" · ".join(bits + ([demo] if demo else [])))

    def _relabel_patients(self) -> None:
        for item in self._patients.values():
            self._label_patient(item)

    # ------------------------------------------------------------------ search and filter
    def apply_filter(self) -> int:
        """Hide the rows that do not match the search words and modality; returns the
        number of series shown."""
        text = self.search.text()
        ref = parse_slice_ref(text)
        words = [ref[0]] if ref and self._key_matches(ref[0]) else text.lower().split()
        modality = self.modality_combo.currentText()
        shown = 0
        root = self.model.invisibleRootItem()
        for pi in range(root.rowCount()):
            patient = root.child(pi)
            patient_text = patient.text().lower() + " " + str(patient.data(KEY_ROLE)).lower()
            any_study = False
            for si in range(patient.rowCount()):
                study = patient.child(si)
                any_series = False
                for ri in range(study.rowCount()):
                    item = study.child(ri)
                    entry = self.library.entries.get(item.data(KEY_ROLE))
                    hay = " ".join((item.text(), str(item.data(KEY_ROLE)), study.text(),
                                    patient_text)).lower()
                    ok = all(w in hay for w in words)
                    if modality != ALL_MODALITIES:
                        ok = ok and entry is not None and (entry.modality or "?") == modality
                    self.tree.setRowHidden(ri, study.index(), not ok)
                    any_series |= ok
                    shown += ok
                self.tree.setRowHidden(si, patient.index(), not any_series)
                any_study |= any_series
            self.tree.setRowHidden(pi, QModelIndex(), not any_study)
        total = len(self._series)
        filtering = bool(words) or modality != ALL_MODALITIES
        self.count_label.setText(f"{shown} of {total} series" if filtering and total else "")
        self.count_label.setVisible(bool(self.count_label.text()))
        return shown

    def visible_keys(self) -> list[str]:
        """Keys of the series the filter shows, in tree order."""
        return [k for k, item in self._series.items()
                if not self.tree.isRowHidden(item.row(), item.parent().index())
                and not self.tree.isRowHidden(item.parent().row(),
                                              item.parent().parent().index())]

    def _key_matches(self, prefix: str) -> bool:
        return any(k.lower().startswith(prefix) for k in self._series)

    def _on_search_enter(self) -> None:
        ref = parse_slice_ref(self.search.text())
        if ref is not None and self._key_matches(ref[0]):
            self.slice_requested.emit(ref[0], max(0, ref[1] - 1))
            return
        keys = self.visible_keys()
        if len(keys) == 1:  # one match: open it
            self.select(keys[0])

    def select(self, key: str | None, notify: bool = True) -> None:
        """Highlight series ``key`` (None: nothing); ``notify=False`` only mirrors the
        viewer and emits nothing."""
        item = self._series.get(key) if key is not None else None
        if item is None and key is not None:
            return
        index = item.index() if item is not None else QModelIndex()
        if index == self.tree.currentIndex():
            return
        self._quiet = not notify
        try:
            self.tree.setCurrentIndex(index)
        finally:
            self._quiet = False

    def current_key(self) -> str | None:
        idx = self.tree.currentIndex()
        if not idx.isValid():
            return None
        idx = idx.siblingAtColumn(0)
        if idx.data(KIND_ROLE) == "series":
            return idx.data(KEY_ROLE)
        return None

    def series_keys(self) -> list[str]:
        return list(self._series)

    def _on_current(self, current: QModelIndex, _prev: QModelIndex) -> None:
        if self._quiet:
            return
        idx = current.siblingAtColumn(0)
        if idx.data(KIND_ROLE) == "series":
            self.series_selected.emit(idx.data(KEY_ROLE))
