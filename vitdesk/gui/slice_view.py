"""The slice viewer: one pyqtgraph ImageItem showing HU through the current window.

Interaction (as in radiology viewers):
    mouse wheel, Up/Down, Left/Right      previous / next slice
    PageUp / PageDown                     ten slices back / forward
    Home / End                            first / last slice
    left drag                             window: right = wider, up = higher level
    right drag / Ctrl+wheel               zoom; middle drag: pan
    1..9                                  window presets in table order
    R                                     reset to the series' own window
    A / C / S                             axial / coronal / sagittal
    F                                     fit the image to the window
    Space                                 cine: play / stop
    M / O / B                             distance / ellipse / rectangle tool (again: off)
    Esc / Delete                          tool off / clear the measurements

The keys work wherever the focus is in the main window (:meth:`SliceView.install_window_keys`),
except in text fields and spin boxes, and arrows stay with lists, tables and sliders.

Reading aids (:mod:`vitdesk.gui.reading_aids`): corner annotations, orientation
letters from the direction cosines, a scale bar, and an overlay's colour bar.

Speed: the ImageItem is created once; each slice change calls ``setImage`` on it
with the HU view and ``levels=(L - W/2, L + W/2)`` so pyqtgraph's own lookup does
the windowing (no per-frame array work here), and a window change only calls
``setLevels``. CLAHE needs the windowed image, so with CLAHE on each frame is
windowed, equalised and shown as uint8.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QButtonGroup,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTextEdit,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from vitdesk.gui import geometry
from vitdesk.gui.measure import scale_bar_mm
from vitdesk.gui.measure_tools import MeasureTools, plane_of
from vitdesk.gui.reading_aids import ReadingOverlay, corner_texts
from vitdesk.gui.resources import preset_keys
from vitdesk.gui.state import AXES, ViewerState, WindowState, is_ct, value_unit
from vitdesk.imaging.windowing import apply_window, clahe

PAGE_STEP = 10
DEFAULT_FPS = 8
_NAV_KEYS = (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_Right,
             Qt.Key.Key_PageUp, Qt.Key.Key_PageDown, Qt.Key.Key_Home, Qt.Key.Key_End)
_TOOL_KEYS = {Qt.Key.Key_M: "distance", Qt.Key.Key_O: "ellipse", Qt.Key.Key_B: "rectangle"}
_PHI_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber",
               "InstitutionName")


def window_drag_delta(width: float, dx: float, dy: float) -> tuple[float, float]:
    """Change of (width, level) for a drag of (dx, dy) screen pixels (y grows downward).

    Right widens the window, up raises the level. The step grows with the window
    so both a 40 HU stroke window and a 1800 HU bone window are easy to adjust.
    """
    scale = max(1.0, width / 200.0)
    return (dx * scale, -dy * scale)


def _num(value: float, volume) -> str:
    """A window number: whole HU for CT, four significant digits for other values."""
    return f"{value:.0f}" if is_ct(volume) else f"{value:.4g}"


class _SliceViewBox(pg.ViewBox):
    """ViewBox with radiology mouse bindings; knows nothing of volumes."""

    def __init__(self, owner: SliceView) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._owner = owner

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        self._owner.viewer.step(-1 if ev.delta() > 0 else 1)

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.button() == Qt.MouseButton.LeftButton and self._owner.tools.tool is not None:
            ev.accept()  # an armed tool draws instead of changing the window
            self._owner.tools.drag(self.mapSceneToView(ev.buttonDownScenePos()),
                                   self.mapSceneToView(ev.scenePos()), ev.isFinish())
            return
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            self._owner.drag_window(d.x(), d.y())
            return
        super().mouseDragEvent(ev, axis)


class SliceView(QWidget):
    """Slice viewer bound to a :class:`ViewerState` and a :class:`WindowState`."""

    cursor_text_changed = Signal(str)

    def __init__(self, viewer: ViewerState, window: WindowState,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.window = viewer, window
        self._presets = preset_keys()
        self._clahe_cache: dict[tuple, np.ndarray] = {}

        self.banner = QLabel(self)
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.hide()

        self.phi_label = QLabel(self)
        self.phi_label.setObjectName("phi")
        # Identifiers can be long: never let them widen the viewer (tooltip has all).
        self.phi_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.phi_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

        self.axis_buttons = QButtonGroup(self)
        axis_row = QHBoxLayout()
        axis_row.setContentsMargins(0, 0, 0, 0)
        for i, axis in enumerate(AXES):
            b = QPushButton(axis.capitalize(), self)
            b.setCheckable(True)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.setToolTip(f"{axis.capitalize()} view ({axis[0].upper()})")
            self.axis_buttons.addButton(b, i)
            axis_row.addWidget(b)
        self.axis_buttons.button(0).setChecked(True)
        self.axis_buttons.idClicked.connect(lambda i: self.viewer.set_axis(AXES[i]))
        self.fit_button = self._tool_button("Fit", "Fit the image to the window (F)",
                                            checkable=False)
        self.fit_button.clicked.connect(self.fit)
        self.cine_button = self._tool_button("Cine", "Play / stop through the slices (Space)")
        self.cine_button.toggled.connect(self.set_cine)
        self.fps_spin = QSpinBox(self)
        self.fps_spin.setRange(1, 30)
        self.fps_spin.setValue(DEFAULT_FPS)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setToolTip("Cine speed, slices per second")
        self.fps_spin.valueChanged.connect(self._on_fps)
        self.tool_buttons: dict[str, QToolButton] = {}
        for tool, text, tip in (("distance", "Distance", "Measure a distance in mm (M)"),
                                ("ellipse", "Ellipse", "Ellipse region: mean/SD, area (O)"),
                                ("rectangle", "Rect", "Rectangle region: mean/SD, area (B)")):
            b = self._tool_button(text, tip)
            b.toggled.connect(lambda on, t=tool: self._on_tool_button(t, on))
            self.tool_buttons[tool] = b
        self.clear_button = self._tool_button("Clear", "Remove the measurements (Delete)",
                                              checkable=False)
        # A tool bar folds what does not fit into its ">>" menu, so the reading aids never
        # widen the viewer (the window must fit 1440 px with the browser and the tabs).
        self.tool_bar = QToolBar(self)
        self.tool_bar.setObjectName("viewerTools")
        self.tool_bar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for w in (self.fit_button, self.cine_button, self.fps_spin, *self.tool_buttons.values(),
                  self.clear_button):
            self.tool_bar.addWidget(w)
        self.tool_bar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        axis_row.addWidget(self.phi_label, 1)

        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setBackground("#000000")
        self.graphics.ci.setContentsMargins(0, 0, 0, 0)
        self.view = _SliceViewBox(self)
        self.graphics.addItem(self.view)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image)
        self.graphics.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.graphics.installEventFilter(self)
        self.graphics.viewport().installEventFilter(self)  # Leave: the pointer is gone
        # Where the pointer last was (scene coordinates), so the readout can follow a
        # slice, plane or series change made with the wheel, keys or another widget.
        self._pointer: QPointF | None = None
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.graphics.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.overlay = ReadingOverlay(self.graphics)
        self.view.sigRangeChanged.connect(lambda *_: self._update_scale_bar())
        self.tools = MeasureTools(self.view, lambda: plane_of(self.viewer))
        self.clear_button.clicked.connect(self.tools.clear)
        self.cine_timer = QTimer(self)
        self.cine_timer.setInterval(round(1000 / DEFAULT_FPS))
        self.cine_timer.timeout.connect(self._cine_step)
        self._window_keys: QObject | None = None

        self.info_label = QLabel(self)
        self.info_label.setObjectName("overlay")
        self.cursor_label = QLabel(self)
        self.cursor_label.setObjectName("overlay")
        for label in (self.info_label, self.cursor_label):
            # a longer text ("slice 10/16") must not re-lay out the whole window per frame
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.cursor_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(axis_row)
        lay.addWidget(self.tool_bar)
        lay.addWidget(self.banner)
        lay.addWidget(self.graphics, 1)
        lay.addWidget(self.info_label)
        lay.addWidget(self.cursor_label)

        viewer.volume_changed.connect(self._on_volume)
        viewer.axis_changed.connect(self._on_axis)
        viewer.slice_changed.connect(self._on_slice)
        viewer.show_phi_changed.connect(lambda _on: (self._update_phi(), self._update_info()))
        window.changed.connect(self._on_window)
        window.clahe_changed.connect(lambda _on: self._render())
        self._on_volume(viewer.volume)

    # ----------------------------------------------------------------- state -> view
    def _on_volume(self, volume) -> None:
        self._clahe_cache.clear()
        self.set_cine(False)
        self.tools.clear()  # a measurement belongs to the image it was made on
        self.overlay.set_orientation(volume, self.viewer.axis)
        if volume is None:
            self.overlay.corners = {}
            self.overlay.update()
            self.image.clear()
            self.banner.hide()
            self.info_label.setText("No series open. Use File > Open folder, or drop files here.")
            self._set_cursor_text("")
            self._update_phi()
            return
        # MONOCHROME1 stores bright as low values: invert the display LUT only.
        lut = np.arange(255, -1, -1, dtype=np.uint8) if volume.invert_display else None
        self.image.setLookupTable(lut, update=False)
        if volume.warnings:
            self.banner.setText("Warning: " + " | ".join(volume.warnings))
            self.banner.show()
        else:
            self.banner.hide()
        self._update_phi()
        self._on_axis(self.viewer.axis)

    def _on_axis(self, axis: str) -> None:
        self.axis_buttons.button(AXES.index(axis)).setChecked(True)
        vol = self.viewer.volume
        self.tools.clear()
        self.overlay.set_orientation(vol, axis)
        if vol is None:
            return
        self._render()
        h, w = self.image.image.shape[:2]
        pw, ph = geometry.pixel_size(vol, axis)
        # The item's rect is in mm, so a locked 1:1 aspect shows true proportions.
        self.image.setRect(QRectF(0, 0, w * pw, h * ph))
        self.view.autoRange(padding=0.02)
        self._refresh_readout()  # the plane's geometry changed under the pointer

    def _on_slice(self, _index: int) -> None:
        self._render()
        if self.tools.items:
            self.tools.refresh()  # region statistics follow the slice

    def _on_window(self, _w: float, _l: float) -> None:
        if self.window.clahe:
            self._render()
        else:
            self.image.setLevels(self.window.levels)
            self._update_info()

    def _render(self) -> None:
        vol = self.viewer.volume
        if vol is None:
            return
        img = geometry.plane(vol, self.viewer.axis, self.viewer.index)
        if self.window.clahe:
            key = (self.viewer.axis, self.viewer.index, self.window.width, self.window.level)
            u8 = self._clahe_cache.get(key)
            if u8 is None:
                eq = clahe(apply_window(img, self.window.width, self.window.level))
                u8 = np.rint(eq * 255).astype(np.uint8)
                if len(self._clahe_cache) > 64:
                    self._clahe_cache.clear()
                self._clahe_cache[key] = u8
            self.image.setImage(u8, autoLevels=False, levels=(0, 255))
        else:
            self.image.setImage(img, autoLevels=False, levels=self.window.levels)
        self._update_info()
        self._refresh_readout()

    def _update_info(self) -> None:
        vol = self.viewer.volume
        if vol is None:
            return
        axis, i, n = self.viewer.axis, self.viewer.index, self.viewer.n_slices()
        if axis == "axial":
            pos = geometry.slice_position_mm(vol, i)
            thick = vol.meta.get("SliceThickness") or vol.spacing[0]
            where = f"pos {pos:.1f} mm   thickness {float(thick):.2f} mm"
        else:
            x, y, _ = geometry.voxel_at(vol, axis, i, 0, 0)
            mm = geometry.voxel_to_mm(vol, x, y, 0)
            coord = mm[1] if axis == "coronal" else mm[0]
            step = vol.spacing[1] if axis == "coronal" else vol.spacing[2]
            where = f"pos {coord:.1f} mm   spacing {float(step):.2f} mm"
        extra = "  CLAHE" if self.window.clahe else ""
        self.overlay.corners = corner_texts(vol, axis, i, n, self.window.width,
                                            self.window.level, value_unit(vol),
                                            self.viewer.show_phi, self.window.clahe)
        self.overlay.update()
        self.info_label.setText(
            f"{axis.capitalize()}  slice {i + 1}/{n}   {where}   "
            f"W {_num(self.window.width, vol)}  L {_num(self.window.level, vol)}{extra}"
        )

    def _update_phi(self) -> None:
        vol = self.viewer.volume
        shown = vol is not None and self.viewer.show_phi
        if not shown:
            self.phi_label.setText("" if vol is None else "Patient identifiers hidden")
        else:
            parts = [str(vol.phi[k]) for k in _PHI_FIELDS if vol.phi.get(k)]
            self.phi_label.setText(" · ".join(parts) or "No patient identifiers in this series")
        self.phi_label.setToolTip(self.phi_label.text())
        # A dynamic property drives the style sheet colour; re-polish to apply it.
        self.phi_label.setProperty("shown", shown)
        self.phi_label.style().unpolish(self.phi_label)
        self.phi_label.style().polish(self.phi_label)

    # ----------------------------------------------------------------- view -> state
    def drag_window(self, dx: float, dy: float) -> None:
        """Apply a window/level drag of (dx, dy) screen pixels."""
        dw, dl = window_drag_delta(self.window.width, dx, dy)
        self.window.set_window(self.window.width + dw, self.window.level + dl)

    def handle_key(self, ev: QKeyEvent) -> bool:
        """Viewer keyboard bindings; True when the key was used."""
        key, mods = ev.key(), ev.modifiers()
        if mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
            return False  # Ctrl+digits belong to labelling shortcuts
        steps = {Qt.Key.Key_Up: -1, Qt.Key.Key_Left: -1, Qt.Key.Key_Down: 1,
                 Qt.Key.Key_Right: 1, Qt.Key.Key_PageUp: -PAGE_STEP,
                 Qt.Key.Key_PageDown: PAGE_STEP}
        if key in steps:
            self.viewer.step(steps[key])
        elif key == Qt.Key.Key_Home:
            self.viewer.set_index(0)
        elif key == Qt.Key.Key_End:
            self.viewer.set_index(self.viewer.n_slices() - 1)
        elif Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
            n = int(key) - int(Qt.Key.Key_1)
            if n < len(self._presets):
                p = self._presets[n]
                self.window.apply_preset(p.name.lower().replace(" ", "_"))
        elif key == Qt.Key.Key_R:
            self.window.reset()
        elif key in (Qt.Key.Key_A, Qt.Key.Key_C, Qt.Key.Key_S):
            self.viewer.set_axis({Qt.Key.Key_A: "axial", Qt.Key.Key_C: "coronal",
                                  Qt.Key.Key_S: "sagittal"}[key])
        elif key == Qt.Key.Key_F:
            self.fit()
        elif key == Qt.Key.Key_Space:
            self.set_cine(not self.cine_timer.isActive())
        elif key in _TOOL_KEYS:
            tool = _TOOL_KEYS[key]
            self.set_tool(None if self.tools.tool == tool else tool)
        elif key == Qt.Key.Key_Escape and self.tools.tool is not None:
            self.set_tool(None)
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self.tools.items:
            self.tools.clear()
        else:
            return False
        return True

    def install_window_keys(self, window: QWidget) -> None:
        """Make the viewer keys work wherever the focus is inside ``window``."""
        if self._window_keys is None:
            self._window_keys = _WindowKeys(self, window)
            QApplication.instance().installEventFilter(self._window_keys)
            # the filter must not outlive the viewer (it would call a deleted widget)
            self.destroyed.connect(lambda *_: _remove_filter(self._window_keys))

    # ------------------------------------------------------------------ reading aids
    def _tool_button(self, text: str, tip: str, checkable: bool = True) -> QToolButton:
        b = QToolButton(self)
        b.setText(text)
        b.setCheckable(checkable)
        b.setToolTip(tip)
        b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Space stays the cine key
        return b

    def fit(self) -> None:
        """Fit the whole image to the view (after zooming or panning)."""
        if self.viewer.volume is not None:
            self.view.autoRange(items=[self.image], padding=0.02)

    def set_cine(self, on: bool) -> None:
        """Play (advance at the fps shown, looping) or stop."""
        on = bool(on) and self.viewer.n_slices() > 1
        if on:
            self.cine_timer.start()
        else:
            self.cine_timer.stop()
        if self.cine_button.isChecked() != on:
            self.cine_button.blockSignals(True)
            self.cine_button.setChecked(on)
            self.cine_button.blockSignals(False)

    def _on_fps(self, fps: int) -> None:
        self.cine_timer.setInterval(round(1000 / max(1, fps)))

    def _cine_step(self) -> None:
        n = self.viewer.n_slices()
        if n == 0:
            self.set_cine(False)
            return
        self.viewer.set_index((self.viewer.index + 1) % n)

    def set_tool(self, tool: str | None) -> None:
        """Arm a measuring tool (distance, ellipse, rectangle) or none (left drag = window)."""
        self.tools.set_tool(tool)
        for name, b in self.tool_buttons.items():
            b.blockSignals(True)
            b.setChecked(name == tool)
            b.blockSignals(False)
        self.view.setCursor(Qt.CursorShape.CrossCursor if tool else Qt.CursorShape.ArrowCursor)

    def _on_tool_button(self, tool: str, on: bool) -> None:
        self.set_tool(tool if on else None)

    def set_overlay_colorbar(self, lut: np.ndarray | None, lo: float = 0.0, hi: float = 1.0,
                             label: str = "") -> None:
        """Show the colour bar of an overlay drawn on this view (None hides it)."""
        self.overlay.set_colorbar(lut, lo, hi, label)

    def _update_scale_bar(self) -> None:
        vol = self.viewer.volume
        mm_per_px = self.view.viewPixelSize()[0] if vol is not None else 0.0
        mm = scale_bar_mm(mm_per_px, self.overlay.width() / 4)
        self.overlay.scale_mm = mm
        self.overlay.scale_px = mm / mm_per_px if mm else 0.0
        self.overlay.update()

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().resizeEvent(ev)
        self._place_overlay()

    def _place_overlay(self) -> None:
        self.overlay.setGeometry(self.graphics.viewport().geometry())
        self.overlay.raise_()
        self._update_scale_bar()

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802 - Qt naming
        if obj is self.graphics and ev.type() == QEvent.Type.KeyPress and self.handle_key(ev):
            return True
        if obj is self.graphics and ev.type() == QEvent.Type.Resize:
            QTimer.singleShot(0, self._place_overlay)  # after the viewport has its size
        if obj is self.graphics.viewport() and ev.type() == QEvent.Type.Leave:
            self._pointer = None
            self._set_cursor_text("")
        return super().eventFilter(obj, ev)

    def keyPressEvent(self, ev: QKeyEvent) -> None:  # noqa: N802 - Qt naming
        if not self.handle_key(ev):
            super().keyPressEvent(ev)

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        self._pointer = QPointF(scene_pos)
        self._refresh_readout()

    def _refresh_readout(self) -> None:
        """Readout of the voxel under the pointer in the image shown now (or nothing)."""
        vol = self.viewer.volume
        img = self.image.image
        if self._pointer is None or vol is None or img is None:
            self._set_cursor_text("")
            return
        p = self.image.mapFromScene(self._pointer)
        col, row = int(np.floor(p.x())), int(np.floor(p.y()))
        h, w = img.shape[:2]
        if not (0 <= row < h and 0 <= col < w):
            self._set_cursor_text("")
            return
        self._set_cursor_text(self.readout(row, col))

    def _set_cursor_text(self, text: str) -> None:
        if text != self.cursor_label.text():
            self.cursor_label.setText(text)
            self.cursor_text_changed.emit(text)

    def readout(self, row: int, col: int) -> str:
        """Text for the voxel under display pixel (row, col): HU, voxel and mm position."""
        vol = self.viewer.volume
        axis, i = self.viewer.axis, self.viewer.index
        x, y, z = geometry.voxel_at(vol, axis, i, row, col)
        v = float(vol.hu[z, y, x])
        mm = geometry.voxel_to_mm(vol, x, y, z)
        # CT in whole HU; other modalities have no fixed scale (PET values are small)
        value = f"{v:.0f} HU" if is_ct(vol) else f"{v:.5g} value"
        return (f"{value}   voxel ({x}, {y}, {z})   "
                f"({mm[0]:.1f}, {mm[1]:.1f}, {mm[2]:.1f}) mm")

    def grab_focus(self) -> None:
        self.graphics.setFocus()


def _remove_filter(obj: QObject | None) -> None:
    app = QApplication.instance()
    if app is not None and obj is not None:
        app.removeEventFilter(obj)


def _text_entry(w: QWidget | None) -> bool:
    """Widgets that type: every key belongs to them."""
    if isinstance(w, QComboBox):
        return w.isEditable()
    return isinstance(w, QLineEdit | QAbstractSpinBox | QTextEdit | QPlainTextEdit)


class _WindowKeys(QObject):
    """Application event filter: viewer keys pressed anywhere in one window.

    A key goes to the viewer unless the focused widget needs it: text fields and
    spin boxes keep every key; lists, tables, sliders and combo boxes keep the
    arrows and paging keys; buttons keep Space.
    """

    def __init__(self, view: SliceView, window: QWidget) -> None:
        super().__init__(view)
        self.view, self.window = view, window

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802 - Qt naming
        if ev.type() != QEvent.Type.KeyPress:
            return False
        focus = QApplication.focusWidget()
        # Only the first delivery (to the focus widget), only inside our window,
        # never while a dialog is in front.
        if obj is not focus or focus is None or focus.window() is not self.window:
            return False
        if focus is self.view.graphics or _text_entry(focus):
            return False
        key = ev.key()
        if key in _NAV_KEYS and isinstance(focus, QAbstractItemView | QAbstractSlider
                                           | QComboBox):
            return False
        if key == Qt.Key.Key_Space and isinstance(focus, QAbstractButton):
            return False
        if key == Qt.Key.Key_Escape and self.view.tools.tool is None:
            return False  # dialogs and menus close on Escape
        return self.view.handle_key(ev)
