"""Small reusable widgets."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QListWidgetItem, QStackedWidget, QWidget


class RailTabs(QWidget):
    """Tabs whose labels are a vertical list on the right edge (a "rail").

    Eight task tabs do not fit side by side next to a slice viewer; listed
    vertically they stay readable without scroll arrows. The API mirrors the
    parts of QTabWidget the window uses (addTab, tabText, widget, count,
    currentIndex, setCurrentIndex, setTabEnabled, currentChanged).
    """

    currentChanged = Signal(int)  # noqa: N815 - mirrors QTabWidget

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stack = QStackedWidget(self)
        self.rail = QListWidget(self)
        self.rail.setObjectName("rail")
        self.rail.setFixedWidth(112)
        self.rail.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.rail.currentRowChanged.connect(self._on_row)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.stack, 1)
        lay.addWidget(self.rail)

    def addTab(self, widget: QWidget, title: str) -> int:  # noqa: N802 - mirrors QTabWidget
        self.stack.addWidget(widget)
        QListWidgetItem(title, self.rail)
        if self.rail.currentRow() < 0:
            self.rail.setCurrentRow(0)
        return self.stack.count() - 1

    def count(self) -> int:
        return self.stack.count()

    def tabText(self, index: int) -> str:  # noqa: N802
        return self.rail.item(index).text()

    def widget(self, index: int) -> QWidget:
        return self.stack.widget(index)

    def currentIndex(self) -> int:  # noqa: N802
        return self.stack.currentIndex()

    def setCurrentIndex(self, index: int) -> None:  # noqa: N802
        self.rail.setCurrentRow(index)

    def setTabEnabled(self, index: int, enabled: bool) -> None:  # noqa: N802
        item = self.rail.item(index)
        flags = item.flags()
        item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled if enabled
                      else flags & ~Qt.ItemFlag.ItemIsEnabled)

    def _on_row(self, row: int) -> None:
        if row >= 0:
            self.stack.setCurrentIndex(row)
            self.currentChanged.emit(row)
