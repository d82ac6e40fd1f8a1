"""Robustness tab: accuracy under HU perturbations and attacks; distribution shift.

Curves come from :func:`vitdesk.analysis.evaluation.evaluate_run` (robustness only),
run in a worker on the run's test split or another labelled source: HU noise
(sigma), HU shift, contrast, and FGSM/PGD at the chosen epsilons (in [0, 1] image
units; 1/255 is one grey level). The plot shows accuracy against strength for one
perturbation at a time with the clean accuracy as a dashed baseline; the table lists
every point.

The shift check is evaluate's (:func:`vitdesk.analysis.shift.fit_run_detector`): a
Gaussian on the run's training-slice features with its threshold set on held-out
(validation) slices; it scores the open series (or the evaluation data) and gives
the verdict, the observed against the expected alarm rate and the outlier slices (a
click on one jumps the viewer there). The accuracy shown is the evaluation's, with
its level, cut and TTA; the curves' clean accuracy is that of their subset and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from vitdesk.analysis.options import EvalOptions, accuracy_words
from vitdesk.analysis.robustness import UNITS
from vitdesk.gui.analysis_jobs import ShiftOutcome, evaluate_job, shift_job
from vitdesk.gui.dialogs import show_error
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
    hint,
    make_table,
    parse_floats,
    run_or_cancel,
    scroll_layout,
)
from vitdesk.gui.worker import Task

NAMES = {"noise_hu": "HU noise", "shift_hu": "HU shift", "contrast": "Contrast",
         "fgsm": "FGSM", "pgd": "PGD"}


class RobustnessTab(QWidget):
    """Perturbation curves and a distribution-shift check for the current run."""

    def __init__(self, session: Session, current: CurrentRun,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.current = session, current
        self.curves: list[Any] = []
        self.evaluation: Any = None
        self.shift: ShiftOutcome | None = None
        self.task: Task | None = None
        self.shift_task: Task | None = None
        self._shift_volume: int | None = None

        self.picker = RunPicker(current, self)
        self.source = SourceChooser(self)

        # --- perturbations
        self.noise_edit = QLineEdit("0, 25, 50, 100", self)
        self.shift_edit = QLineEdit("-100, -50, 0, 50, 100", self)
        self.contrast_edit = QLineEdit("0.8, 0.9, 1.0, 1.1, 1.2", self)
        self.eps_edit = QLineEdit("0, 1/255, 2/255, 4/255", self)
        self.cases_spin = QSpinBox(self)
        self.cases_spin.setRange(4, 10000)
        self.cases_spin.setValue(64)
        self.cases_spin.setToolTip("Slices used (a class-balanced, seeded subset)")
        for edit, tip in ((self.noise_edit, "Gaussian noise sigma in HU (empty: skip)"),
                          (self.shift_edit, "HU offsets added to every voxel (empty: skip)"),
                          (self.contrast_edit, "Contrast factors about the slice mean"),
                          (self.eps_edit, "FGSM and PGD strengths in [0, 1] image units; "
                                          "1/255 is one grey level (empty: skip)")):
            edit.setToolTip(tip)
        pert_box = QGroupBox("Perturbations (comma-separated strengths)", self)
        pf = QFormLayout(pert_box)
        pf.addRow("HU noise σ", self.noise_edit)
        pf.addRow("HU shift", self.shift_edit)
        pf.addRow("Contrast ×", self.contrast_edit)
        pf.addRow("FGSM/PGD ε", self.eps_edit)
        pf.addRow("Slices", self.cases_spin)
        self.run_button = QPushButton("Run robustness", self)
        self.run_button.clicked.connect(self._run_or_cancel)
        self.summary = hint("", self)

        self.curve_combo = QComboBox(self)
        self.curve_combo.currentIndexChanged.connect(lambda _i: self._draw_curve())
        self.plot = pg.PlotWidget(self, background=BACKGROUND)
        self.plot.setMinimumHeight(160)
        pi = self.plot.getPlotItem()
        pi.showGrid(x=True, y=True, alpha=0.15)
        pi.setYRange(0, 1.05, padding=0)
        pi.setLabel("left", "accuracy")
        for ax in ("left", "bottom"):
            pi.getAxis(ax).setPen(AXIS)
            pi.getAxis(ax).setTextPen(AXIS)
        self.curve = pi.plot([], [], pen=pg.mkPen(ACCENT, width=2), symbol="o", symbolSize=7,
                             symbolBrush=ACCENT, symbolPen=None)
        self.baseline = pg.InfiniteLine(0, angle=0, pen=pg.mkPen(AMBER, width=1.5,
                                                                 style=Qt.PenStyle.DashLine),
                                        label="clean", labelOpts={"color": AMBER,
                                                                  "position": 0.95})
        pi.addItem(self.baseline)
        self.baseline.hide()
        curve_head = QHBoxLayout()
        curve_head.addWidget(QLabel("Curve", self))
        curve_head.addWidget(self.curve_combo, 1)
        self.table = make_table(["Perturbation", "Strength", "Accuracy", "Drop"], self)

        curves_page = QWidget(self)
        cl = QVBoxLayout(curves_page)
        cl.setContentsMargins(4, 4, 4, 4)
        cl.addWidget(pert_box)
        cl.addWidget(self.run_button)
        cl.addWidget(self.summary)
        cl.addLayout(curve_head)
        cl.addWidget(self.plot, 3)
        cl.addWidget(self.table, 2)

        # --- shift
        self.shift_source = QComboBox(self)
        self.shift_source.addItem("Open series (every axial slice)", "series")
        self.shift_source.addItem("Evaluation data (chosen above)", "data")
        self.pct_spin = QSpinBox(self)
        self.pct_spin.setRange(50, 99)
        self.pct_spin.setValue(95)
        self.pct_spin.setSuffix("th percentile")
        self.pct_spin.setToolTip("Slices farther than this percentile of held-out "
                                 "(validation) slices' distances raise the alarm: on data "
                                 "like the training set, 100 minus this percent of slices do")
        self.shift_button = QPushButton("Check distribution shift", self)
        self.shift_button.clicked.connect(self._shift_or_cancel)
        self.shift_summary = hint("Compares the model's features of these slices with its "
                                  "training slices (Mahalanobis distance), as evaluate and "
                                  "the report do.", self)
        self.shift_plot = pg.PlotWidget(self, background=BACKGROUND)
        self.shift_plot.setMinimumHeight(150)
        sp = self.shift_plot.getPlotItem()
        sp.showGrid(x=True, y=True, alpha=0.15)
        sp.setLabel("left", "distance")
        sp.setLabel("bottom", "slice")
        sp.setMouseEnabled(x=True, y=False)
        for ax in ("left", "bottom"):
            sp.getAxis(ax).setPen(AXIS)
            sp.getAxis(ax).setTextPen(AXIS)
        self.dist_curve = sp.plot([], [], pen=pg.mkPen(ACCENT, width=1.5), symbol="o",
                                  symbolSize=5, symbolBrush=ACCENT, symbolPen=None)
        self.outlier_dots = pg.ScatterPlotItem(size=9, brush=pg.mkBrush(AMBER), pen=None)
        sp.addItem(self.outlier_dots)
        self.threshold_line = pg.InfiniteLine(0, angle=0, pen=pg.mkPen(
            AMBER, width=1.2, style=Qt.PenStyle.DashLine), label="threshold",
            labelOpts={"color": AMBER, "position": 0.9})
        sp.addItem(self.threshold_line)
        self.threshold_line.hide()
        self.shift_plot.scene().sigMouseClicked.connect(self._on_shift_clicked)
        self.outlier_table = make_table(["Slice", "Distance", "× threshold"], self)
        self.outlier_table.cellClicked.connect(lambda r, _c: self.jump_to_outlier(r))
        shift_page = QWidget(self)
        sl = QVBoxLayout(shift_page)
        sl.setContentsMargins(4, 4, 4, 4)
        sf = QFormLayout()
        sf.addRow("Check", self.shift_source)
        sf.addRow("Threshold", self.pct_spin)
        sl.addLayout(sf)
        sl.addWidget(self.shift_button)
        sl.addWidget(self.shift_summary)
        sl.addWidget(self.shift_plot, 1)
        sl.addWidget(QLabel("Outlier slices (click to show)", self))
        sl.addWidget(self.outlier_table)

        self.pages = QTabWidget(self)
        self.pages.addTab(curves_page, "Perturbations")
        self.pages.addTab(shift_page, "Distribution shift")
        lay = scroll_layout(self)
        lay.addWidget(self.picker)
        lay.addWidget(self.source)
        lay.addWidget(self.pages, 1)
        current.changed.connect(lambda _r: self._clear())

    # ----------------------------------------------------------------- perturbations
    def settings(self) -> tuple[dict[str, tuple[float, ...]], tuple[float, ...]]:
        """(HU perturbations, attack epsilons) from the form (ConfigError if malformed)."""
        hu = {"noise_hu": parse_floats(self.noise_edit.text(), "HU noise"),
              "shift_hu": parse_floats(self.shift_edit.text(), "HU shift"),
              "contrast": parse_floats(self.contrast_edit.text(), "Contrast")}
        eps = parse_floats(self.eps_edit.text(), "FGSM/PGD eps")
        return {k: v for k, v in hu.items() if v}, eps

    def _run_or_cancel(self) -> None:
        run_or_cancel(self, self.task, self.run)

    def run(self) -> Task:
        """Compute the curves in a worker."""
        from vitdesk.errors import ConfigError

        if self.current.run is None:
            raise ConfigError("Robustness: no run loaded; pick a trained run first")
        hu, eps = self.settings()
        if not hu and not eps:
            raise ConfigError("Robustness: every strength list is empty; give at least one")
        src, split = self.source.value()
        # evaluate_run always adds the HU curves for CT; an empty dict would mean defaults
        options = EvalOptions(split=split, tta=None, robustness=True,
                              hu_strengths=hu or {"noise_hu": (0.0,)}, adversarial_eps=eps,
                              shift=False, fairness=False, attention_samples=0,
                              robustness_cases=self.cases_spin.value(), n_boot=50)
        task = Task(evaluate_job, self.current.run, self.current.lock, src, options,
                    name="robustness")
        task.finished.connect(lambda ev, keep=(set(hu), bool(eps)): self._on_result(ev, *keep))
        task.errored.connect(lambda exc: show_error(self, exc))
        task.cancelled.connect(lambda: self.summary.setText("Cancelled."))
        task.done.connect(lambda: self.run_button.setText("Run robustness"))
        self.task = task
        self.run_button.setText("Cancel")
        self.summary.setText(f"Perturbing {self.source.describe()}…")
        self.session.task_started.emit(task, "Robustness")
        return task.start()

    def _clear(self) -> None:
        self.curves, self.evaluation, self.shift = [], None, None
        self.curve_combo.clear()
        self.table.setRowCount(0)
        self.outlier_table.setRowCount(0)
        self.dist_curve.setData([], [])
        self.outlier_dots.setData([], [])
        self.threshold_line.hide()
        self.curve.setData([], [])
        self.baseline.hide()

    def _on_result(self, ev: Any, hu_names: set[str], attacks: bool) -> None:
        self.evaluation = ev
        curves = []
        for res in ev.robustness:
            for c in res.curves:
                wanted = c.name in hu_names or (attacks and c.name in ("fgsm", "pgd"))
                if wanted and len(c.strengths):
                    curves.append(c)
        self.curves = curves
        rows = []
        for c in curves:
            for s, a in zip(c.strengths, c.accuracy, strict=True):
                strength = f"{s * 255:g}/255" if c.name in ("fgsm", "pgd") else f"{s:g}"
                rows.append([NAMES.get(c.name, c.name), strength, a, c.clean_accuracy - a])
        fill_table(self.table, rows)
        self.curve_combo.blockSignals(True)
        self.curve_combo.clear()
        for c in curves:
            self.curve_combo.addItem(f"{NAMES.get(c.name, c.name)}: {c.unit}", c.name)
        self.curve_combo.blockSignals(False)
        self._draw_curve()
        self.summary.setText(self.accuracy_story(ev) + " " + " ".join(ev.notes))

    def accuracy_story(self, ev: Any) -> str:
        """The evaluation's accuracy (as Fairness and Inference show it for the same
        settings) and what the curves' clean accuracy is instead."""
        lm = ev.metrics.slice
        acc = lm.estimates["accuracy"].value
        text = (f"{accuracy_words('slice', lm.cut, None)} {fmt(acc, 3)} on all "
                f"{ev.n_slices} slices of {self.source.describe()}.")
        subsets = [r for r in ev.robustness if r.curves]
        if subsets:
            r = subsets[-1]
            text += (f" Curves: a class-balanced subset of {r.n} slices (argmax, TTA off), "
                     f"clean accuracy {fmt(r.clean_accuracy, 3)} there.")
        return text

    def _draw_curve(self) -> None:
        i = self.curve_combo.currentIndex()
        if not 0 <= i < len(self.curves):
            self.curve.setData([], [])
            self.baseline.hide()
            return
        c = self.curves[i]
        x = np.asarray(c.strengths, dtype=float)
        if c.name in ("fgsm", "pgd"):
            x = x * 255  # grey levels read better than 0.0039
        self.curve.setData(x, np.asarray(c.accuracy, dtype=float))
        self.baseline.setValue(c.clean_accuracy)
        self.baseline.show()
        unit = "ε × 255 (grey levels)" if c.name in ("fgsm", "pgd") else UNITS.get(c.name, "")
        self.plot.getPlotItem().setLabel("bottom", f"{NAMES.get(c.name, c.name)}: {unit}")
        self.plot.getPlotItem().enableAutoRange(axis="x")

    # ----------------------------------------------------------------- shift
    def _shift_or_cancel(self) -> None:
        if self.shift_task is not None and self.shift_task.is_running():
            self.shift_task.cancel()
            return
        try:
            self.check_shift()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(self, exc)

    def check_shift(self) -> Task:
        """Score the open series (or the evaluation data) against the training slices."""
        from vitdesk.errors import ConfigError

        if self.current.run is None:
            raise ConfigError("Shift: no run loaded; pick a trained run first")
        slices, src = None, None
        if self.shift_source.currentData() == "series":
            vol = self.session.viewer.volume
            if vol is None:
                raise ConfigError("Shift: no series open; open one or check the evaluation data")
            slices = [np.ascontiguousarray(vol.hu[z], dtype=np.float32)
                      for z in range(vol.shape[0])]
            self._shift_volume = id(vol)
        else:
            src, _split = self.source.value()
        task = Task(shift_job, self.current.run, self.current.lock, slices, src,
                    float(self.pct_spin.value()), self.source.value()[1], name="shift")
        task.finished.connect(self._on_shift)
        task.errored.connect(lambda exc: show_error(self, exc))
        task.done.connect(lambda: self.shift_button.setText("Check distribution shift"))
        self.shift_task = task
        self.shift_button.setText("Cancel")
        self.shift_summary.setText("Extracting features…")
        self.session.task_started.emit(task, "Distribution shift")
        return task.start()

    def _on_shift(self, out: ShiftOutcome) -> None:
        self.shift = out
        r = out.result
        n = len(r.distances)
        self.shift_summary.setText(
            f"{r.verdict()}. Threshold {r.threshold:.2f}, set on {r.reference_size} held "
            f"out ({r.reference}); {r.fraction_above:.0%} of these {n} slices are beyond "
            f"it; median distance {r.median_ratio:.2f}× the held-out median; Gaussian of "
            f"{out.n_train} training slices ({r.covariance}).")
        order = sorted(r.outliers.tolist(), key=lambda i: -r.distances[i])
        rows = [[out.names[i], float(r.distances[i]), float(r.distances[i] / r.threshold)]
                for i in order]
        self._outlier_index = order
        fill_table(self.outlier_table, rows)
        x = np.arange(1, n + 1, dtype=float)
        self.dist_curve.setData(x, r.distances)
        self.outlier_dots.setData(x[r.outliers], r.distances[r.outliers])
        self.threshold_line.setValue(r.threshold)
        self.threshold_line.show()
        self.shift_plot.getPlotItem().setLabel(
            "bottom", "slice" if out.source == "series" else "case")

    def _on_shift_clicked(self, ev: Any) -> None:
        vb = self.shift_plot.getPlotItem().getViewBox()
        if self.shift is None or not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        i = int(round(vb.mapSceneToView(ev.scenePos()).x())) - 1
        if 0 <= i < len(self.shift.result.distances):
            self.jump_to_slice(i)

    def jump_to_outlier(self, row: int) -> None:
        """Show outlier ``row`` of the table in the viewer (series check only)."""
        if 0 <= row < len(getattr(self, "_outlier_index", [])):
            self.jump_to_slice(self._outlier_index[row])

    def jump_to_slice(self, index: int) -> None:
        """Show axial slice ``index`` of the checked series (series check only)."""
        if self.shift is None or self.shift.source != "series":
            return
        vol = self.session.viewer.volume
        if vol is None or id(vol) != self._shift_volume:
            return
        self.session.viewer.set_axis("axial")
        self.session.viewer.set_index(index)
