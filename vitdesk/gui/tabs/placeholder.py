"""Placeholder for tabs whose engine lands in a later step (no fake functionality)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

# Tab title -> what it will do and which part of the engine it waits for.
PENDING: dict[str, str] = {
    "Training": "staged fine-tuning with live loss/accuracy curves, available once the "
                "training engine (vitdesk.engine) lands.",
    "Attention": "attention maps over the current slice, available once the attention "
                 "analysis (vitdesk.analysis) lands.",
    "Inference": "test-time-augmented predictions for the open series, available once "
                 "inference (vitdesk.analysis) lands.",
    "Fairness": "accuracy per patient group (sex, age), available once the fairness "
                "analysis lands.",
    "Robustness": "accuracy under noise, blur and window shifts, available once the "
                  "robustness analysis lands.",
    "Report": "HTML/PDF report export, available once the report module (vitdesk.report) "
              "lands.",
}


class PlaceholderTab(QWidget):
    """A tab that says what it will show and that it is not available yet."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.label = QLabel(f"{title}: {PENDING[title]}", self)
        self.label.setObjectName("placeholder")
        self.label.setWordWrap(True)
        self.label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        lay = QVBoxLayout(self)
        lay.addWidget(self.label)
        lay.addStretch(1)
