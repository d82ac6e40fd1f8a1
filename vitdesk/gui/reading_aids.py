"""What a radiology viewer draws over the image: corner annotations, orientation
letters, a scale bar and the colour bar of an overlay.

One transparent widget over the view paints them all from plain data (the texts,
letters and bar length are attributes, so tests read them); it never takes the
mouse. The numbers come from :mod:`vitdesk.gui.measure` and the viewer's state.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

from vitdesk.gui import geometry
from vitdesk.gui.measure import orientation_labels
from vitdesk.imaging.volume import Volume

PHI_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber")
_MARGIN = 8


def overlay_lut(cmap: str, transparent_below: float = 0.1, n: int = 256) -> np.ndarray:
    """RGBA lookup table (n, 4) uint8 of a pyqtgraph colormap whose low end is see-through.

    Values below ``transparent_below`` (a fraction of the range) are fully
    transparent and opacity ramps up to full over the next tenth, so a heat map
    hides nothing where it is cold.
    """
    lut = pg.colormap.get(cmap).getLookupTable(0.0, 1.0, n, alpha=True).astype(np.uint8)
    x = np.linspace(0.0, 1.0, n)
    ramp = np.clip((x - transparent_below) / 0.1, 0.0, 1.0) if transparent_below > 0 else 1.0
    lut[:, 3] = np.rint(255 * np.asarray(ramp) * np.ones(n)).astype(np.uint8)
    return lut


def corner_texts(volume: Volume | None, axis: str, index: int, n: int, width: float,
                 level: float, unit: str, show_phi: bool, clahe: bool = False
                 ) -> dict[str, list[str]]:
    """The four corners' lines; identifiers only while ``show_phi`` is on."""
    if volume is None:
        return {"top_left": [], "top_right": [], "bottom_left": [], "bottom_right": []}
    meta, phi = volume.meta, volume.phi
    desc = str(meta.get("SeriesDescription") or "")
    if not desc and show_phi:  # a name-like description is kept with the identifiers
        desc = str(phi.get("SeriesDescription") or "")
    top_left = [" ".join(x for x in (str(meta.get("Modality") or ""), desc) if x)
                or "(no description)"]
    if show_phi:
        top_left += [str(phi[k]) for k in PHI_FIELDS if phi.get(k)]
    top_right = [f"{axis.capitalize()}  Im {index + 1}/{n}"]
    if axis == "axial":
        top_right.append(f"Pos {geometry.slice_position_mm(volume, index):.1f} mm")
        thick = meta.get("SliceThickness") or volume.spacing[0]
        top_right.append(f"Thick {float(thick):.2f} mm")
    else:
        x, y, _ = geometry.voxel_at(volume, axis, index, 0, 0)
        mm = geometry.voxel_to_mm(volume, x, y, 0)
        top_right.append(f"Pos {mm[1] if axis == 'coronal' else mm[0]:.1f} mm")
    fmt = "{:.0f}" if unit == "HU" else "{:.4g}"
    bottom_left = [f"W {fmt.format(width)}  L {fmt.format(level)}"
                   + ("  CLAHE" if clahe else "")]
    sex_age = " ".join(str(meta.get(k)) for k in ("PatientSex", "PatientAge") if meta.get(k))
    bottom_right = [sex_age] if sex_age else []
    return {"top_left": top_left, "top_right": top_right, "bottom_left": bottom_left,
            "bottom_right": bottom_right}


def _bar_image(lut: np.ndarray) -> QImage:
    """The colour bar's image (high values at the top), made once per colormap."""
    rgb = np.ascontiguousarray(lut[::-1, :3][:, None, :].repeat(12, axis=1))
    return QImage(rgb.data, 12, rgb.shape[0], 36, QImage.Format.Format_RGB888).copy()


class ReadingOverlay(QWidget):
    """Transparent layer over the view painting corners, letters, scale bar, colour bar."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.corners: dict[str, list[str]] = {}
        self.orientation: dict[str, str] = {}
        self.scale_mm = 0.0  # length of the scale bar in mm (0: none)
        self.scale_px = 0.0  # and on screen
        self.colorbar: tuple[np.ndarray, float, float, str] | None = None  # lut, lo, hi, label
        self._colorbar_image: QImage | None = None
        self._colorbar_scaled: QImage | None = None
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF() * 0.95))
        self.setFont(font)

    def set_orientation(self, volume: Volume | None, axis: str) -> None:
        self.orientation = ({} if volume is None
                            else orientation_labels(np.asarray(volume.direction), axis))
        self.update()

    def set_colorbar(self, lut: np.ndarray | None, lo: float = 0.0, hi: float = 1.0,
                     label: str = "") -> None:
        """Show a colour bar for an overlay (``lut`` (n, 3|4) uint8), or hide it (None)."""
        self.colorbar = None if lut is None else (np.asarray(lut, np.uint8), lo, hi, label)
        self._colorbar_image = None if lut is None else _bar_image(self.colorbar[0])
        self._colorbar_scaled: QImage | None = None
        self.update()

    # ------------------------------------------------------------------ paint
    def paintEvent(self, _ev) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = QFontMetrics(self.font())
        lh = fm.height()
        w, h = self.width(), self.height()
        for corner, lines in self.corners.items():
            right = corner.endswith("right")
            bottom = corner.startswith("bottom")
            for i, line in enumerate(lines):
                y = (h - _MARGIN - (len(lines) - 1 - i) * lh - fm.descent() if bottom
                     else _MARGIN + fm.ascent() + i * lh)
                x = w - _MARGIN - fm.horizontalAdvance(line) if right else _MARGIN
                self._text(p, x, y, line)
        o = self.orientation
        if o:
            bold = QFont(self.font())
            bold.setBold(True)
            p.setFont(bold)
            bfm = QFontMetrics(bold)
            self._text(p, _MARGIN, h / 2, o["left"], QColor("#ffd54f"))
            self._text(p, w - _MARGIN - bfm.horizontalAdvance(o["right"]), h / 2, o["right"],
                       QColor("#ffd54f"))
            self._text(p, (w - bfm.horizontalAdvance(o["top"])) / 2,
                       _MARGIN + bfm.ascent() + 2 * lh, o["top"], QColor("#ffd54f"))
            self._text(p, (w - bfm.horizontalAdvance(o["bottom"])) / 2,
                       h - _MARGIN - bfm.descent(), o["bottom"], QColor("#ffd54f"))
            p.setFont(self.font())
        if self.scale_px > 0:
            y = h - _MARGIN - 2 * lh
            x1 = w - _MARGIN - 24
            x0 = x1 - self.scale_px
            p.setPen(QPen(QColor("white"), 2))
            p.drawLine(int(x0), int(y), int(x1), int(y))
            for x in (x0, x1):
                p.drawLine(int(x), int(y - 4), int(x), int(y + 4))
            label = f"{self.scale_mm:g} mm"
            self._text(p, (x0 + x1 - fm.horizontalAdvance(label)) / 2, y - 6, label)
        if self.colorbar is not None:
            self._paint_colorbar(p, fm)
        p.end()

    def _paint_colorbar(self, p: QPainter, fm: QFontMetrics) -> None:
        _lut, lo, hi, label = self.colorbar
        bar_h = max(40, int(self.height() * 0.4))
        x, y = self.width() - _MARGIN - 44, (self.height() - bar_h) // 2
        if self._colorbar_scaled is None or self._colorbar_scaled.height() != bar_h:
            # scaled once per height: a cine frame must not rescale it
            self._colorbar_scaled = self._colorbar_image.scaled(12, bar_h)
        p.drawImage(int(x), int(y), self._colorbar_scaled)
        p.setPen(QPen(QColor("white"), 1))
        p.drawRect(QRectF(x, y, 12, bar_h))
        self._text(p, x + 16, y + fm.ascent(), f"{hi:.3g}")
        self._text(p, x + 16, y + bar_h, f"{lo:.3g}")
        if label:
            self._text(p, x - 4, y - 6, label)

    @staticmethod
    def _text(p: QPainter, x: float, y: float, text: str,
              colour: QColor | None = None) -> None:
        # A dark shadow keeps white text readable on bright bone and contrast.
        p.setPen(QColor(0, 0, 0, 200))
        p.drawText(int(x) + 1, int(y) + 1, text)
        p.setPen(colour or QColor("#e0e0e0"))
        p.drawText(int(x), int(y), text)
