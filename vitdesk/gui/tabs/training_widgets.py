"""Small widgets of the Training form: a learning-rate box and the recipe's stage table."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHeaderView,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from vitdesk.config import StageConfig

UNFREEZE_CHOICES = ("head", "top:2", "top:4", "top:6", "all")


class SciSpinBox(QDoubleSpinBox):
    """A learning-rate box: shows ``3e-04``, accepts any float, steps by x2 / /2."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        self.setRange(1e-9, 10.0)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt naming
        short = f"{value:.0e}"
        return short if math.isclose(float(short), value, rel_tol=1e-9) else f"{value:.2e}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):  # noqa: D102
        try:
            v = float(text)
            ok = math.isfinite(v) and v > 0
            return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate,
                    text, pos)
        except ValueError:
            return QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802
        self.setValue(self.value() * (2.0 ** steps))


def spin_box(parent: QWidget, lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    s = QSpinBox(parent)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s


def dspin_box(parent: QWidget, lo: float, hi: float, value: float, step: float,
           decimals: int = 2) -> QDoubleSpinBox:
    s = QDoubleSpinBox(parent)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(decimals)
    s.setValue(value)
    return s


def combo_box(parent: QWidget, items: list[tuple[str, Any]]) -> QComboBox:
    c = QComboBox(parent)
    for text, data in items:
        c.addItem(text, data)
    return c


def select_data(combo: QComboBox, data: Any) -> None:
    i = combo.findData(data)
    if i >= 0:
        combo.setCurrentIndex(i)


class StageTable(QTableWidget):
    """The recipe's stages, one row each: name, epochs, LR, unfreeze, layer decay."""

    changed = Signal()
    HEADERS = ("Stage", "Epochs", "LR", "Unfreeze", "Decay")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(self.HEADERS)
        self.verticalHeader().setVisible(False)
        h = self.horizontalHeader()
        h.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        h.setMinimumSectionSize(40)
        self.horizontalHeaderItem(4).setToolTip("Layer-wise LR decay (1 = none)")
        self.horizontalHeaderItem(3).setToolTip("head, top:N (the top N blocks) or all")
        self.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.itemChanged.connect(lambda _i: self._emit())
        self._loading = False

    def _emit(self) -> None:
        if not self._loading:
            self.changed.emit()

    def set_stages(self, stages: list[StageConfig]) -> None:
        self._loading = True
        try:
            self.setRowCount(0)
            for s in stages:
                self._add_row(s)
        finally:
            self._loading = False
        self._fit()

    def add_stage(self, stage: StageConfig) -> None:
        self._add_row(stage)
        self._fit()
        self._emit()

    def remove_last(self) -> None:
        if self.rowCount() > 1:
            self.setRowCount(self.rowCount() - 1)
            self._fit()
            self._emit()

    def _add_row(self, s: StageConfig) -> None:
        r = self.rowCount()
        self.insertRow(r)
        self.setItem(r, 0, QTableWidgetItem(s.name))
        epochs = spin_box(self, 0, 10000, s.epochs)
        lr = SciSpinBox(self)
        lr.setValue(s.lr)
        unfreeze = QComboBox(self)
        unfreeze.setEditable(True)
        unfreeze.addItems(UNFREEZE_CHOICES)
        unfreeze.setCurrentText(s.unfreeze)
        decay = dspin_box(self, 0.05, 1.0, s.layer_decay, 0.05)
        for c, w in ((1, epochs), (2, lr), (3, unfreeze), (4, decay)):
            w.setFrame(False)
            w.setMinimumWidth(36)
            self.setCellWidget(r, c, w)
        epochs.valueChanged.connect(self._emit)
        lr.valueChanged.connect(self._emit)
        unfreeze.currentTextChanged.connect(self._emit)
        decay.valueChanged.connect(self._emit)

    def showEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().showEvent(ev)
        self._fit()  # the style sheet makes the cell editors taller once polished

    def _fit(self) -> None:
        self.resizeRowsToContents()
        rows = sum(self.rowHeight(r) for r in range(self.rowCount()))
        self.setFixedHeight(self.horizontalHeader().sizeHint().height() + rows
                            + 2 * self.frameWidth() + 2)

    def stages(self) -> list[StageConfig]:
        out = []
        for r in range(self.rowCount()):
            item = self.item(r, 0)
            out.append(StageConfig(
                name=(item.text().strip() if item else "") or f"stage{r + 1}",
                epochs=self.cellWidget(r, 1).value(),
                lr=self.cellWidget(r, 2).value(),
                unfreeze=self.cellWidget(r, 3).currentText().strip(),
                layer_decay=round(self.cellWidget(r, 4).value(), 4),
            ))
        return out

    def epochs_spin(self, row: int) -> QSpinBox:
        return self.cellWidget(row, 1)
