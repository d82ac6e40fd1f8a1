"""Fairness tab: per-group table, gaps with intervals and bars from evaluate_run."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.analysis_common import table_values
from vitdesk.gui.tabs.fairness_tab import FairnessTab


def _manifest(sample, out):
    """Every slice of the sample through a manifest (an 'external' source: scored whole)."""
    rows = list(csv.DictReader((sample / "labels.csv").open()))
    path = out / "all.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for r in rows:
            w.writerow([str(sample / r["path"]), r["label"]])
    return path


def test_fairness_table_gaps_and_bars(qtbot, tiny_run, sample_dir, tmp_path):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = FairnessTab(session, current)
    qtbot.addWidget(tab)
    tab.show()
    current.set_run(load_run(tiny_run, "cpu"))
    tab.source.set_source(str(_manifest(sample_dir, tmp_path)))
    tab.boot_spin.setValue(60)
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    assert tab.outcome is not None, tab.summary.text()
    ev = tab.outcome
    assert ev.n_slices == 36 and ev.split == "external"
    # the accuracy says its level, cut and TTA; the gap intervals are the report's
    acc = ev.metrics.slice.estimates["accuracy"].value
    assert f"slice accuracy [p >= 0.5, TTA off] {acc:.3f}" in tab.summary.text()
    assert all(rep.gap_ci for rep in ev.fairness)
    assert ev.to_dict()["fairness"][0]["gap_ci"]["accuracy_gap"] == list(
        ev.fairness[0].gap_ci["accuracy_gap"])

    tab.attr_combo.setCurrentIndex(0)  # sex: the sample has both
    rep, ci = tab.report()
    groups = [r.group for r in rep.rows]
    assert set(groups) == {"F", "M"}
    cells = table_values(tab.table)  # metrics down, one column per group
    header = [tab.table.horizontalHeaderItem(c).text().split()[0]
              for c in range(1, tab.table.columnCount())]
    assert header == groups
    assert cells[0][0] == "n" and sum(int(v) for v in cells[0][1:]) == 36
    assert cells[1][0] == "Accuracy"
    for r, cell in zip(rep.rows, cells[1][1:], strict=True):
        acc = r.metrics["accuracy"]
        assert 0 <= acc.lo <= acc.value <= acc.hi <= 1
        assert cell.startswith(f"{acc.value:.2f}")
    # the gaps are the spread of the per-group values, each with a finite interval
    accs = [r.metrics["accuracy"].value for r in rep.rows]
    gap = rep.disparities["accuracy_gap"]
    assert gap == pytest.approx(max(accs) - min(accs))
    assert tab.gap_labels["accuracy_gap"].text().startswith(f"{gap:.3f}")
    lo, hi = ci["accuracy_gap"]
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi
    dp = rep.disparities["demographic_parity_difference"]
    assert np.isfinite(dp) and 0 <= dp <= 1
    np.testing.assert_allclose(tab.bar_heights(), accs)

    tab.attr_combo.setCurrentIndex(1)  # age bands
    rep, _ = tab.report()
    assert rep.attribute == "age" and tab.table.columnCount() - 1 == len(rep.rows) >= 2
    tab.metric_combo.setCurrentIndex(3)  # positive rate
    np.testing.assert_allclose(tab.bar_heights(),
                               [r.metrics["positive_rate"].value for r in rep.rows])
    session.shutdown()


def test_switching_run_after_evaluation_clears_the_chart_and_paints(
        qtbot, tiny_run, sample_dir, tmp_path):  # noqa: F811
    """Issue 16 #1: evaluate, then switch run (or a training finishes): the cleared error
    bars once kept stale arrays and crashed in boundingRect/paint."""
    import shutil

    from PySide6.QtGui import QImage

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = FairnessTab(session, current)
    qtbot.addWidget(tab)
    tab.resize(700, 900)
    tab.show()
    from vitdesk.engine.run import load_run

    current.set_run(load_run(tiny_run, "cpu"))
    tab.source.set_source(str(_manifest(sample_dir, tmp_path)))
    tab.boot_spin.setValue(60)
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    assert tab.outcome is not None, tab.summary.text()
    n_groups = len(tab.report()[0].rows)
    assert len(tab.bar_heights()) == n_groups >= 2
    assert len(tab.errors.opts["x"]) == len(tab.errors.opts["top"]) > 0
    tab.plot.grab()  # paints the bars: boundingRect and paint run

    # switch run the way the picker does (a background load), then paint again
    with qtbot.waitSignal(current.changed, timeout=30000):
        current.load(other)
    assert tab.outcome is None and tab.table.rowCount() == 0
    assert len(tab.bar_heights()) == 0
    assert len(tab.errors.opts["x"]) == len(tab.errors.opts["y"]) == 0
    assert tab.errors.opts["top"] is None and tab.errors.opts["bottom"] is None
    assert tab.errors.boundingRect().isEmpty()
    image: QImage = tab.plot.grab().toImage()
    assert image.width() > 0
    qtbot.wait(50)  # let a queued repaint run too

    # a finished training run loads the same way: evaluate again, then a new run arrives
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    assert tab.outcome is not None
    tab.plot.grab()
    current.set_run(load_run(tiny_run, "cpu"))  # what Training's run_finished leads to
    tab.plot.grab()
    tab.attr_combo.setCurrentIndex(1)  # redraw with nothing evaluated: stays empty
    tab.metric_combo.setCurrentIndex(2)
    assert len(tab.bar_heights()) == 0 and len(tab.errors.opts["x"]) == 0
    tab.plot.grab()
    session.shutdown()


def test_error_bar_helper_replaces_every_array(qtbot):
    import pyqtgraph as pg

    from vitdesk.gui.plots import clear_error_bars, set_error_bars

    w = pg.PlotWidget()
    qtbot.addWidget(w)
    item = pg.ErrorBarItem(beam=0.2)
    w.getPlotItem().addItem(item)
    set_error_bars(item, [0, 1], [0.5, 0.6], top=[0.1, 0.2], bottom=[0.1, np.nan])
    assert item.opts["bottom"].tolist() == [0.1, 0.0]  # a NaN arm draws nothing
    rect = item.boundingRect()
    assert rect.top() == pytest.approx(0.4) and rect.bottom() == pytest.approx(0.8)
    clear_error_bars(item)
    assert item.opts["top"] is None and len(item.opts["x"]) == 0
    assert item.boundingRect().isEmpty()
    w.grab()
    with pytest.raises(ValueError, match="2 x values but 1 y"):
        set_error_bars(item, [0, 1], [0.5])


def test_fairness_with_tta_says_so_and_matches_evaluate(qtbot, tiny_run, sample_dir,  # noqa: F811
                                                        tmp_path):
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = FairnessTab(session, current)
    qtbot.addWidget(tab)
    current.set_run(load_run(tiny_run, "cpu"))
    src = str(_manifest(sample_dir, tmp_path))
    tab.source.set_source(src)
    tab.boot_spin.setValue(50)
    tab.tta_check.setChecked(True)
    with qtbot.waitSignal(tab.run().done, timeout=60000):
        pass
    ev = tab.outcome
    assert ev is not None, tab.summary.text()
    n_views = len(TTAConfig().views())
    assert ev.tta == {**ev.tta, "n_views": n_views}
    acc = ev.metrics.slice.estimates["accuracy"].value
    words = f"slice accuracy [p >= 0.5, TTA on ({n_views} views)] {acc:.3f}"
    assert words in tab.summary.text() and "TTA off" not in tab.summary.text()
    # the same number as the command line's evaluate --tta on the same slices
    ref = evaluate_run(tiny_run, src, tta=TTAConfig(), robustness=False, shift=False,
                       attention_samples=0, n_boot=50, device="cpu")
    assert ref.metrics.slice.estimates["accuracy"].value == pytest.approx(acc)
