"""Non-CT series get their own window and the unit "value" (issue 16 #9): an MR series
opened with CT's 400/40 soft-tissue window looked flat grey, and its values read "HU"."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gui.helpers import make_volume
from vitdesk.gui.main_window import MainWindow
from vitdesk.gui.state import auto_window, display_window, value_unit


@pytest.fixture
def win(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    return w


def _mr(default_window=None):
    rng = np.random.default_rng(0)
    vol = make_volume(meta={"Modality": "MR", "SeriesDescription": "T1"}, key="mr0000000001",
                      default_window=default_window)
    vol.hu[:] = rng.uniform(200.0, 12000.0, vol.hu.shape).astype(np.float32)
    return vol


def test_auto_window_spans_the_central_percentiles():
    values = np.arange(0.0, 1001.0)
    w, lv = auto_window(values)
    assert w == pytest.approx(980.0) and lv == pytest.approx(500.0)
    w, lv = auto_window(np.full(10, 7.0))  # flat: a small window around the value
    assert lv == pytest.approx(7.0) and w > 0


def test_mr_without_window_opens_on_its_own_range_with_value_units(win):
    vol = _mr()
    win.session.add_volume(vol)
    assert win.session.viewer.volume is vol
    w, lv = win.session.window.width, win.session.window.level
    lo, hi = np.percentile(vol.hu, [1, 99])
    assert (w, lv) == pytest.approx((hi - lo, (hi + lo) / 2), rel=1e-3)
    assert (w, lv) != (400.0, 40.0)
    # the image uses the grey scale: most pixels are neither black nor white
    shown = win.viewer.image.image
    lo_d, hi_d = win.viewer.image.levels
    inside = np.mean((shown > lo_d) & (shown < hi_d))
    assert inside > 0.9
    assert win.session.window.unit == "value" == value_unit(vol)
    assert win.windowing_tab.width_spin.suffix() == " value"
    assert win.windowing_tab.level_spin.value() == pytest.approx(lv, abs=0.5)
    assert "percentile" in win.windowing_tab.default_label.text()
    text = win.viewer.readout(3, 4)
    assert text.split("   ")[0] == f"{vol.hu[win.session.viewer.index, 3, 4]:.5g} value"
    assert "HU" not in text and "HU" not in win.viewer.info_label.text()
    # a window beyond CT's limits is kept (MR values may run past 8000)
    win.session.window.set_window(20000.0, 9000.0)
    assert (win.session.window.width, win.session.window.level) == (20000.0, 9000.0)

    # back to CT: HU, the CT limits and the soft-tissue fallback
    ct = make_volume(key="ct0000000001")
    win.session.add_volume(ct)
    win.browser.select("ct0000000001")
    assert win.session.viewer.volume is ct
    assert (win.session.window.width, win.session.window.level) == (400.0, 40.0)
    assert win.session.window.unit == "HU" and win.windowing_tab.width_spin.suffix() == " HU"
    assert win.viewer.readout(0, 0).split("   ")[0].endswith(" HU")


def test_mr_with_a_window_in_the_file_uses_it(win):
    vol = _mr(default_window=(1600.0, 600.0))
    assert display_window(vol) == (1600.0, 600.0)
    win.session.add_volume(vol)
    assert (win.session.window.width, win.session.window.level) == (1600.0, 600.0)


def test_pydicom_mr_file_opens_with_its_own_window(qtbot, win, tmp_path):
    from pydicom.data import get_testdata_file

    src = get_testdata_file("MR_small.dcm")
    if src is None:
        pytest.skip("pydicom's MR_small.dcm is not available")
    task = win.open_path(src)
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=15000)
    qtbot.waitUntil(lambda: task is None or task.has_ended(), timeout=5000)
    vol = win.session.viewer.volume
    assert str(vol.meta.get("Modality")) == "MR"
    assert (win.session.window.width, win.session.window.level) == (1600.0, 600.0)
    assert win.session.window.unit == "value"
    entry = win.session.library.entries[win.session.current_key]
    assert entry.thumbnail is not None and entry.thumbnail.std() > 10  # not flat grey
