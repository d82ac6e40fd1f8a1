"""Reading aids: orientation letters, corner annotations, scale bar, fit, cine,
distance and region tools, the overlay colour bar, and window-wide viewer keys."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget

from tests.gui.helpers import make_volume
from vitdesk.gui import geometry
from vitdesk.gui.measure import (
    direction_letters,
    orientation_labels,
    roi_mask,
    roi_stats,
    scale_bar_mm,
)
from vitdesk.gui.reading_aids import overlay_lut
from vitdesk.gui.slice_view import SliceView
from vitdesk.gui.state import ViewerState, WindowState

IDENTITY = np.eye(3)


@pytest.mark.parametrize(("direction", "axis", "expected"), [
    (IDENTITY, "axial", {"left": "R", "right": "L", "top": "A", "bottom": "P"}),
    (IDENTITY, "coronal", {"left": "R", "right": "L", "top": "S", "bottom": "I"}),
    (IDENTITY, "sagittal", {"left": "A", "right": "P", "top": "S", "bottom": "I"}),
    # columns run to the patient's right, rows anterior (a flipped acquisition)
    (np.diag([-1.0, -1.0, 1.0]), "axial", {"left": "L", "right": "R", "top": "P",
                                          "bottom": "A"}),
    # slices stored head to feet: coronal top is inferior
    (np.diag([1.0, 1.0, -1.0]), "coronal", {"left": "R", "right": "L", "top": "I",
                                           "bottom": "S"}),
    # a coronal acquisition: rows run along -z (feet), slices along +y
    (np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]), "axial",
     {"left": "R", "right": "L", "top": "S", "bottom": "I"}),
])
def test_orientation_labels_from_direction_cosines(direction, axis, expected):
    assert orientation_labels(direction, axis) == expected


def test_oblique_direction_gives_two_letters():
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert direction_letters(np.array([c, s, 0.0])) == "LP"
    assert direction_letters(np.array([-c, 0.0, -s])) == "RI"
    assert direction_letters(np.array([0.99, 0.1, 0.0])) == "L"  # small tilt: one letter


def test_scale_bar_is_a_round_length_that_fits():
    assert scale_bar_mm(0.5, 100) == 50.0  # 50 mm = 100 px
    assert scale_bar_mm(0.5, 99) == 20.0
    assert scale_bar_mm(2.0, 30) == 50.0
    assert scale_bar_mm(0.0, 100) == 0.0


def test_roi_stats_match_numpy_on_a_known_volume():
    vol = make_volume()  # hu = 10 z + y - x, pixel 0.7 x 0.7 mm
    img = geometry.plane(vol, "axial", 6)
    pix = geometry.pixel_size(vol, "axial")
    # centres (c + 0.5) * 0.7 in [7, 21) -> columns 10..29; rows 5..14
    s = roi_stats(img, pix, (7.0, 3.5, 14.0, 7.0), "rectangle")
    block = vol.hu[6, 5:15, 10:30].astype(np.float64)
    assert s.n_pixels == 200
    assert s.mean == pytest.approx(block.mean())
    assert s.sd == pytest.approx(block.std())
    assert (s.minimum, s.maximum) == (block.min(), block.max())
    assert s.area_mm2 == pytest.approx(200 * 0.49)
    # ellipse: pixels whose centre satisfies the ellipse equation, computed here
    rows, cols = np.mgrid[0:64, 0:80]
    cx, cy = (cols + 0.5) * 0.7, (rows + 0.5) * 0.7
    inside = ((cx - 28.0) / 14.0) ** 2 + ((cy - 21.0) / 7.0) ** 2 <= 1.0
    e = roi_stats(img, pix, (14.0, 14.0, 28.0, 14.0), "ellipse")
    assert e.n_pixels == int(inside.sum())
    assert e.mean == pytest.approx(img[inside].mean())
    assert e.sd == pytest.approx(img[inside].std())
    assert e.area_mm2 == pytest.approx(inside.sum() * 0.49)
    # the ellipse area approaches pi a b
    assert e.area_mm2 == pytest.approx(np.pi * 14.0 * 7.0, rel=0.03)
    np.testing.assert_array_equal(roi_mask(img.shape, pix, (14.0, 14.0, 28.0, 14.0),
                                           "ellipse"), inside)


def test_overlay_lut_low_end_is_transparent():
    lut = overlay_lut("viridis", transparent_below=0.1)
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert lut[:25, 3].max() == 0  # below 10 %: see-through
    assert lut[-1, 3] == 255 and lut[60, 3] == 255
    assert 0 < lut[30, 3] < 255  # a ramp, not a hard edge


# --------------------------------------------------------------------- on the viewer
@pytest.fixture
def view(qtbot, volume):
    viewer, window = ViewerState(), WindowState()
    w = SliceView(viewer, window)
    qtbot.addWidget(w)
    w.resize(800, 700)
    w.show()
    qtbot.waitExposed(w)
    window.default = (400.0, 40.0)
    volume.phi = {"PatientName": "Doe^Jane", "PatientID": "PID-1"}
    viewer.set_volume(volume)
    window.reset()
    qtbot.wait(20)
    return w


def test_corner_annotations_follow_slice_and_window_without_phi(view):
    c = view.overlay.corners
    assert c["top_left"] == ["CT ramp"]
    assert "Axial  Im 7/12" in c["top_right"]
    assert "Pos 115.0 mm" in c["top_right"]  # 100 + 2.5 * 6
    assert "Thick 2.50 mm" in c["top_right"]
    assert c["bottom_left"] == ["W 400  L 40"]
    assert "Doe^Jane" not in repr(c)
    view.viewer.step(1)
    view.window.set_window(1500, -600)
    c = view.overlay.corners
    assert "Axial  Im 8/12" in c["top_right"] and c["bottom_left"] == ["W 1500  L -600"]
    view.viewer.set_show_phi(True)
    assert "Doe^Jane" in view.overlay.corners["top_left"]
    assert "PID-1" in view.overlay.corners["top_left"]


def test_name_like_description_shown_only_with_identifiers(qtbot):
    viewer, window = ViewerState(), WindowState()
    w = SliceView(viewer, window)
    qtbot.addWidget(w)
    vol = make_volume(meta={"Modality": "CT"}, phi={"SeriesDescription": "ROE^RICHARD"})
    viewer.set_volume(vol)
    assert w.overlay.corners["top_left"] == ["CT"]
    viewer.set_show_phi(True)
    assert w.overlay.corners["top_left"][0] == "CT ROE^RICHARD"


def test_orientation_letters_follow_the_plane(view):
    assert view.overlay.orientation == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    view.viewer.set_axis("sagittal")
    assert view.overlay.orientation == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_scale_bar_matches_the_zoom(qtbot, view):
    qtbot.waitUntil(lambda: view.overlay.scale_px > 0)
    mm_per_px = view.view.viewPixelSize()[0]
    assert view.overlay.scale_mm in (1, 2, 5, 10, 20, 50, 100, 200, 500)
    assert view.overlay.scale_px == pytest.approx(view.overlay.scale_mm / mm_per_px)
    before = view.overlay.scale_px * 1.0, view.overlay.scale_mm
    view.view.scaleBy((0.25, 0.25))  # zoom in 4x
    after = view.overlay.scale_px, view.overlay.scale_mm
    assert after != before
    assert after[0] == pytest.approx(after[1] / view.view.viewPixelSize()[0])


def test_fit_to_window_restores_the_whole_image(qtbot, view):
    full = view.view.viewRect()
    view.view.scaleBy((0.2, 0.2))
    view.view.translateBy((5.0, 5.0))
    assert view.view.viewRect().width() < full.width() / 2
    qtbot.keyClick(view.graphics, Qt.Key.Key_F)
    r, img = view.view.viewRect(), view.image.mapRectToParent(view.image.boundingRect())
    assert r.contains(img)
    assert r.width() == pytest.approx(full.width(), rel=0.05)


def test_cine_plays_loops_and_stops(qtbot, view):
    view.fps_spin.setValue(30)
    assert view.cine_timer.interval() == 33
    start = view.viewer.index
    qtbot.keyClick(view.graphics, Qt.Key.Key_Space)
    assert view.cine_button.isChecked()
    qtbot.waitUntil(lambda: view.viewer.index >= start + 2, timeout=3000)
    qtbot.keyClick(view.graphics, Qt.Key.Key_Space)
    assert not view.cine_timer.isActive() and not view.cine_button.isChecked()
    view.viewer.set_index(11)
    view._cine_step()  # past the last slice: back to the first
    assert view.viewer.index == 0
    np.testing.assert_array_equal(view.image.image, view.viewer.volume.hu[0])


def test_distance_tool_in_mm(view):
    m = view.tools.add_distance((1.0, 2.0), (31.0, 42.0))
    assert m.value_mm == pytest.approx(50.0)
    assert m.text == "50.0 mm"


def test_region_tool_follows_the_slice_and_clears_on_plane_change(view):
    vol = view.viewer.volume
    m = view.tools.add_region("rectangle", (7.0, 3.5, 14.0, 7.0))
    block = vol.hu[6, 5:15, 10:30].astype(np.float64)
    assert m.stats.mean == pytest.approx(block.mean())
    assert m.stats.sd == pytest.approx(block.std())
    assert f"mean {block.mean():.1f} HU" in m.text and "area 98.0 mm²" in m.text
    view.viewer.step(1)  # hu grows by 10 per slice
    assert m.stats.mean == pytest.approx(block.mean() + 10)
    view.viewer.set_axis("coronal")
    assert view.tools.items == []


class _Drag:
    """The parts of a pyqtgraph MouseDragEvent the view box reads."""

    def __init__(self, view, start, end, finish):
        self._vb, self._s, self._e, self._f = view, start, end, finish

    def button(self):
        return Qt.MouseButton.LeftButton

    def buttonDownScenePos(self):  # noqa: N802
        return self._vb.mapViewToScene(QPointF(*self._s))

    def scenePos(self):  # noqa: N802
        return self._vb.mapViewToScene(QPointF(*self._e))

    def isFinish(self):  # noqa: N802
        return self._f

    def accept(self):
        pass


def test_armed_tool_draws_with_a_left_drag_instead_of_windowing(qtbot, view):
    wl = (view.window.width, view.window.level)
    qtbot.keyClick(view.graphics, Qt.Key.Key_O)  # ellipse tool
    assert view.tools.tool == "ellipse" and view.tool_buttons["ellipse"].isChecked()
    view.view.mouseDragEvent(_Drag(view.view, (14.0, 14.0), (30.0, 20.0), False))
    view.view.mouseDragEvent(_Drag(view.view, (14.0, 14.0), (42.0, 28.0), True))
    (m,) = view.tools.items
    assert (view.window.width, view.window.level) == wl  # no window change
    pos, size = m.roi.pos(), m.roi.size()
    assert (pos.x(), pos.y(), size.x(), size.y()) == pytest.approx((14.0, 14.0, 28.0, 14.0))
    expected = roi_stats(view.image.image, (0.7, 0.7), (14.0, 14.0, 28.0, 14.0), "ellipse")
    assert m.stats == expected
    qtbot.keyClick(view.graphics, Qt.Key.Key_M)
    view.view.mouseDragEvent(_Drag(view.view, (0.0, 0.0), (3.0, 4.0), True))
    assert view.tools.items[-1].value_mm == pytest.approx(5.0)
    qtbot.keyClick(view.graphics, Qt.Key.Key_Escape)
    assert view.tools.tool is None
    qtbot.keyClick(view.graphics, Qt.Key.Key_Delete)
    assert view.tools.items == []


def test_colorbar_shown_and_hidden(view):
    lut = overlay_lut("inferno")
    view.set_overlay_colorbar(lut, 0.0, 1.0, "attention")
    assert view.overlay.colorbar[3] == "attention"
    img = view.overlay.grab().toImage()
    w, h = view.overlay.width(), view.overlay.height()
    bar_h = max(40, int(h * 0.4))
    x, y = w - 8 - 44 + 6, (h - bar_h) // 2
    top, bottom = img.pixelColor(x, y + 2), img.pixelColor(x, y + bar_h - 2)
    assert abs(top.red() - int(lut[-1, 0])) < 12 and abs(top.green() - int(lut[-1, 1])) < 12
    assert abs(bottom.red() - int(lut[0, 0])) < 12 and abs(bottom.blue() - int(lut[0, 2])) < 12
    view.set_overlay_colorbar(None)
    assert view.overlay.colorbar is None


def test_viewer_keys_work_from_anywhere_in_the_window_but_not_in_text_fields(qtbot, volume):
    host = QWidget()
    qtbot.addWidget(host)
    viewer, window = ViewerState(), WindowState()
    view = SliceView(viewer, window, host)
    edit, listw, button = QLineEdit(host), QListWidget(host), QPushButton("ok", host)
    listw.addItems(["a", "b", "c"])
    lay = QVBoxLayout(host)
    for w in (view, edit, listw, button):
        lay.addWidget(w)
    view.install_window_keys(host)
    host.show()
    qtbot.waitExposed(host)
    host.activateWindow()
    viewer.set_volume(volume)
    start = viewer.index

    button.setFocus()
    qtbot.waitUntil(button.hasFocus)
    qtbot.keyClick(button, Qt.Key.Key_Down)
    assert viewer.index == start + 1  # focus on a button: the viewer scrolls
    qtbot.keyClick(button, Qt.Key.Key_C)
    assert viewer.axis == "coronal"

    edit.setFocus()
    qtbot.waitUntil(edit.hasFocus)
    qtbot.keyClicks(edit, "as")
    assert edit.text() == "as" and viewer.axis == "coronal"  # typing stays typing

    listw.setFocus()
    listw.setCurrentRow(0)
    qtbot.waitUntil(listw.hasFocus)
    index = viewer.index
    qtbot.keyClick(listw, Qt.Key.Key_Down)
    assert listw.currentRow() == 1 and viewer.index == index  # arrows stay with the list
    qtbot.keyClick(listw, Qt.Key.Key_A)
    assert viewer.axis == "axial"  # but viewer letters still work


def test_viewer_letters_for_a_flipped_volume(qtbot):
    viewer, window = ViewerState(), WindowState()
    w = SliceView(viewer, window)
    qtbot.addWidget(w)
    # columns toward the patient's right, slices head to feet
    viewer.set_volume(make_volume(direction=np.diag([-1.0, 1.0, -1.0])))
    assert w.overlay.orientation == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    viewer.set_axis("coronal")
    assert w.overlay.orientation == {"left": "L", "right": "R", "top": "I", "bottom": "S"}
