"""Distance and region tools of the slice viewer (pyqtgraph ROIs in mm view coordinates).

A tool is armed (``distance``, ``ellipse``, ``rectangle``); a left drag on the image
then draws it instead of changing the window. Each measurement stays on the view,
can be moved and resized by its handles, and recomputes its label from the plane
shown now (a region's mean/SD follows the slice). Changing series or plane clears
them: a measurement belongs to the image it was made on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Signal

from vitdesk.gui import geometry
from vitdesk.gui.measure import RoiStats, distance_mm, roi_stats

TOOLS = ("distance", "ellipse", "rectangle")
_PEN = pg.mkPen("#4fc3f7", width=2)
_MIN_MM = 0.5  # a click without a drag draws nothing


class Measurement:
    """One distance or region on the view, with its label."""

    def __init__(self, kind: str, roi: pg.ROI, label: pg.TextItem) -> None:
        self.kind, self.roi, self.label = kind, roi, label
        self.value_mm: float = 0.0  # distance
        self.stats: RoiStats | None = None  # region

    @property
    def text(self) -> str:
        return self.label.toPlainText()


class MeasureTools(QObject):
    """The measurements drawn on one view box over the viewer's current plane."""

    changed = Signal()

    def __init__(self, view: pg.ViewBox, plane: Callable[[], tuple[np.ndarray, tuple,
                                                                  str] | None]) -> None:
        """``plane()`` returns (image, (pixel width, height) mm, unit) of the plane shown."""
        super().__init__()
        self.view, self._plane = view, plane
        self.tool: str | None = None
        self.items: list[Measurement] = []
        self._drawing: Measurement | None = None
        self._start: QPointF | None = None

    def set_tool(self, tool: str | None) -> None:
        if tool is not None and tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}")
        self.tool = tool

    # ------------------------------------------------------------------ create
    def add_distance(self, p0: tuple[float, float], p1: tuple[float, float]) -> Measurement:
        roi = pg.LineSegmentROI([p0, p1], pen=_PEN)
        return self._add("distance", roi)

    def add_region(self, kind: str, rect: tuple[float, float, float, float]) -> Measurement:
        """A region of ``kind`` (ellipse/rectangle) with bounding box (x, y, w, h) in mm."""
        x, y, w, h = rect
        if kind == "ellipse":
            roi = pg.EllipseROI((x, y), (w, h), pen=_PEN, rotatable=False)
            for handle in list(roi.getHandles()):
                if handle.typ == "r":  # statistics assume an upright ellipse
                    roi.removeHandle(handle)
        elif kind == "rectangle":
            roi = pg.RectROI((x, y), (w, h), pen=_PEN, rotatable=False)
        else:
            raise ValueError(f"kind must be 'ellipse' or 'rectangle', not {kind!r}")
        return self._add(kind, roi)

    def _add(self, kind: str, roi: pg.ROI) -> Measurement:
        label = pg.TextItem(color="#4fc3f7", anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        roi.setZValue(20)
        label.setZValue(21)
        self.view.addItem(roi)
        self.view.addItem(label)
        m = Measurement(kind, roi, label)
        roi.sigRegionChanged.connect(lambda _r, m=m: self._update(m))
        self.items.append(m)
        self._update(m)
        return m

    def clear(self) -> None:
        for m in self.items:
            self.view.removeItem(m.roi)
            self.view.removeItem(m.label)
        self.items.clear()
        self._drawing = None
        self.changed.emit()

    # ------------------------------------------------------------------ values
    def refresh(self) -> None:
        """Recompute every label on the plane shown now (after a slice change)."""
        for m in self.items:
            if m.kind != "distance":  # a distance does not depend on the pixels
                self._update(m)

    def _update(self, m: Measurement) -> None:
        plane = self._plane()
        if m.kind == "distance":
            h0, h1 = m.roi.getHandles()[:2]
            p0 = m.roi.mapToParent(h0.pos())
            p1 = m.roi.mapToParent(h1.pos())
            m.value_mm = distance_mm((p0.x(), p0.y()), (p1.x(), p1.y()))
            m.label.setText(f"{m.value_mm:.1f} mm")
            m.label.setPos(max(p0.x(), p1.x()), min(p0.y(), p1.y()))
        else:
            pos, size = m.roi.pos(), m.roi.size()
            rect = (pos.x(), pos.y(), size.x(), size.y())
            m.stats = None
            if plane is not None:
                img, pix, unit = plane
                m.stats = roi_stats(img, pix, rect, m.kind)
            if m.stats is None:
                m.label.setText("no pixels")
            else:
                s = m.stats
                num = "{:.1f}" if unit == "HU" else "{:.4g}"
                m.label.setText(f"mean {num.format(s.mean)} {unit}  SD {num.format(s.sd)}\n"
                                f"area {s.area_mm2:.1f} mm²  ({s.n_pixels} px)")
            m.label.setPos(pos.x() + max(size.x(), 0), pos.y())
        self.changed.emit()

    # ------------------------------------------------------------------ mouse
    def drag(self, start: QPointF, now: QPointF, finished: bool) -> None:
        """A left drag from ``start`` to ``now`` (view mm) with the armed tool."""
        if self.tool is None:
            return
        if self._drawing is None:
            if distance_mm((start.x(), start.y()), (now.x(), now.y())) < _MIN_MM:
                return
            self._start = QPointF(start)
            if self.tool == "distance":
                self._drawing = self.add_distance((start.x(), start.y()), (now.x(), now.y()))
            else:
                self._drawing = self.add_region(self.tool, (start.x(), start.y(), 0.0, 0.0))
        m, s = self._drawing, self._start
        if m.kind == "distance":
            m.roi.movePoint(m.roi.getHandles()[1], now, finish=finished)
        else:
            x0, x1 = sorted((s.x(), now.x()))
            y0, y1 = sorted((s.y(), now.y()))
            m.roi.setPos((x0, y0), update=False)
            m.roi.setSize((x1 - x0, y1 - y0), finish=finished)
        if finished:
            self._drawing = None


def plane_of(viewer) -> tuple[np.ndarray, tuple[float, float], str] | None:
    """(image, pixel size, unit) of the plane a :class:`ViewerState` shows, or None."""
    from vitdesk.gui.state import value_unit

    vol = viewer.volume
    if vol is None:
        return None
    return (geometry.plane(vol, viewer.axis, viewer.index),
            geometry.pixel_size(vol, viewer.axis), value_unit(vol))
