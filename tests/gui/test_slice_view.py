"""Slice viewer: scrolling, window/level by mouse and keys, geometry, readout, banner."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from tests.gui.helpers import make_volume
from vitdesk.gui.slice_view import SliceView, window_drag_delta
from vitdesk.gui.state import ViewerState, WindowState


@pytest.fixture
def view(qtbot, volume):
    viewer, window = ViewerState(), WindowState()
    w = SliceView(viewer, window)
    qtbot.addWidget(w)
    w.resize(600, 600)
    w.show()
    qtbot.waitExposed(w)
    window.default = (400.0, 40.0)
    viewer.set_volume(volume)
    return w


def _wheel(widget, delta: int) -> None:
    vp = widget.graphics.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(pos, vp.mapToGlobal(pos), QPoint(0, 0), QPoint(0, delta),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                     Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)


def test_opens_in_the_middle_and_shows_that_slice(view, volume):
    assert view.viewer.index == volume.n_slices // 2 == 6
    np.testing.assert_array_equal(view.image.image, volume.hu[6])


def test_wheel_scrolls_slices(view, volume):
    _wheel(view, -120)  # wheel down: next slice
    _wheel(view, -120)
    assert view.viewer.index == 8
    np.testing.assert_array_equal(view.image.image, volume.hu[8])
    _wheel(view, 120)
    assert view.viewer.index == 7


def test_keys_scroll_and_clamp(qtbot, view, volume):
    g = view.graphics
    qtbot.keyClick(g, Qt.Key.Key_Down)
    assert view.viewer.index == 7
    qtbot.keyClick(g, Qt.Key.Key_Up)
    qtbot.keyClick(g, Qt.Key.Key_Up)
    assert view.viewer.index == 5
    qtbot.keyClick(g, Qt.Key.Key_PageDown)
    assert view.viewer.index == volume.n_slices - 1  # 5 + 10 clamps to 11
    qtbot.keyClick(g, Qt.Key.Key_Home)
    assert view.viewer.index == 0
    qtbot.keyClick(g, Qt.Key.Key_PageUp)
    assert view.viewer.index == 0
    qtbot.keyClick(g, Qt.Key.Key_End)
    assert view.viewer.index == 11


def test_number_keys_apply_presets_in_table_order(qtbot, view):
    qtbot.keyClick(view.graphics, Qt.Key.Key_4)  # 4 = Lung 1500/-600
    assert (view.window.width, view.window.level) == (1500.0, -600.0)
    assert view.window.preset == "lung"
    assert tuple(view.image.levels) == (-1350.0, 150.0)
    qtbot.keyClick(view.graphics, Qt.Key.Key_8)  # 8 = Bone 1800/400
    assert (view.window.width, view.window.level) == (1800.0, 400.0)
    qtbot.keyClick(view.graphics, Qt.Key.Key_R)  # reset to the series' own window
    assert (view.window.width, view.window.level) == (400.0, 40.0)


def _drag(qtbot, view, dx: int, dy: int) -> None:
    # A second press within the double-click interval would be a double click.
    qtbot.wait(QApplication.doubleClickInterval() + 20)
    vp = view.graphics.viewport()
    start = QPoint(vp.width() // 2, vp.height() // 2)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=start)
    for k in range(1, 6):  # several moves, as a real drag
        qtbot.mouseMove(vp, start + QPoint(dx * k // 5, dy * k // 5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=start + QPoint(dx, dy))


def test_left_drag_right_widens_and_up_raises_level(qtbot, view):
    w0, l0 = view.window.width, view.window.level
    lo0, hi0 = view.image.levels
    _drag(qtbot, view, 60, 0)
    assert view.window.width > w0
    assert view.window.level == l0
    lo1, hi1 = view.image.levels
    assert lo1 < lo0 and hi1 > hi0  # displayed range widened around the same level
    _drag(qtbot, view, 0, -50)  # up
    assert view.window.level > l0
    lo2, hi2 = view.image.levels
    assert lo2 > lo1 and hi2 > hi1  # whole range moved up
    assert view.window.preset == ""


def test_drag_delta_scales_with_window():
    assert window_drag_delta(40, 10, 0) == (10.0, -0.0)
    assert window_drag_delta(2000, 10, -10) == (100.0, 100.0)


def test_axes_have_true_proportions(view, volume):
    nz, ny, nx = volume.shape
    sz, sy, sx = volume.spacing
    view.viewer.set_axis("coronal")
    assert view.image.image.shape == (nz, nx)
    rect = view.image.mapRectToParent(view.image.boundingRect())
    assert rect.width() == pytest.approx(nx * sx)
    assert rect.height() == pytest.approx(nz * sz)
    # top row of the coronal view is the highest slice (superior)
    np.testing.assert_array_equal(view.image.image[0], volume.hu[nz - 1, view.viewer.index, :])
    view.viewer.set_axis("sagittal")
    assert view.image.image.shape == (nz, ny)
    rect = view.image.mapRectToParent(view.image.boundingRect())
    assert rect.width() == pytest.approx(ny * sy)


def test_readout_gives_hu_voxel_and_mm(view):
    view.viewer.set_index(3)
    text = view.readout(row=5, col=7)  # axial: x=7, y=5, z=3
    assert text.startswith(f"{10 * 3 + 5 - 7} HU")
    assert "voxel (7, 5, 3)" in text
    # origin (-20, -30, 100), spacing x 0.7, y 0.7, z 2.5
    assert "(-15.1, -26.5, 107.5) mm" in text
    view.viewer.set_axis("coronal")
    # coronal row 0 is the top slice z = 11
    assert f"voxel (2, {view.viewer.index}, 11)" in view.readout(0, 2)


def test_info_shows_position_and_thickness(view):
    view.viewer.set_index(2)
    assert "slice 3/12" in view.info_label.text()
    assert "pos 105.0 mm" in view.info_label.text()
    assert "thickness 2.50 mm" in view.info_label.text()


def test_warnings_banner_and_monochrome1(qtbot):
    viewer, window = ViewerState(), WindowState()
    w = SliceView(viewer, window)
    qtbot.addWidget(w)
    w.show()
    vol = make_volume(warnings=["missing slice between 10.0 and 15.0 mm"], invert_display=True)
    viewer.set_volume(vol)
    assert w.banner.isVisible()
    assert "missing slice" in w.banner.text()
    lut = w.image.lut
    assert lut[0] == 255 and lut[-1] == 0
    viewer.set_volume(make_volume())
    assert not w.banner.isVisible()
    assert w.image.lut is None


def test_clahe_shows_equalised_uint8(view):
    view.window.set_clahe(True)
    img = view.image.image
    assert img.dtype == np.uint8
    assert tuple(view.image.levels) == (0, 255)
    view.window.set_clahe(False)
    assert view.image.image.dtype == np.float32


def test_phi_hidden_until_asked(view):
    view.viewer.volume.phi["PatientName"] = "DOE^JANE"
    view._update_phi()
    assert "DOE" not in view.phi_label.text()
    view.viewer.set_show_phi(True)
    assert "DOE^JANE" in view.phi_label.text()


def test_mouse_move_shows_hu_under_cursor(qtbot, view, volume):
    vp = view.graphics.viewport()
    # centre of the image item, in viewport pixels
    rect = view.image.sceneBoundingRect()
    centre = view.graphics.mapFromScene(rect.center())
    qtbot.mouseMove(vp, centre)
    qtbot.waitUntil(lambda: "HU" in view.cursor_label.text(), timeout=2000)
    text = view.cursor_label.text()
    x, y, z = (int(v) for v in text.split("voxel (")[1].split(")")[0].split(", "))
    assert z == view.viewer.index
    assert abs(x - volume.shape[2] // 2) <= 1 and abs(y - volume.shape[1] // 2) <= 1
    assert text.startswith(f"{volume.hu[z, y, x]:.0f} HU")


def _voxel(text: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in text.split("voxel (")[1].split(")")[0].split(", "))
    return x, y, z


def test_readout_follows_slice_plane_and_series_without_a_mouse_move(qtbot, view, volume):
    """Issue 16 #4: the HU line belonged to the previous image until the mouse moved."""
    vp = view.graphics.viewport()
    # the pointer moves to the image centre (as a real move reports it to the scene)
    view.graphics.scene().sigMouseMoved.emit(view.image.sceneBoundingRect().center())
    assert "HU" in view.cursor_label.text()
    x0, y0, z0 = _voxel(view.cursor_label.text())
    assert z0 == view.viewer.index == 6
    seen = []
    view.cursor_text_changed.connect(seen.append)

    qtbot.keyClick(view.graphics, Qt.Key.Key_Down)  # next slice, pointer still
    text = view.cursor_label.text()
    assert _voxel(text) == (x0, y0, 7)
    assert text.startswith(f"{volume.hu[7, y0, x0]:.0f} HU") and seen[-1] == text

    view.viewer.set_axis("coronal")  # another plane: the voxel under the pointer changes
    x, y, z = _voxel(view.cursor_label.text())
    assert y == view.viewer.index
    assert view.cursor_label.text().startswith(f"{volume.hu[z, y, x]:.0f} HU")
    view.viewer.set_axis("axial")

    other = make_volume(nz=4, ny=64, nx=80)
    other.hu[:] += 1000.0  # a different series: every HU differs
    view.viewer.set_volume(other)
    x, y, z = _voxel(view.cursor_label.text())
    assert z == 2 and view.cursor_label.text().startswith(f"{other.hu[z, y, x]:.0f} HU")

    view.viewer.set_volume(None)
    assert view.cursor_label.text() == ""
    view.viewer.set_volume(volume)
    assert "HU" in view.cursor_label.text()  # the pointer never left
    QApplication.sendEvent(vp, QEvent(QEvent.Type.Leave))
    assert view.cursor_label.text() == ""
    view.viewer.step(1)
    assert view.cursor_label.text() == ""  # no pointer over the image: no readout
