"""Robustness tab: curves per strength from evaluate_run; shift check on the open series."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import table_values
from vitdesk.gui.tabs.robustness_tab import RobustnessTab


@pytest.fixture
def setup(qtbot, tiny_run):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = RobustnessTab(session, current)
    qtbot.addWidget(tab)
    tab.show()
    current.set_run(load_run(tiny_run, "cpu"))
    yield session, current, tab
    session.shutdown()


def test_curves_table_and_baseline(qtbot, setup):
    session, current, tab = setup
    tab.noise_edit.setText("0, 200")
    tab.shift_edit.setText("")
    tab.contrast_edit.setText("1.0, 0.5")
    tab.eps_edit.setText("0, 8/255")
    assert tab.settings() == ({"noise_hu": (0.0, 200.0), "contrast": (1.0, 0.5)},
                              (0.0, 8 / 255))
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    names = [c.name for c in tab.curves]
    assert names == ["noise_hu", "contrast", "fgsm", "pgd"]  # shift skipped (empty)
    rows = table_values(tab.table)
    assert len(rows) == 8  # two strengths per curve
    accs = [float(r[2]) for r in rows]
    assert all(0 <= a <= 1 for a in accs)
    clean = tab.curves[0].clean_accuracy
    # the headline is the evaluation's accuracy with its level, cut and TTA; the curves'
    # clean accuracy names its subset
    ev = tab.evaluation
    acc = ev.metrics.slice.estimates["accuracy"].value
    text = tab.summary.text()
    assert f"slice accuracy [p >= 0.5, TTA off] {acc:.3f} on all {ev.n_slices} slices" in text
    n_sub = ev.robustness[-1].n
    assert 0 < n_sub <= ev.n_slices
    assert f"class-balanced subset of {n_sub} slices (argmax, TTA off)" in text
    # strength 0 (no noise), factor 1.0 and eps 0 are the clean images
    assert accs[0] == pytest.approx(clean, abs=1e-3)
    assert accs[2] == pytest.approx(clean, abs=1e-3)
    for r in rows:
        assert float(r[3]) == pytest.approx(clean - float(r[2]), abs=2e-3)
    assert rows[5][1] == "8/255"
    # plot: the chosen curve and the clean baseline
    tab.curve_combo.setCurrentIndex(2)
    x, y = tab.curve.getData()
    np.testing.assert_allclose(x, [0, 8])
    np.testing.assert_allclose(y, tab.curves[2].accuracy)
    assert tab.baseline.isVisible() and tab.baseline.value() == pytest.approx(clean)


def test_shift_of_open_series_lists_outliers_and_jumps(qtbot, setup, sample_dir):  # noqa: F811
    from vitdesk.imaging.io import load_path

    session, current, tab = setup
    vol = load_path(sample_dir / "case_001").volumes[0]
    vol.hu[1] = 3000.0  # a slice no training slice resembles
    session.viewer.set_volume(vol)
    with qtbot.waitSignal(tab.check_shift().done, timeout=30000):
        pass
    r = tab.shift.result
    assert len(r.distances) == vol.shape[0] and np.all(np.isfinite(r.distances))
    # evaluate's detector: threshold on held-out slices, the verdict and expected rate
    assert r.reference in ("validation", "held-out training split") and r.n_reference > 0
    assert r.expected_rate == pytest.approx(
        max(0.05, 1 / ((r.n_reference_patients or r.n_reference) + 1)))
    assert tab.shift_summary.text().startswith(r.verdict())
    assert f"expected {r.expected_rate:.0%}" in tab.shift_summary.text()
    assert 1 in r.outliers.tolist()
    assert r.distances[1] == r.distances.max()
    rows = table_values(tab.outlier_table)
    assert len(rows) == len(r.outliers) and rows[0][0] == "slice 2"
    tab.outlier_table.cellClicked.emit(0, 0)
    assert session.viewer.index == 1
    # the distance strip: one point per slice, the threshold line at the detector's
    x, y = tab.dist_curve.getData()
    np.testing.assert_allclose(y, r.distances)
    assert tab.threshold_line.value() == pytest.approx(r.threshold)
    tab.jump_to_slice(4)
    assert session.viewer.index == 4
