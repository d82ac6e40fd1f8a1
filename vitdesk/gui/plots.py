"""Live curves with pyqtgraph: growing buffers, throttled ``setData``, stage marks.

Events only append numbers to buffers (cheap, on every event); a timer pushes the
new points to the curves with ``setData`` at most ``hz`` times a second. Plots are
never cleared or rebuilt per event, so a long run does not slow the GUI thread.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QWidget

BACKGROUND = "#0f1114"
AXIS = "#7d848c"
ACCENT = "#4a9eda"
COLOURS = {"step": "#5b6b7c", "train": ACCENT, "val": "#e0a040", "acc": "#6cc070",
           "lr": "#b48ee0", "stage": "#50565e", "highlight": (74, 158, 218, 28)}


def nice_ceiling(x: float) -> float:
    """The next round number (1, 1.5, 2, 3, 4, 5, 6, 8 x 10^k) at or above ``x``."""
    if x <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if m * exp >= x:
            return m * exp
    return 10.0 * exp


def set_error_bars(item: pg.ErrorBarItem, x=(), y=(), top=None, bottom=None) -> None:
    """Give an ``ErrorBarItem`` new vertical bars, replacing every array it holds.

    ``ErrorBarItem.setData`` merges its keywords into the old ones: ``setData(x=[], y=[])``
    keeps the previous ``top``/``bottom`` arrays, and the next ``boundingRect`` fails to
    broadcast them against the empty x (a ValueError inside ``paintEvent``, then a crash).
    Every error-bar update in the GUI goes through here so all arrays change together.
    """
    xs = np.asarray(x, dtype=float).ravel()
    ys = np.asarray(y, dtype=float).ravel()
    n = len(xs)
    if len(ys) != n:
        raise ValueError(f"error bars: {n} x values but {len(ys)} y values")

    def arm(v) -> np.ndarray | None:
        if v is None:
            return None
        a = np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy()
        return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)

    item.setData(x=xs, y=ys, top=arm(top), bottom=arm(bottom), height=None, width=None,
                 left=None, right=None)


def clear_error_bars(item: pg.ErrorBarItem) -> None:
    """Remove every bar of an ``ErrorBarItem`` (see :func:`set_error_bars`)."""
    set_error_bars(item)


class GrowingXY:
    """x/y values appended one at a time (capacity doubling, no copy per append)."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, np.float64)
        self._y = np.empty(capacity, np.float64)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            # Old arrays stay valid for whoever holds a view (the curve, until its
            # next setData): growing never writes into them.
            self._x = np.concatenate([self._x, np.empty_like(self._x)])
            self._y = np.concatenate([self._y, np.empty_like(self._y)])
        self._x[self.n] = x
        self._y[self.n] = y
        self.n += 1

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]

    def clear(self) -> None:
        self.n = 0

    def __len__(self) -> int:
        return self.n


class LiveCurve:
    """One curve of a plot fed from a :class:`GrowingXY`; non-finite values are skipped."""

    def __init__(self, plot: pg.PlotItem, name: str, colour: str, width: float = 1.5,
                 symbol: str | None = None) -> None:
        self.data = GrowingXY()
        self.item = plot.plot([], [], name=name, pen=pg.mkPen(colour, width=width),
                              symbol=symbol, symbolSize=6, symbolBrush=colour,
                              symbolPen=None)
        # Only what is visible is drawn, thinned to the pixel width: a long run stays cheap.
        self.item.setClipToView(True)
        self.item.setDownsampling(auto=True, method="peak")
        self.dirty = False

    def append(self, x: float, y: float) -> None:
        if math.isfinite(x) and math.isfinite(y):
            self.data.append(x, y)
            self.dirty = True

    def flush(self) -> bool:
        """Push new points to the curve; True when something was drawn."""
        if not self.dirty:
            return False
        self.item.setData(self.data.x, self.data.y, skipFiniteCheck=True)
        self.dirty = False
        return True

    def clear(self) -> None:
        self.data.clear()
        self.item.setData([], [])
        self.dirty = False


def style_plot(plot: pg.PlotItem, title: str, left: str) -> None:
    plot.setTitle(title, color=AXIS, size="9pt")
    plot.setLabel("left", left, color=AXIS)
    # No grid: pyqtgraph draws it into the axis picture with alpha blending, which made
    # one redraw of the three plots take ~90 ms instead of ~18 ms (bench/gui_latency.py).
    for name in ("left", "bottom"):
        ax = plot.getAxis(name)
        ax.setPen(pg.mkPen(AXIS))
        ax.setTextPen(pg.mkPen(AXIS))
        ax.enableAutoSIPrefix(False)  # "loss (x0.001)" over 800 reads worse than 0.8
    plot.setMenuEnabled(False)


class Throttle(QObject):
    """Calls ``flush`` at most ``hz`` times a second while started."""

    def __init__(self, flush, hz: float = 10.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / hz))
        self.timer.timeout.connect(flush)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


class TrainingPlots(pg.GraphicsLayoutWidget):
    """Loss (per step, per epoch, validation), validation accuracy and LR over the steps.

    Stage starts are dashed vertical lines; the current stage is shaded.
    Call :meth:`start` when a run begins and :meth:`stop` (which flushes) when it ends.
    """

    def __init__(self, parent: QWidget | None = None, hz: float = 5.0) -> None:
        super().__init__(parent)
        self.setBackground(BACKGROUND)
        self.ci.layout.setSpacing(2)
        self.loss_plot = self.addPlot(row=0, col=0)
        self.acc_plot = self.addPlot(row=1, col=0)
        self.lr_plot = self.addPlot(row=2, col=0)
        style_plot(self.loss_plot, "Loss", "loss")
        style_plot(self.acc_plot, "Validation accuracy", "acc")
        style_plot(self.lr_plot, "Learning rate", "lr")
        self.lr_plot.setLabel("bottom", "optimizer step", color=AXIS)
        self.acc_plot.setYRange(0.0, 1.0, padding=0.05)
        self.acc_plot.enableAutoRange(axis="y", enable=False)
        for p in (self.acc_plot, self.lr_plot):
            p.setXLink(self.loss_plot)
        # Painting axes is most of a redraw (tick text): one shared step axis, and an
        # x range grown in jumps so the tick pictures are rebuilt rarely, not per redraw.
        for p in (self.loss_plot, self.acc_plot):
            p.hideAxis("bottom")
        for p in self.plots():
            p.enableAutoRange(axis="x", enable=False)
        self._x_max = 10.0
        self.loss_plot.setXRange(0, self._x_max, padding=0)
        legend = self.loss_plot.addLegend(offset=(-8, 8), labelTextColor=AXIS,
                                          labelTextSize="8pt")
        legend.setBrush(pg.mkBrush(15, 17, 20, 200))
        self.step_loss = LiveCurve(self.loss_plot, "train (step)", COLOURS["step"], 1.0)
        self.epoch_loss = LiveCurve(self.loss_plot, "train (epoch)", COLOURS["train"], 2.0,
                                    symbol="o")
        self.val_loss = LiveCurve(self.loss_plot, "val", COLOURS["val"], 2.0, symbol="s")
        self.val_acc = LiveCurve(self.acc_plot, "val acc", COLOURS["acc"], 2.0, symbol="o")
        self.lr = LiveCurve(self.lr_plot, "lr", COLOURS["lr"], 1.5)
        self.curves = [self.step_loss, self.epoch_loss, self.val_loss, self.val_acc, self.lr]
        self.stage_lines: list[pg.InfiniteLine] = []
        self._line_plots: list[pg.PlotItem] = []
        self.regions: list[pg.LinearRegionItem] = []
        for p in self.plots():
            region = pg.LinearRegionItem((0, 0), movable=False,
                                         brush=pg.mkBrush(*COLOURS["highlight"]),
                                         pen=pg.mkPen(None))
            region.setZValue(-10)
            region.hide()
            p.addItem(region, ignoreBounds=True)
            self.regions.append(region)
        self._stage_start = 0.0
        self._last_x = 0.0
        self._region_dirty = False
        self.redraws = 0  # flushes that drew something (tests, benchmark)
        self.throttle = Throttle(self.flush, hz, self)

    def plots(self) -> list[pg.PlotItem]:
        return [self.loss_plot, self.acc_plot, self.lr_plot]

    # ---- feeding -------------------------------------------------------------------
    def add_step(self, step: float, loss: float, lr: float) -> None:
        self.step_loss.append(step, loss)
        self.lr.append(step, lr)
        self._advance(step)

    def add_epoch(self, step: float, train_loss: float, val_loss: float,
                  val_acc: float) -> None:
        self.epoch_loss.append(step, train_loss)
        self.val_loss.append(step, val_loss)
        self.val_acc.append(step, val_acc)
        self._advance(step)

    def start_stage(self, step: float, name: str) -> None:
        """Mark a stage start at ``step`` and shade from there on (the current stage)."""
        if not any(abs(line.value() - step) < 1e-9 for line in self.stage_lines):
            for i, p in enumerate(self.plots()):
                line = pg.InfiniteLine(
                    step, angle=90, movable=False,
                    pen=pg.mkPen(COLOURS["stage"], width=1, style=Qt.PenStyle.DashLine),
                    # the number only: names of short stages would overlap
                    label=name.split(" ", 1)[0] if i == 0 else None,
                    labelOpts={"position": 0.97, "color": AXIS,
                               "anchors": [(-0.05, 0), (-0.05, 0)]})
                p.addItem(line, ignoreBounds=True)
                self.stage_lines.append(line)
                self._line_plots.append(p)
        self._stage_start = step
        self._region_dirty = True

    def _advance(self, step: float) -> None:
        if step > self._last_x:
            self._last_x = step
            self._region_dirty = True

    # ---- drawing -------------------------------------------------------------------
    def flush(self) -> None:
        drew = False
        for c in self.curves:
            drew = c.flush() or drew
        if self._last_x > self._x_max:
            self._x_max = nice_ceiling(self._last_x * 1.2)
            self.loss_plot.setXRange(0, self._x_max, padding=0)
        if self._region_dirty:
            for r in self.regions:
                r.setRegion((self._stage_start, max(self._last_x, self._stage_start)))
                r.show()
            self._region_dirty = False
            drew = True
        self.redraws += int(drew)

    def start(self) -> None:
        self.throttle.start()

    def stop(self) -> None:
        self.throttle.stop()
        self.flush()

    def reset(self) -> None:
        """Empty every curve and remove the stage marks (a new run)."""
        for c in self.curves:
            c.clear()
        for p, line in zip(self._line_plots, self.stage_lines, strict=True):
            p.removeItem(line)
        self.stage_lines.clear()
        self._line_plots.clear()
        for r in self.regions:
            r.hide()
        self._stage_start = self._last_x = 0.0
        self._region_dirty = False
        self._x_max = 10.0
        self.loss_plot.setXRange(0, self._x_max, padding=0)


class LossPlot(pg.PlotWidget):
    """One live loss curve per step plus a per-epoch mean (pretraining)."""

    def __init__(self, parent: QWidget | None = None, title: str = "Reconstruction loss",
                 hz: float = 10.0) -> None:
        super().__init__(parent, background=BACKGROUND)
        plot = self.getPlotItem()
        style_plot(plot, title, "loss")
        plot.setLabel("bottom", "step", color=AXIS)
        self.step = LiveCurve(plot, "step", COLOURS["step"], 1.0)
        self.epoch = LiveCurve(plot, "epoch", COLOURS["train"], 2.0, symbol="o")
        self.throttle = Throttle(self.flush, hz, self)

    def flush(self) -> None:
        self.step.flush()
        self.epoch.flush()

    def start(self) -> None:
        self.throttle.start()

    def stop(self) -> None:
        self.throttle.stop()
        self.flush()

    def reset(self) -> None:
        self.step.clear()
        self.epoch.clear()
