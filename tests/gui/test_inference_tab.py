"""Inference tab: TTA over the open series, strip synchronised with the viewer, CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from tests.gui.helpers import make_volume, stated_rate
from tests.trustdata import checkerboard
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import ACCENT, OUTSIDE_COLOUR, table_values
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
    # the conformal set of each slice is exported (classes joined by "|")
    assert "set" in rows[0] and all(r["set"] for r in rows)
    assert set(rows[0]["set"].split("|")) <= {"normal", "lesion", "(empty)"}


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
    # the number says its level, cut and that TTA was off
    assert f"slice accuracy [p >= 0.5, TTA off] {acc:.3f}" in tab.summary.text()
    cells = table_values(tab.table)
    # the ground truth beside the prediction, marked where they disagree
    pred_names = [res.classes[k] for k in res.predicted]
    truth = [res.classes[k] for k in res.labels]
    assert [c[-1] for c in cells] == [t if t == p else f"{t} ✗"
                                      for t, p in zip(truth, pred_names, strict=True)]
    assert tab.table.horizontalHeaderItem(tab.table.columnCount() - 1).text() == "Label"
    # every row carries its conformal set; "refer" is said where it is not one class
    headers = [tab.table.horizontalHeaderItem(i).text() for i in range(tab.table.columnCount())]
    set_col, pred_col = headers.index("Set"), headers.index("Predicted")
    for c, st in zip(cells, res.sets, strict=True):
        assert c[set_col] == (st or "(empty)")
        one = len([x for x in st.split("|") if x]) == 1
        assert ("(refer)" in c[pred_col]) == (not one) or "outside" in c[pred_col]
    text = tab.trust_label.text()
    assert "Shift: in distribution" in text or "OUT OF DISTRIBUTION" in text
    assert stated_rate(text) and "Conformal:" in text
    assert f"temperature {res.temperature:.2f}" in text


def test_series_outside_training_data_gets_no_confident_bar(
        qtbot, setup, sample_dir, tmp_path):  # noqa: F811
    from vitdesk.imaging.io import load_path

    session, current, tab = setup
    tab.tta_box.setChecked(False)
    vol = load_path(sample_dir / "case_001").volumes[0]
    session.viewer.set_volume(vol)
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    first = tab.result
    assert first.shift is not None
    # a one-epoch run on 18 slices has a loose idea of its own data: the verdict may go
    # either way here, but what is drawn follows it
    if first.out_of_distribution:
        assert "OUT OF DISTRIBUTION" in tab.trust_label.text()
        assert tab.strip_colour() == OUTSIDE_COLOUR
    else:
        assert "Shift: in distribution" in tab.trust_label.text()
        assert tab.strip_colour() == ACCENT
        assert tab.curve.opts["pen"].color().name() == ACCENT
    # a 2-pixel checkerboard of -1000/+1000 HU: nothing like the training slices
    vol.hu[:] = checkerboard(vol.hu.shape[1:])[None]
    session.viewer.set_volume(vol)
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    res = tab.result
    assert res.out_of_distribution and res.outside.all()
    text = tab.trust_label.text()
    assert "OUT OF DISTRIBUTION: outside what the model was trained on" in text
    assert "Do not rely" in text and stated_rate(text)
    # grey, dashed strip instead of the confident accent colour
    assert tab.strip_colour() == OUTSIDE_COLOUR
    assert tab.curve.opts["pen"].color().name() == OUTSIDE_COLOUR
    cells = table_values(tab.table)
    assert all("(outside training data)" in c[1] for c in cells)
    assert tab.table.item(0, 1).foreground().color().name() == OUTSIDE_COLOUR
    rows = list(csv.DictReader(tab.export_csv(tmp_path / "ood.csv").open()))
    assert len(rows) == vol.shape[0]
    assert {r["outside_training"] for r in rows} == {"true"}
    assert all(r["set"] for r in rows)  # the set column is filled


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


def test_trust_is_fitted_once_per_run_and_dropped_with_it(setup, tiny_run):  # noqa: F811
    from vitdesk.analysis.options import EvalOptions
    from vitdesk.engine.run import load_run
    from vitdesk.gui import analysis_jobs as J

    session, current, tab = setup
    o = EvalOptions(shift_train_cases=12)
    a = J.trust_of(current.run, o)
    assert J.trust_of(current.run, o) is a  # every slice read against the same thresholds
    assert a.detector is not None and a.conformal is not None and a.calibrated
    other = load_run(tiny_run, "cpu")
    b = J.trust_of(other, o)
    assert b is not a and b.detector.threshold == pytest.approx(a.detector.threshold)
    # the previous run's entry (and model) is not kept
    assert all(r is other for r, _t in J._TRUST.values())


def test_series_rows_show_the_workspace_label_beside_the_prediction(
        qtbot, setup, sample_dir, tmp_path):  # noqa: F811
    session, current, tab = setup
    classes = list(current.run.classes)
    session.open_workspace(tmp_path / "ws", create=True)
    with qtbot.waitSignal(session.import_finished, timeout=30000):
        session.import_path(sample_dir)
    ws = session.workspace
    for c in classes:
        ws.add_class(c)
    key = sorted(session.library.entries)[0]
    session.open_series(key)
    qtbot.waitUntil(lambda: session.viewer.volume is not None, timeout=15000)
    tab.tta_box.setChecked(False)
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    assert tab.table.horizontalHeaderItem(tab.table.columnCount() - 1).text() != "Label"
    pred = [classes[k] for k in tab.result.predicted]
    ws.set_slice_label(key, 1, pred[1])
    ws.set_slice_label(key, 3, next(c for c in classes if c != pred[3]))
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    assert tab.table.horizontalHeaderItem(tab.table.columnCount() - 1).text() == "Label"
    labels = [row[-1] for row in table_values(tab.table)]
    other = next(c for c in classes if c != pred[3])
    assert labels[1] == pred[1] and labels[3] == f"{other} ✗"
    assert labels[0] == labels[2] == "–"
    assert tab.table.item(3, 0).foreground().color().name() in ("#e0a040", OUTSIDE_COLOUR)
