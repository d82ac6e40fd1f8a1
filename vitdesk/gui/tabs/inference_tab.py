"""Inference tab: the run's predictions for every slice, with test-time augmentation.

The source is the open series (every axial slice) or a labelled data set (the run's
test/validation split or any dataset source). Results are a per-slice probability
strip (P(class) against slice number with a band of +- one standard deviation across
TTA views), kept in step with the viewer (a vertical line at the current slice; a
click on the strip or a table row jumps the viewer there), a table, and CSV export.

Every prediction is shown with its trust cues (:mod:`vitdesk.analysis.inference`):
the shift verdict of the series against the run's held-out threshold (with the alarm
rate expected on data like the training set), the conformal set of each slice
("refer" when it is not one class) and whether the probabilities are calibrated. A
series outside what the model was trained on gets a grey strip and says so, never a
confident-looking curve; slices beyond the threshold are grey in the table.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from vitdesk.analysis.inference import SlicePredictions
from vitdesk.analysis.tta import CROP_POSITIONS, TTAConfig
from vitdesk.gui.analysis_jobs import inference_job
from vitdesk.gui.dialogs import show_error
from vitdesk.gui.run_state import CurrentRun, RunPicker
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import (
    ACCENT,
    AXIS,
    BACKGROUND,
    OUTSIDE_COLOUR,
    SourceChooser,
    fill_table,
    hint,
    make_table,
    parse_floats,
    run_or_cancel,
    scroll_layout,
    trust_html,
)
from vitdesk.gui.worker import Task

NOT_OPEN_TIP = "Its series is not open: open the run's data folder or workspace to see it"
OUTSIDE_TIP = "beyond the run's shift threshold: outside what the model was trained on"
DISAGREE_TIP = "The label disagrees with the prediction"


def truth_text(label: str | None, predicted: str) -> str:
    """A ground-truth cell: the label, marked ✗ when it disagrees with the prediction."""
    if label is None:
        return "–"
    return label if label == predicted else f"{label} ✗"


class InferenceTab(QWidget):
    """Per-slice predictions of the current run, plain or with TTA."""

    slice_opened = Signal()  # a row's slice was shown: the window gives the viewer focus

    def __init__(self, session: Session, current: CurrentRun,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.current = session, current
        self.result: SlicePredictions | None = None
        self.task: Task | None = None
        self._series_id: int | None = None  # which volume the result belongs to

        self.picker = RunPicker(current, self)
        self.source = SourceChooser(self, with_series=True)

        # --- TTA options
        self.tta_box = QGroupBox("Test-time augmentation", self)
        self.tta_box.setCheckable(True)
        self.tta_box.setChecked(True)
        self.hflip_check = QCheckBox("Horizontal flip", self)
        self.hflip_check.setChecked(True)
        self.scales_edit = QLineEdit("1.0, 0.9, 1.1", self)
        self.scales_edit.setToolTip("Zoom factors; 1.0 is the plain image, >1 zooms in")
        self.crop_checks = {}
        crops_row = QHBoxLayout()
        for pos in CROP_POSITIONS:
            c = QCheckBox(pos, self)
            c.setToolTip(f"Crop of 87.5% at {pos}, resized back")
            self.crop_checks[pos] = c
            crops_row.addWidget(c)
        crops_row.addStretch(1)
        self.combine_combo = QComboBox(self)
        self.combine_combo.addItems(["mean", "geometric"])
        self.combine_combo.setToolTip("Arithmetic or geometric mean of the views' probabilities")
        tl = QGridLayout(self.tta_box)
        tl.addWidget(self.hflip_check, 0, 0)
        tl.addWidget(QLabel("Combine", self), 0, 1, Qt.AlignmentFlag.AlignRight)
        tl.addWidget(self.combine_combo, 0, 2)
        tl.addWidget(QLabel("Scales", self), 1, 0)
        tl.addWidget(self.scales_edit, 1, 1, 1, 2)
        tl.addWidget(QLabel("Crops", self), 2, 0)
        tl.addLayout(crops_row, 2, 1, 1, 2)

        self.run_button = QPushButton("Run inference", self)
        self.run_button.setObjectName("primary")
        self.run_button.clicked.connect(self._run_or_cancel)
        self.export_button = QPushButton("Export CSV…", self)
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._export_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.export_button)
        self.summary = hint("", self)
        # the trust cues of the shown predictions: shift verdict, conformal, calibration
        self.trust_label = QLabel("", self)
        self.trust_label.setWordWrap(True)
        self.trust_label.setTextFormat(Qt.TextFormat.RichText)

        # --- probability strip
        self.class_combo = QComboBox(self)
        self.class_combo.currentIndexChanged.connect(lambda _i: self._draw_strip())
        self.plot = pg.PlotWidget(self, background=BACKGROUND)
        self.plot.setMinimumHeight(170)
        pi = self.plot.getPlotItem()
        pi.showGrid(x=True, y=True, alpha=0.15)
        pi.setLabel("bottom", "slice")
        pi.setLabel("left", "P")
        pi.setYRange(0, 1, padding=0.02)
        pi.setMouseEnabled(x=True, y=False)
        for ax in ("left", "bottom"):
            pi.getAxis(ax).setPen(AXIS)
            pi.getAxis(ax).setTextPen(AXIS)
        # Invisible edges as PlotCurveItems: a PlotDataItem with pen=None never passes its
        # data to its curve, so FillBetweenItem got an empty path and no band was drawn.
        self.band_hi = pg.PlotCurveItem([], [], pen=pg.mkPen(None))
        self.band_lo = pg.PlotCurveItem([], [], pen=pg.mkPen(None))
        self.band = pg.FillBetweenItem(self.band_lo, self.band_hi, brush=(74, 158, 218, 60))
        pi.addItem(self.band)
        self.curve = pi.plot([], [], pen=pg.mkPen(ACCENT, width=2), symbol="o", symbolSize=5,
                             symbolBrush=ACCENT, symbolPen=None)
        self.half_line = pg.InfiniteLine(0.5, angle=0, pen=pg.mkPen("#50565e",
                                                                   style=Qt.PenStyle.DashLine))
        pi.addItem(self.half_line)
        self.cursor_line = pg.InfiniteLine(1, angle=90, pen=pg.mkPen("#e0a040", width=1.5))
        pi.addItem(self.cursor_line)
        self.cursor_line.hide()
        self.plot.scene().sigMouseClicked.connect(self._on_plot_clicked)
        strip_head = QHBoxLayout()
        strip_head.addWidget(QLabel("Probability of", self))
        strip_head.addWidget(self.class_combo, 1)

        self.table = make_table(["#", "Predicted"], self)
        self.table.cellClicked.connect(lambda r, _c: self.select_case(r))
        self.table.cellDoubleClicked.connect(lambda r, _c: self.open_row(r))
        self.table.setToolTip("Double-click a row to show its slice in the viewer")
        self.row_names: list[str] = []  # column 0: slice numbers as the viewer counts them

        top = QWidget(self)
        tl2 = QVBoxLayout(top)
        tl2.setContentsMargins(0, 0, 0, 0)
        tl2.addWidget(self.picker)
        tl2.addWidget(self.source)
        tl2.addWidget(self.tta_box)
        tl2.addLayout(buttons)
        tl2.addWidget(self.summary)
        tl2.addWidget(self.trust_label)
        tl2.addLayout(strip_head)
        tl2.addWidget(self.plot, 1)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(top)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        lay = scroll_layout(self)
        lay.addWidget(split)

        session.viewer.slice_changed.connect(lambda _i: self._sync_cursor())
        session.viewer.volume_changed.connect(lambda _v: self._sync_cursor())
        session.viewer.axis_changed.connect(lambda _a: self._sync_cursor())
        current.changed.connect(lambda _run: self.clear())
        # a folder opened after the run: its series' slice numbers become known
        session.import_finished.connect(lambda _r: self._relabel())
        session.workspace_changed.connect(lambda _w: self._relabel())

    # ----------------------------------------------------------------- options
    def tta_config(self) -> TTAConfig | None:
        """The TTA configuration of the form (None when TTA is off); validated."""
        if not self.tta_box.isChecked():
            return None
        cfg = TTAConfig(hflip=self.hflip_check.isChecked(),
                        scales=parse_floats(self.scales_edit.text(), "TTA scales"),
                        crops=tuple(p for p, c in self.crop_checks.items() if c.isChecked()),
                        combine=self.combine_combo.currentText())
        cfg.validate()
        return cfg

    # ----------------------------------------------------------------- run
    def _run_or_cancel(self) -> None:
        run_or_cancel(self, self.task, self.run)

    def run(self) -> Task | None:
        """Start inference with the form's settings (raises a user error if not ready)."""
        from vitdesk.errors import ConfigError

        run = self.current.run
        if run is None:
            raise ConfigError("Inference: no run loaded; pick a trained run first")
        tta = self.tta_config()
        src, split = self.source.value()
        slices = None
        vol = self.session.viewer.volume
        if split == "series":
            if vol is None:
                raise ConfigError("Inference: no series open; open one or choose a data set")
            slices = [np.ascontiguousarray(vol.hu[z], dtype=np.float32)
                      for z in range(vol.shape[0])]
            self._series_id = id(vol)
        task = Task(inference_job, run, self.current.lock, slices, tta, src,
                    None if split == "series" else split, name="inference")
        task.finished.connect(self._on_result)
        task.errored.connect(lambda exc: show_error(self, exc))
        task.cancelled.connect(lambda: self.summary.setText("Inference cancelled."))
        task.done.connect(self._on_done)
        self.task = task
        self.run_button.setText("Cancel")
        views = "plain" if tta is None else f"TTA, {len(tta.views())} views"
        self.summary.setText(f"Predicting {self.source.describe()} ({views})…")
        self.session.task_started.emit(task, f"Inference ({views})")
        return task.start()

    def _on_done(self) -> None:
        self.run_button.setText("Run inference")

    def clear(self) -> None:
        self.result = None
        self.row_names = []
        self.table.setRowCount(0)
        self.curve.setData([], [])
        self.band_hi.setData([], [])
        self.band_lo.setData([], [])
        self.cursor_line.hide()
        self.export_button.setEnabled(False)
        self.summary.setText("")
        self.trust_label.setText("")

    def _on_result(self, res: SlicePredictions) -> None:
        self.result = res
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItems(list(res.classes))
        # the finding (not the "normal" class) is the interesting probability
        from vitdesk.analysis.evaluation import analysis_order

        self.class_combo.setCurrentIndex(analysis_order(list(res.classes))[-1])
        self.class_combo.blockSignals(False)
        headers = ["#" if res.source == "series" else "Slice", "Predicted"]
        headers += [f"P({c})" for c in res.classes] + ["± (TTA)", "Set", "Shift"]
        truth = self.ground_truth()
        if truth is not None:
            headers.append("Label")
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.row_names = self._row_names()
        rows, wrong = [], []
        refer, outside = res.refer, res.outside
        pred = res.predicted
        for i in range(len(res.probs)):
            k = int(pred[i])
            shown = res.classes[k]
            if outside[i]:
                shown += " (outside training data)"
            elif refer is not None and refer[i]:
                shown += " (refer)"
            row: list[Any] = [self.row_names[i],
                              shown, *[float(p) for p in res.probs[i]],
                              float(res.uncertainty[i]),
                              "–" if res.sets is None else (res.sets[i] or "(empty)"),
                              "–" if res.shift is None else
                              f"{'out' if outside[i] else 'in'} "
                              f"({res.shift.distances[i] / res.shift.threshold:.2f}×)"]
            if truth is not None:
                label = truth[i]
                row.append(truth_text(label, res.classes[k]))
                if label is not None and label != res.classes[k]:
                    wrong.append(i)
            rows.append(row)
        fill_table(self.table, rows, warn_rows=wrong)
        if truth is not None:
            for i in wrong:
                self.table.item(i, len(headers) - 1).setToolTip(DISAGREE_TIP)
        self._grey_rows(np.flatnonzero(outside))
        self._name_tips()
        self.plot.getPlotItem().setLabel("bottom", "slice" if res.source == "series" else "case")
        self._draw_strip()
        self._sync_cursor()
        self.export_button.setEnabled(True)
        parts = [f"{len(res.probs)} slices", f"{res.tta_text()}: {', '.join(res.views)}",
                 f"mean ± {float(res.uncertainty.mean()):.3f}"]
        if res.accuracy is not None:
            parts.insert(1, f"{res.accuracy_text()} ({len(wrong)} wrong, amber)")
        self.summary.setText("; ".join(parts))
        self.trust_label.setText(trust_html(res))

    # ----------------------------------------------------------------- rows <-> viewer
    def ground_truth(self) -> list[str | None] | None:
        """Each row's known label (class name or None), or None when nothing is known:
        the data set's labels, or for the open series the workspace's slice labels."""
        res = self.result
        if res is None:
            return None
        if res.labels is not None:
            return [res.classes[int(c)] for c in res.labels]
        ws, key = self.session.workspace, self.session.current_key
        if res.source != "series" or ws is None or key is None or not self._series_mode():
            return None
        try:
            known = ws.labels_for_series(key)
        except Exception:  # noqa: BLE001 - a series the workspace does not hold: no labels
            return None
        if not known:
            return None
        return [known.get(i) for i in range(len(res.probs))]

    def _row_names(self) -> list[str]:
        """Column 0: the slice number as the viewer counts it (1-based). Data-set rows are
        ``KEY#N`` (the browser's search opens it); ``KEY#?`` while the series is not open."""
        res = self.result
        if res is None:
            return []
        if res.source == "series" or not res.origins:
            return [str(i + 1) for i in range(len(res.probs))] if res.source == "series" \
                else list(res.names)
        names = []
        for series, path, frame in res.origins:
            found = self.session.record_slice(series, path, frame)
            names.append(f"{series[:8]}#{found[1] + 1}" if found else f"{series[:8]}#?")
        return names

    def _relabel(self) -> None:
        res = self.result
        if res is None or res.source == "series" or not self.table.rowCount():
            return
        self.row_names = self._row_names()
        for i, name in enumerate(self.row_names):
            item = self.table.item(i, 0)
            if item is not None:
                item.setText(name)
        self._name_tips()

    def _name_tips(self) -> None:
        """The name cell's tooltip: whether its series is open, and the shift alarm (both
        when both hold, so neither hides the other)."""
        res = self.result
        outside = res.outside if res is not None else np.zeros(0, bool)
        for i, name in enumerate(self.row_names):
            item = self.table.item(i, 0)
            if item is None:
                continue
            tips = [NOT_OPEN_TIP] if name.endswith("#?") else []
            if i < len(outside) and outside[i]:
                tips.append(OUTSIDE_TIP)
            item.setToolTip("\n".join(tips))

    def open_row(self, i: int) -> bool:
        """Show row ``i``'s slice in the viewer: the open series' slice, or a data-set
        record's slice of its series (loaded if needed). False when it is not open here."""
        res = self.result
        if res is None or not 0 <= i < len(res.probs):
            return False
        if res.source == "series":
            self.select_case(i)
            return self._series_mode()
        if not res.origins:
            return False
        series, path, frame = res.origins[i]
        ok = self.session.open_record(series, path, frame)
        if ok:
            self.slice_opened.emit()
        return ok

    def _grey_rows(self, rows: Any) -> None:
        from PySide6.QtGui import QColor

        for r in rows:
            for c in range(self.table.columnCount()):
                item = self.table.item(int(r), c)
                if item is not None:
                    item.setForeground(QColor(OUTSIDE_COLOUR))
                    item.setToolTip(OUTSIDE_TIP)

    # ----------------------------------------------------------------- strip
    def strip_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, p, std) of the strip: 1-based slice numbers, P(class), its spread."""
        res = self.result
        if res is None:
            return np.empty(0), np.empty(0), np.empty(0)
        c = max(self.class_combo.currentIndex(), 0)
        x = np.arange(1, len(res.probs) + 1, dtype=float)
        return x, res.probs[:, c].astype(float), res.std[:, c].astype(float)

    def strip_colour(self) -> str:
        """The strip's colour: grey for a series outside what the model was trained on."""
        res = self.result
        return OUTSIDE_COLOUR if res is not None and res.out_of_distribution else ACCENT

    def _draw_strip(self) -> None:
        x, p, s = self.strip_data()
        colour = self.strip_colour()
        outside = self.result.outside if self.result is not None else np.zeros(0, bool)
        # slices beyond the shift threshold get grey dots even in an in-distribution series
        brushes = [pg.mkBrush(OUTSIDE_COLOUR if o else colour) for o in outside]
        self.curve.setPen(pg.mkPen(colour, width=2,
                                   style=Qt.PenStyle.DashLine if colour != ACCENT
                                   else Qt.PenStyle.SolidLine))
        self.curve.setData(x, p, symbolBrush=brushes or colour)
        self.band.setBrush(pg.mkBrush(colour + "3c"))
        self.band_hi.setData(x, np.clip(p + s, 0, 1))
        self.band_lo.setData(x, np.clip(p - s, 0, 1))
        if len(x):
            self.plot.getPlotItem().setXRange(0.5, len(x) + 0.5, padding=0)
        self.plot.getPlotItem().setLabel("left", f"P({self.class_combo.currentText()})")

    def _series_mode(self) -> bool:
        res, vol = self.result, self.session.viewer.volume
        return (res is not None and res.source == "series" and vol is not None
                and id(vol) == self._series_id and len(res.probs) == vol.shape[0])

    def _sync_cursor(self) -> None:
        if self._series_mode() and self.session.viewer.axis == "axial":
            i = self.session.viewer.index
            self.cursor_line.setValue(i + 1)
            self.cursor_line.show()
            self.table.selectRow(i)
            self.table.scrollTo(self.table.model().index(i, 0))
        else:
            self.cursor_line.hide()

    def _on_plot_clicked(self, ev: Any) -> None:
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        x = vb.mapSceneToView(ev.scenePos()).x()
        if self.result is not None:
            self.select_case(int(round(x)) - 1)

    def select_case(self, i: int) -> None:
        """Show case ``i`` (0-based): the viewer jumps to that axial slice in series mode."""
        if self.result is None:
            return
        i = int(min(max(i, 0), len(self.result.probs) - 1))
        if self._series_mode():
            self.session.viewer.set_axis("axial")
            self.session.viewer.set_index(i)
        else:
            self.cursor_line.setValue(i + 1)
            self.cursor_line.show()
        self.table.selectRow(i)

    # ----------------------------------------------------------------- export
    def export_csv(self, path: str | Path) -> Path:
        """Write one row per slice: index/name, prediction, calibrated probabilities,
        spread, conformal ``set`` ("a|b": refer), whether it is outside the training
        data (shift), label."""
        res = self.result
        if res is None:
            raise RuntimeError("no inference result to export")
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            head = ["index", "name", "predicted", *[f"p_{c}" for c in res.classes],
                    *[f"std_{c}" for c in res.classes], "uncertainty", "set",
                    "outside_training"]
            if res.labels is not None:
                head.append("label")
            w.writerow(head)
            pred, outside = res.predicted, res.outside
            # data-set rows by the slice number the viewer shows, as the table names them
            names = (self.row_names if res.source != "series"
                     and len(self.row_names) == len(res.probs) else res.names)
            for i in range(len(res.probs)):
                row = [i, names[i], res.classes[int(pred[i])],
                       *[f"{p:.6f}" for p in res.probs[i]], *[f"{s:.6f}" for s in res.std[i]],
                       f"{res.uncertainty[i]:.6f}",
                       "" if res.sets is None else (res.sets[i] or "(empty)"),
                       "" if res.shift is None else str(bool(outside[i])).lower()]
                if res.labels is not None:
                    row.append(res.classes[int(res.labels[i])])
                w.writerow(row)
        return path

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export predictions", "predictions.csv",
                                              "CSV files (*.csv)")
        if path:
            try:
                self.export_csv(path)
                self.session.message.emit(f"Predictions written to {path}")
            except Exception as exc:  # noqa: BLE001 - shown to the user
                show_error(self, exc)
