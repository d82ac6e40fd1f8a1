"""Runs by a human name, and a table comparing runs side by side.

A run folder's name is a time stamp; people remember a run as "the ViT-S on the
chest sample from Tuesday, 0.84". :func:`run_summary` reads that from the run's
own files (``config.toml``, ``history.jsonl``, ``metrics.json``: plain files, no
torch) and :func:`human_name` says it in one line; :class:`RunCompareDialog` lists
several runs with their metrics side by side.
"""

from __future__ import annotations

import contextlib
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class RunSummary:
    """What tells runs apart, read from a run folder (None: not recorded)."""

    folder: str
    model: str
    img_size: int | None
    data: str  # the data source's folder or file name (never the whole path)
    date: str  # "YYYY-MM-DD HH:MM" of the last write
    epochs: int
    best_val_acc: float | None
    best_val_loss: float | None
    final_val_acc: float | None
    finished: bool
    recipe: str


def _best(rows: list[dict], key: str, best=max) -> float | None:
    values = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
    return best(values) if values else None


def _data_name(source: str) -> str:
    """A short name of the data: its folder or file name; a run folder records only a
    keyed reference (``ref:<key>``, no path), shown as ``data <key>``."""
    if not source:
        return "?"
    if source.startswith("ref:"):
        return f"data {source[4:12]}"
    return Path(source.rstrip("/\\")).name or source


def run_summary(folder: str | Path) -> RunSummary:
    """The summary of one run folder; missing files leave their fields empty."""
    folder = Path(folder)
    cfg: dict = {}
    with contextlib.suppress(OSError, ValueError):
        cfg = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
    history: list[dict] = []
    with contextlib.suppress(OSError):
        for line in (folder / "history.jsonl").read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                history.append(json.loads(line))
    metrics: dict = {}
    with contextlib.suppress(OSError, ValueError):
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    stamps = [p.stat().st_mtime for p in (folder / n for n in ("history.jsonl", "config.toml"))
              if p.is_file()]
    model = cfg.get("model", {}) if isinstance(cfg.get("model"), dict) else {}
    data = cfg.get("data", {}) if isinstance(cfg.get("data"), dict) else {}
    source = str(data.get("source") or "")
    final = metrics.get("final") if isinstance(metrics.get("final"), dict) else {}
    best_acc = metrics.get("best_val_acc")
    best_loss = metrics.get("best_val_loss")
    return RunSummary(
        folder=str(folder),
        model=str(model.get("name") or "?"),
        img_size=int(model["img_size"]) if isinstance(model.get("img_size"), int) else None,
        data=_data_name(source),
        date=time.strftime("%Y-%m-%d %H:%M", time.localtime(max(stamps))) if stamps else "",
        epochs=len(history),
        best_val_acc=float(best_acc) if isinstance(best_acc, int | float)
        else _best(history, "val_acc"),
        best_val_loss=float(best_loss) if isinstance(best_loss, int | float)
        else _best(history, "val_loss", min),
        final_val_acc=(float(final["val_acc"]) if isinstance(final.get("val_acc"), int | float)
                       else None),
        finished=bool(metrics.get("finished")),
        recipe=str((cfg.get("recipe") or {}).get("kind") or "")
        if isinstance(cfg.get("recipe"), dict) else "",
    )


def human_name(s: RunSummary) -> str:
    """``"vit_small_patch16_224 · sample · 2026-12-02 18:10 · val acc 0.84"``."""
    parts = [s.model, s.data]
    if s.date:
        parts.append(s.date)
    if s.best_val_acc is not None:
        parts.append(f"val acc {s.best_val_acc:.2f}")
    elif not s.epochs:
        parts.append("not trained")
    return " · ".join(parts)


COLUMNS = ("Run", "Model", "Image", "Data", "Recipe", "Date", "Epochs", "Best val acc",
           "Best val loss", "Final val acc", "Finished")


def _cells(s: RunSummary) -> list[str]:
    def num(v: float | None, fmt: str = "{:.3f}") -> str:
        return "—" if v is None else fmt.format(v)

    return [Path(s.folder).name, s.model, "—" if s.img_size is None else f"{s.img_size} px",
            s.data, s.recipe or "—", s.date or "—", str(s.epochs), num(s.best_val_acc),
            num(s.best_val_loss), num(s.final_val_acc), "yes" if s.finished else "no"]


class RunCompareDialog(QDialog):
    """Runs side by side, one row each; the best validation accuracy is marked."""

    def __init__(self, runs: list[str | Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare runs")
        self.summaries = [run_summary(r) for r in runs]
        self.table = QTableWidget(len(self.summaries), len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(False)
        accs = [s.best_val_acc for s in self.summaries if s.best_val_acc is not None]
        top = max(accs) if accs else None
        for r, s in enumerate(self.summaries):
            for c, text in enumerate(_cells(s)):
                item = QTableWidgetItem(text)
                item.setToolTip(s.folder if c == 0 else text)
                if c >= COLUMNS.index("Epochs"):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                if c == COLUMNS.index("Best val acc") and top is not None \
                        and s.best_val_acc == top:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        note = QLabel("Validation numbers are the runs' own (each on its own validation split). "
                      "To compare on the same slices, use the Report tab's \"Compare with\"."
                      if self.summaries else "No trained runs found: train one, or open the "
                      "folder that holds them.", self)
        note.setObjectName("hint")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table, 1)
        lay.addWidget(note)
        lay.addWidget(buttons)
        self.resize(900, 360)

    def cell(self, row: int, column: str) -> str:
        """Text shown in ``row`` under ``column`` (for tests and copy)."""
        return self.table.item(row, COLUMNS.index(column)).text()
