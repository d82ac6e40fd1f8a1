"""Pieces shared by the analysis tabs: data-source chooser, tables, number formats."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vitdesk.errors import ConfigError

HINT_STYLE = "color: #9aa3ab;"
# plot colours of the dark theme (as the Training tab's curves)
BACKGROUND = "#0f1114"
AXIS = "#7d848c"
ACCENT = "#4a9eda"
AMBER = "#e0a040"
GREEN = "#6cc070"
PURPLE = "#b48ee0"
RED = "#e06c6c"
WARN_COLOUR = "#e0a040"
# predictions outside what the model was trained on: grey, never a confident colour
OUTSIDE_COLOUR = "#7a7f86"


def run_or_cancel(parent: QWidget, task: Any, start: Any) -> None:
    """A Run button's click: cancel the running ``task``, else call ``start`` (errors shown)."""
    if task is not None and task.is_running():
        task.cancel()
        return
    try:
        start()
    except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
        from vitdesk.gui.dialogs import show_error

        show_error(parent, exc)


def hint(text: str = "", parent: QWidget | None = None) -> QLabel:
    """A small grey, word-wrapped explanatory label."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setStyleSheet(HINT_STYLE)
    return label


def scroll_layout(tab: QWidget, min_body_height: int = 0) -> QVBoxLayout:
    """Give ``tab`` a vertical scroll area and return the layout of its content.

    The tabs share a stack whose minimum size is the largest tab's: without a scroll
    area a tall tab would force a tall main window on small screens.
    """
    area = QScrollArea(tab)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget(area)
    if min_body_height:
        body.setMinimumHeight(min_body_height)
    area.setWidget(body)
    outer = QVBoxLayout(tab)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return QVBoxLayout(body)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table cell; NaN/None as an en dash."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def fmt_ci(est: Any, digits: int = 2) -> str:
    """``value [lo, hi]`` of an Estimate (or its dict form)."""
    d = est if isinstance(est, dict) else {"value": est.value, "lo": est.lo, "hi": est.hi}
    v, lo, hi = d["value"], d["lo"], d["hi"]
    if v is None or not math.isfinite(float(v)):
        return "–"
    if lo is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return fmt(v, digits)
    return f"{float(v):.{digits}f} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    """Comma-separated numbers (fractions like 1/255 allowed); ConfigError naming the field."""
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                a, b = part.split("/", 1)
                out.append(float(a) / float(b))
            else:
                out.append(float(part))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{name}: '{part}' is not a number; use e.g. 0, 10, 25") from None
    return tuple(out)


def make_table(headers: Sequence[str], parent: QWidget | None = None) -> QTableWidget:
    """A read-only, row-selecting table with the given headers."""
    t = QTableWidget(0, len(headers), parent)
    t.setHorizontalHeaderLabels(list(headers))
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(22)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    t.setAlternatingRowColors(True)
    return t


def fill_table(table: QTableWidget, rows: Sequence[Sequence[Any]],
               warn_rows: Sequence[int] = (), tooltips: Sequence[str] | None = None) -> None:
    """Replace the table's rows; numbers right-aligned; ``warn_rows`` drawn in amber."""
    from PySide6.QtGui import QColor

    table.setRowCount(len(rows))
    warn = set(warn_rows)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            text = value if isinstance(value, str) else fmt(value)
            item = QTableWidgetItem(text)
            if not isinstance(value, str) or text[:1].isdigit() or text[:1] in "-–":
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if r in warn:
                item.setForeground(QColor(WARN_COLOUR))
            if tooltips is not None and tooltips[r]:
                item.setToolTip(tooltips[r])
            table.setItem(r, c, item)


def table_values(table: QTableWidget) -> list[list[str]]:
    """The text of every cell (tests, CSV export)."""
    return [[table.item(r, c).text() if table.item(r, c) else ""
             for c in range(table.columnCount())] for r in range(table.rowCount())]


class SourceChooser(QWidget):
    """Evaluation data: the run's test (or validation) split, or any dataset source."""

    changed = Signal()

    SPLITS = (("Run's test split", "test"), ("Run's validation split", "val"))

    def __init__(self, parent: QWidget | None = None, with_series: bool = False) -> None:
        super().__init__(parent)
        self.combo = QComboBox(self)
        if with_series:
            self.combo.addItem("Open series (every axial slice)", ("split", "series"))
        for text, split in self.SPLITS:
            self.combo.addItem(text, ("split", split))
        self.combo.addItem("Other data source…", ("browse", ""))
        self.combo.setToolTip("Slices with labels to evaluate on. Other sources: a folder of "
                              "DICOM series with labels.csv, a class-folder tree, a manifest "
                              "CSV or a workspace.")
        self.combo.activated.connect(self._on_activated)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("Data", self))
        lay.addWidget(self.combo, 1)
        self._last = 0

    def _on_activated(self, index: int) -> None:
        kind, value = self.combo.itemData(index)
        if kind == "browse":
            folder = QFileDialog.getExistingDirectory(self, "Choose a labelled data source")
            if not folder:
                self.combo.setCurrentIndex(self._last)
                return
            self.set_source(folder)
            return
        self._last = index
        self.changed.emit()

    def set_source(self, src: str) -> None:
        """Use dataset source ``src`` (added to the list and selected)."""
        idx = self.combo.findData(("src", src))
        if idx < 0:
            self.combo.insertItem(self.combo.count() - 1, f"Source: {src}", ("src", src))
            idx = self.combo.count() - 2
        self.combo.setCurrentIndex(idx)
        self._last = idx
        self.changed.emit()

    def value(self) -> tuple[str | None, str]:
        """(source path or None, split name; "series" means the series in the viewer)."""
        kind, value = self.combo.currentData()
        if kind == "src":
            return value, "test"
        if kind == "split":
            return None, value
        return None, "test"

    def describe(self) -> str:
        src, split = self.value()
        if split == "series":
            return "the open series"
        return src or f"the run's {split} split"


def finite(values: Sequence[float]) -> np.ndarray:
    """Values as float array with non-finite entries replaced by NaN."""
    a = np.asarray(values, dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def trust_html(pred: Any) -> str:
    """The trust cues of a :class:`~vitdesk.analysis.inference.SlicePredictions` as a few
    lines of rich text: shift verdict (amber and first when out of distribution), the
    conformal sets ("refer" count) and the calibration."""
    import html

    lines = []
    shift = html.escape(pred.shift_text(), quote=False)
    if pred.out_of_distribution:
        lines.append(f"<b style='color:{WARN_COLOUR}'>⚠ Shift: {shift}. Do not rely on "
                     "these predictions.</b>")
    else:
        lines.append(f"Shift: {shift}.")
    refer = pred.refer
    conf = html.escape(pred.conformal_text, quote=False)
    if refer is not None:
        n_ref = int(refer.sum())
        what = ("refer" if n_ref else "no slice to refer") if len(refer) == 1 else \
            f"{n_ref} of {len(refer)} slices to refer"
        lines.append(f"Conformal: {what}; {conf}.")
    else:
        lines.append(f"Conformal: {conf}.")
    lines.append(f"Calibration: {html.escape(pred.calibration_text, quote=False)}.")
    return "<br>".join(lines)
