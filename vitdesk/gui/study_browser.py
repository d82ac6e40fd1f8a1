"""Study browser: patient > study > series tree with safe metadata and thumbnails.

Patients are shown by their short safe key, sex and age; names and IDs appear
only while "Show patient identifiers" is on (``ViewerState.show_phi``).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QLabel, QTreeView, QVBoxLayout, QWidget

from vitdesk.gui.library import Library, SeriesEntry
from vitdesk.gui.state import ViewerState

KEY_ROLE = Qt.ItemDataRole.UserRole + 1
KIND_ROLE = Qt.ItemDataRole.UserRole + 2


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
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
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
        viewer.show_phi_changed.connect(lambda _on: self._relabel_patients())

    def clear(self) -> None:
        self.model.removeRows(0, self.model.rowCount())
        self._patients.clear()
        self._studies.clear()
        self._series.clear()
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
        self.empty.hide()
        self.tree.show()
        self.tree.expandAll()
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
