"""One long walk through the workbench in ONE window, as a user goes (issue 16).

The Fairness segfault lived between tabs: evaluate fairness on one run, switch run (or
let a training run finish), and the next paint of the chart crashed. Each tab's own
tests start from a fresh widget and never saw it. This test keeps one MainWindow open
from start to finish: open a demo-like folder, look at a series, evaluate fairness,
switch run, evaluate again, train a tiny run to the end, visit every tab (painting
each), infer with TTA, write the report, and close. pytest-qt fails it on any
exception raised in a Qt slot or paint; every error the session would show in a
dialog is collected and must stay empty.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.main_window import TAB_ORDER, MainWindow
from vitdesk.report.data import NOTICE


def _manifest(sample, out):
    rows = list(csv.DictReader((sample / "labels.csv").open()))
    path = out / "all.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for r in rows:
            w.writerow([str(sample / r["path"]), r["label"]])
    return path


def _choose_run(qtbot, win, tab, name: str) -> None:
    """Pick run ``name`` in a tab's run picker the way a click does, wait for it."""
    picker = tab.picker
    picker.refresh()
    idx = next(i for i in range(picker.combo.count())
               if str(picker.combo.itemData(i) or "").endswith(name))
    with qtbot.waitSignal(win.current_run.changed, timeout=30000):
        picker.combo.setCurrentIndex(idx)
        picker.combo.activated.emit(idx)
    assert win.current_run.run_dir.name == name


def _paint(win) -> None:
    """Render the whole window (every visible item's boundingRect and paint run)."""
    image = win.grab().toImage()
    assert image.width() > 0


@pytest.mark.timeout(600)
def test_a_whole_session_in_one_window(qtbot, tiny_run, sample_dir, tmp_path):  # noqa: F811
    # a demo-like folder: the sample plus two trained runs beside it
    demo = tmp_path / "vitdesk-demo"
    shutil.copytree(sample_dir, demo / "sample")
    shutil.copytree(tiny_run, demo / "baseline")
    shutil.copytree(tiny_run, demo / "run")
    manifest = _manifest(demo / "sample", tmp_path)

    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1440, 880)
    win.show()
    qtbot.waitExposed(win)
    win.current_run.device = "cpu"
    problems: list[BaseException] = []
    win.session.failed.disconnect()
    win.session.failed.connect(problems.append)
    win.current_run.failed.connect(problems.append)

    # ---- open the folder, look at a series
    task = win.open_path(demo)
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=30000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=10000)
    assert len(win.browser.series_keys()) == 6
    win.viewer.viewer.step(1)
    win.viewer.graphics.scene().sigMouseMoved.emit(
        win.viewer.image.sceneBoundingRect().center())
    assert " HU" in win.viewer.cursor_label.text()
    _paint(win)

    # ---- fairness on the baseline, then switch run: the chart is cleared and repainted
    fair = win.fairness_tab
    win.tabs.setCurrentIndex(TAB_ORDER.index("Fairness"))
    _choose_run(qtbot, win, fair, "baseline")
    fair.source.set_source(str(manifest))
    fair.boot_spin.setValue(50)
    with qtbot.waitSignal(fair.run().done, timeout=60000):
        pass
    assert fair.outcome is not None, fair.summary.text()
    assert len(fair.bar_heights()) >= 2
    _paint(win)
    _choose_run(qtbot, win, fair, "run")
    assert fair.outcome is None and len(fair.bar_heights()) == 0
    _paint(win)
    qtbot.wait(30)

    # evaluate again, so that the training run below finishes after an evaluation
    with qtbot.waitSignal(fair.run().done, timeout=60000):
        pass
    assert fair.outcome is not None
    _paint(win)

    # ---- train a tiny run to the end (its finish loads it into every analysis tab)
    win.tabs.setCurrentIndex(TAB_ORDER.index("Training"))
    train = win.training_tab
    f = train.form
    f.model_combo.setCurrentText("vit_test_tiny")
    f.img_spin.setValue(32)
    f.set_weights("none")
    f.recipe_combo.setCurrentIndex(f.recipe_combo.findData("full"))
    f.stage_table.epochs_spin(0).setValue(1)
    f.batch_spin.setValue(8)
    f.attention_combo.setCurrentIndex(f.attention_combo.findData("eager"))
    f.device_combo.setCurrentIndex(max(0, f.device_combo.findData("cpu")))
    f.src_radio.setChecked(True)
    f.src_edit.setText(str(demo / "sample"))
    assert not f.problem, f.problem
    finished = []
    train.run_finished.connect(finished.append)
    new_run = demo / "new_run"
    task = train.start(out=str(new_run))
    assert task is not None
    qtbot.waitUntil(lambda: bool(finished), timeout=120000)
    qtbot.waitUntil(lambda: win.current_run.run_dir is not None
                    and win.current_run.run_dir.name == "new_run", timeout=60000)
    assert fair.outcome is None and len(fair.bar_heights()) == 0  # cleared, not crashed
    assert len(train.plots.epoch_loss.data) >= 1
    _paint(win)

    # ---- every tab, painted in turn
    for i, name in enumerate(TAB_ORDER):
        win.tabs.setCurrentIndex(i)
        qtbot.wait(10)
        assert win.tabs.stack.currentWidget() is win.tabs.widget(i), name
        assert win.tabs.widget(i).isVisible(), name
        _paint(win)

    # ---- inference with TTA on the open series: the uncertainty band is drawn
    inf = win.inference_tab
    win.tabs.setCurrentIndex(TAB_ORDER.index("Inference"))
    combo = inf.source.combo
    combo.setCurrentIndex(next(i for i in range(combo.count())
                               if combo.itemData(i) == ("split", "series")))
    assert inf.source.value()[1] == "series"
    with qtbot.waitSignal(inf.run().done, timeout=60000):
        pass
    assert inf.result is not None, inf.summary.text()
    x, p, s = inf.strip_data()
    assert len(x) >= 1 and np.all((p >= 0) & (p <= 1))
    if s.max() > 0:
        assert not inf.band.path().isEmpty()
    _paint(win)

    # ---- the report of the run just trained
    rep = win.report_tab
    win.tabs.setCurrentIndex(TAB_ORDER.index("Report"))
    rep.out_edit.setText(str(tmp_path / "report"))
    rep.robust_check.setChecked(False)
    rep.shift_check.setChecked(False)
    rep.att_spin.setValue(0)
    rep.boot_spin.setValue(50)
    with qtbot.waitSignal(rep.build().done, timeout=120000):
        pass
    assert rep.files is not None, rep.status.text()
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "report.pdf").is_file()
    assert NOTICE in rep.preview.toPlainText()
    _paint(win)

    # ---- back to Fairness after all that, switch run once more, then quit
    win.tabs.setCurrentIndex(TAB_ORDER.index("Fairness"))
    _choose_run(qtbot, win, fair, "baseline")
    _paint(win)
    assert problems == [], [str(p) for p in problems]
    win.close()
    assert not win.isVisible()
