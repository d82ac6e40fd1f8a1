"""Fairness tab: how the run performs for each patient group (sex, age band).

Runs :func:`vitdesk.analysis.evaluation.evaluate_run` (fairness only) in a worker on
the run's test split or another labelled source. Shows, for the chosen attribute,
a table with one column per group (n, accuracy, TPR, FPR, positive rate, AUC with
95% bootstrap intervals; small groups in amber and marked ⚠, never hidden), the gap
figures (demographic parity difference and ratio, equalized odds difference, accuracy
gap) with patient-bootstrap intervals, and a bar chart of one metric per group with
its interval as error bars.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from vitdesk.analysis.evaluation import RunEvaluation
from vitdesk.analysis.options import accuracy_words
from vitdesk.analysis.tta import TTAConfig
from vitdesk.gui.analysis_jobs import fairness_job
from vitdesk.gui.dialogs import show_error
from vitdesk.gui.plots import clear_error_bars, set_error_bars
from vitdesk.gui.run_state import CurrentRun, RunPicker
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import (
    ACCENT,
    AMBER,
    AXIS,
    BACKGROUND,
    SourceChooser,
    fill_table,
    fmt,
    fmt_ci,
    hint,
    make_table,
    run_or_cancel,
    scroll_layout,
)
from vitdesk.gui.worker import Task

ATTRIBUTES = (("Sex", "sex"), ("Age band", "age"))
METRICS = (("Accuracy", "accuracy"), ("TPR (sensitivity)", "tpr"), ("FPR", "fpr"),
           ("Positive rate", "positive_rate"), ("AUC", "auc"))
GAPS = (("Demographic parity difference", "demographic_parity_difference"),
        ("Demographic parity ratio", "demographic_parity_ratio"),
        ("Equalized odds difference", "equalized_odds_difference"),
        ("Accuracy gap", "accuracy_gap"))


class FairnessTab(QWidget):
    """Per-group metrics and disparity figures of the current run."""

    def __init__(self, session: Session, current: CurrentRun,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.current = session, current
        self.outcome: RunEvaluation | None = None
        self.task: Task | None = None

        self.picker = RunPicker(current, self)
        self.source = SourceChooser(self)
        self.attr_combo = QComboBox(self)
        for text, key in ATTRIBUTES:
            self.attr_combo.addItem(text, key)
        self.boot_spin = QSpinBox(self)
        self.boot_spin.setRange(50, 5000)
        self.boot_spin.setSingleStep(100)
        self.boot_spin.setValue(300)
        self.boot_spin.setToolTip("Bootstrap resamples (of patients) for the 95% intervals")
        self.tta_check = QCheckBox("TTA", self)
        self.tta_check.setToolTip(
            "Average each slice's probabilities over the default test-time augmentation "
            f"views ({len(TTAConfig().views())}), as evaluate --tta does; off: one plain pass")
        self.run_button = QPushButton("Evaluate fairness", self)
        self.run_button.clicked.connect(self._run_or_cancel)
        opts = QHBoxLayout()
        opts.addWidget(QLabel("Groups by", self))
        opts.addWidget(self.attr_combo, 1)
        opts.addWidget(QLabel("Resamples", self))
        opts.addWidget(self.boot_spin)
        opts.addWidget(self.tta_check)
        self.summary = hint("Evaluate the run to see its performance per patient group.", self)

        self.table = make_table(["", "Group"], self)
        self.table.setSelectionMode(self.table.SelectionMode.NoSelection)
        self.table.horizontalHeader().setStretchLastSection(False)

        gaps_box = QGroupBox("Gaps between groups (95% CI)", self)
        gl = QGridLayout(gaps_box)
        self.gap_labels: dict[str, QLabel] = {}
        for i, (text, key) in enumerate(GAPS):
            gl.addWidget(QLabel(text, self), i, 0)
            value = QLabel("–", self)
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            gl.addWidget(value, i, 1)
            self.gap_labels[key] = value

        self.metric_combo = QComboBox(self)
        for text, key in METRICS:
            self.metric_combo.addItem(text, key)
        self.plot = pg.PlotWidget(self, background=BACKGROUND)
        self.plot.setMinimumHeight(170)
        pi = self.plot.getPlotItem()
        pi.showGrid(y=True, alpha=0.15)
        pi.setMouseEnabled(x=False, y=False)
        pi.setYRange(0, 1.05, padding=0)
        for ax in ("left", "bottom"):
            pi.getAxis(ax).setPen(AXIS)
            pi.getAxis(ax).setTextPen(AXIS)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=ACCENT)
        self.errors = pg.ErrorBarItem(pen=pg.mkPen("#e8e8e8"), beam=0.2)
        clear_error_bars(self.errors)
        pi.addItem(self.bars)
        pi.addItem(self.errors)
        chart_head = QHBoxLayout()
        chart_head.addWidget(QLabel("Chart", self))
        chart_head.addWidget(self.metric_combo, 1)

        lay = scroll_layout(self)
        lay.addWidget(self.picker)
        lay.addWidget(self.source)
        lay.addLayout(opts)
        lay.addWidget(self.run_button)
        lay.addWidget(self.summary)
        lay.addWidget(self.table)
        lay.addWidget(gaps_box)
        lay.addLayout(chart_head)
        lay.addWidget(self.plot, 2)

        self.attr_combo.currentIndexChanged.connect(lambda _i: self.redraw())
        self.metric_combo.currentIndexChanged.connect(lambda _i: self.redraw())
        current.changed.connect(lambda _r: self._clear())

    # ----------------------------------------------------------------- run
    def _run_or_cancel(self) -> None:
        run_or_cancel(self, self.task, self.run)

    def run(self) -> Task:
        """Evaluate the run on the chosen data in a worker."""
        from vitdesk.errors import ConfigError

        if self.current.run is None:
            raise ConfigError("Fairness: no run loaded; pick a trained run first")
        src, split = self.source.value()
        tta = TTAConfig() if self.tta_check.isChecked() else None
        task = Task(fairness_job, self.current.run, self.current.lock, src, split,
                    self.boot_spin.value(), tta=tta, name="fairness")
        task.finished.connect(self._on_result)
        task.errored.connect(lambda exc: show_error(self, exc))
        task.cancelled.connect(lambda: self.summary.setText("Cancelled."))
        task.done.connect(lambda: self.run_button.setText("Evaluate fairness"))
        self.task = task
        self.run_button.setText("Cancel")
        self.summary.setText(f"Evaluating on {self.source.describe()}…")
        self.session.task_started.emit(task, "Fairness")
        return task.start()

    def _clear(self) -> None:
        self.outcome = None
        self.table.setRowCount(0)
        self._clear_chart()
        for lab in self.gap_labels.values():
            lab.setText("–")

    def _on_result(self, outcome: RunEvaluation) -> None:
        self.outcome = outcome
        ev = outcome
        lm = ev.metrics.slice
        acc = lm.estimates.get("accuracy")
        acc_text = (f", {accuracy_words('slice', lm.cut, ev.tta)} {fmt_ci(acc, 3)}"
                    if acc is not None else "")
        pos = ev.fairness[0].positive if ev.fairness else "?"
        self.summary.setText(
            f"{ev.n_slices} slices of {ev.n_patients} patients ({ev.split}){acc_text}. "
            f"Rates are for class '{pos}' against the rest; group accuracies are slice "
            f"accuracies at the same cut ({lm.cut}, {ev.tta_words()}).")
        self.redraw()

    # ----------------------------------------------------------------- draw
    def report(self) -> tuple[Any, dict] | tuple[None, None]:
        """The FairnessReport of the chosen attribute and its gap intervals (computed by
        :func:`vitdesk.analysis.fairness.add_gap_intervals`, as in the report)."""
        if self.outcome is None:
            return None, None
        key = self.attr_combo.currentData()
        for rep in self.outcome.fairness:
            if rep.attribute == key:
                return rep, rep.gap_ci
        return None, None

    def redraw(self) -> None:
        rep, ci = self.report()
        if rep is None:
            self.table.setRowCount(0)
            self._clear_chart()
            return
        # Metrics down, groups across: two-line cells (value, interval) keep it narrow.
        groups = [r.group + (" ⚠" if r.small else "") for r in rep.rows]
        self.table.setColumnCount(1 + len(groups))
        self.table.setHorizontalHeaderLabels(["", *groups])
        for c, r in enumerate(rep.rows, start=1):
            item = self.table.horizontalHeaderItem(c)
            item.setToolTip(f"only {r.n} slices (< {rep.min_group_size}): its estimates are "
                            "unreliable" if r.small else f"{r.n} slices")
        rows = [["n", *[str(r.n) for r in rep.rows]]]
        for text, key in METRICS:
            rows.append([text, *[fmt_ci(r.metrics[key]).replace(" [", "\n[")
                                 for r in rep.rows]])
        fill_table(self.table, rows)
        for c, r in enumerate(rep.rows, start=1):
            if r.small:
                for row in range(self.table.rowCount()):
                    self.table.item(row, c).setForeground(QColor(AMBER))
        self.table.resizeRowsToContents()
        self.table.setFixedHeight(self.table.horizontalHeader().height()
                                  + sum(self.table.rowHeight(i)
                                        for i in range(self.table.rowCount())) + 4)
        for _text, key in GAPS:
            v = rep.disparities.get(key, float("nan"))
            lo, hi = (ci or {}).get(key, (float("nan"), float("nan")))
            ci_text = f"  [{fmt(lo, 2)}, {fmt(hi, 2)}]" if np.isfinite(lo) else ""
            self.gap_labels[key].setText(f"{fmt(v, 3)}{ci_text}" if np.isfinite(v) else
                                         "– (undefined)")
            self.gap_labels[key].setToolTip(
                "" if np.isfinite(v) else "needs two groups with defined rates (a ratio "
                "also needs a non-zero rate)")
        metric = self.metric_combo.currentData()
        x = np.arange(len(rep.rows), dtype=float)
        vals = np.array([r.metrics[metric].value for r in rep.rows], dtype=float)
        lo = np.array([r.metrics[metric].lo for r in rep.rows], dtype=float)
        hi = np.array([r.metrics[metric].hi for r in rep.rows], dtype=float)
        heights = np.nan_to_num(vals)
        brushes = [pg.mkBrush(AMBER if r.small else ACCENT) for r in rep.rows]
        self.bars.setOpts(x=x, height=heights, width=0.6, brushes=brushes)
        ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(vals)
        set_error_bars(self.errors, x[ok], vals[ok], top=(hi - vals)[ok],
                       bottom=(vals - lo)[ok])
        ax = self.plot.getPlotItem().getAxis("bottom")
        ax.setTicks([[(float(i), f"{r.group} (n={r.n})") for i, r in enumerate(rep.rows)]])
        self.plot.getPlotItem().setXRange(-0.6, len(rep.rows) - 0.4, padding=0)
        self.plot.getPlotItem().setLabel("left", self.metric_combo.currentText())

    def _clear_chart(self) -> None:
        self.bars.setOpts(x=[], height=[])
        clear_error_bars(self.errors)
        self.plot.getPlotItem().getAxis("bottom").setTicks(None)

    def bar_heights(self) -> np.ndarray:
        """Heights of the bars as drawn (tests)."""
        return np.asarray(self.bars.opts.get("height"), dtype=float)
