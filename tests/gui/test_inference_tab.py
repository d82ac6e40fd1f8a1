"""Inference tab: TTA over the open series, strip synchronised with the viewer, CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from tests.gui.helpers import make_volume
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import table_values
from vitdesk.gui.tabs.inference_tab import InferenceTab


@pytest.fixture
def setup(qtbot, tiny_run):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = InferenceTab(session, current)
    qtbot.addWidget(tab)
    tab.resize(520, 760)
    tab.show()
    current.set_run(load_run(tiny_run, "cpu"))
    yield session, current, tab
    session.shutdown()


def test_tta_over_series_strip_follows_viewer(qtbot, setup, tmp_path):
    session, current, tab = setup
    session.viewer.set_volume(make_volume(nz=7))
    tab.hflip_check.setChecked(True)
    tab.scales_edit.setText("1.0, 1.1")
    tab.crop_checks["center"].setChecked(True)
    assert len(tab.tta_config().views()) == 6  # (2 scales + 1 crop) x (plain, flipped)
    with qtbot.waitSignal(tab.run().done, timeout=20000):
        pass
    res = tab.result
    assert res is not None and res.views and len(res.views) == 6
    x, p, s = tab.strip_data()
    assert len(x) == 7 and list(x) == list(range(1, 8))  # one point per slice
    assert np.all((p >= 0) & (p <= 1)) and np.all(s >= 0)
    np.testing.assert_allclose(res.probs.sum(1), 1.0, atol=1e-5)
    cx, cy = tab.curve.getData()
    np.testing.assert_allclose(cy, p)
    assert tab.table.rowCount() == 7
    # the +-1 SD band is drawn: FillBetweenItem has a path spanning the strip
    assert s.max() > 0
    band = tab.band.path()
    assert not band.isEmpty()
    rect = band.boundingRect()
    lo, hi = np.clip(p - s, 0, 1), np.clip(p + s, 0, 1)
    assert rect.left() == pytest.approx(1) and rect.right() == pytest.approx(7)
    assert rect.top() == pytest.approx(lo.min(), abs=1e-6)
    assert rect.bottom() == pytest.approx(hi.max(), abs=1e-6)
    tab.plot.grab()
    # the vertical line follows the viewer
    session.viewer.set_index(2)
    assert tab.cursor_line.isVisible() and tab.cursor_line.value() == 3
    # a click on the strip jumps the viewer to that slice
    vb = tab.plot.getPlotItem().getViewBox()
    scene = vb.mapViewToScene(QPointF(6.0, 0.5))
    pos = tab.plot.mapFromScene(scene)
    qtbot.mouseClick(tab.plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: session.viewer.index == 5, timeout=3000)
    assert tab.cursor_line.value() == 6
    # table click jumps too
    tab.table.cellClicked.emit(1, 0)
    assert session.viewer.index == 1

    out = tab.export_csv(tmp_path / "pred.csv")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7
    assert float(rows[0]["p_normal"]) + float(rows[0]["p_lesion"]) == pytest.approx(1, abs=1e-4)


def test_plain_inference_on_test_split_reports_accuracy(qtbot, setup):
    session, current, tab = setup
    tab.tta_box.setChecked(False)
    tab.source.combo.setCurrentIndex(1)  # the run's test split
    assert tab.source.value() == (None, "test")
    with qtbot.waitSignal(tab.run().done, timeout=20000):
        pass
    res = tab.result
    assert res.labels is not None and len(res.labels) == tab.table.rowCount() > 0
    assert np.all(res.std == 0)
    acc = float((res.probs.argmax(1) == res.labels).mean())
    assert res.accuracy == pytest.approx(acc)
    assert f"{acc:.1%}" in tab.summary.text()
    cells = table_values(tab.table)
    assert all(c[-1] in ("normal", "lesion") for c in cells)


def test_cancel_stops_inference_without_result(qtbot, setup):
    session, current, tab = setup
    session.viewer.set_volume(make_volume(nz=40))
    task = tab.run()
    assert tab.run_button.text() == "Cancel"
    tab.run_button.click()  # the same button cancels
    with qtbot.waitSignal(task.done, timeout=20000):
        pass
    assert tab.result is None and tab.summary.text() == "Inference cancelled."
    assert tab.run_button.text() == "Run inference"
