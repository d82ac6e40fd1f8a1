"""Dataset tab "Suggest next": ranks the workspace's unlabelled slices with the loaded run,
leaves labelled ones out, and a click opens the slice in the viewer."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.main_window import MainWindow


@pytest.fixture
def pool(tmp_path):
    from vitdesk.imaging.synthetic import generate_sample

    # seed 0 like sample_dir: its first six patients are the run's (test patients left out)
    return generate_sample(tmp_path / "pool", patients=8, slices=6, size=48, seed=0).out_dir


def test_suggest_next_lists_unlabelled_slices_and_jumps_the_viewer(qtbot, tmp_path, pool,
                                                                   tiny_run):  # noqa: F811
    from vitdesk.engine.run import load_run

    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.session.new_workspace(tmp_path / "ws")
    task = w.open_path(pool)
    qtbot.waitUntil(lambda: w.session.viewer.volume is not None, timeout=15000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=15000)
    tab, panel = w.dataset_tab, w.dataset_tab.suggest_panel
    tab.add_class("normal")
    tab.add_class("lesion")
    assert not panel.suggest_button.isEnabled()  # no run loaded yet
    ws = w.session.workspace
    first = ws.series()[0]
    ws.set_series_label(first.key, "normal")  # a labelled series is never suggested
    w.current_run.set_run(load_run(tiny_run, device="cpu"))
    assert panel.suggest_button.isEnabled()
    panel.n_spin.setValue(6)
    task = panel.start()
    with qtbot.waitSignal(task.done, timeout=60000):
        pass
    res = panel.result
    assert res is not None and panel.list.count() == len(res.suggestions) == 6
    assert first.key not in {s.series for s in res.suggestions}
    assert res.left_out["labelled"] == first.n_slices and res.left_out["test patients"] > 0
    # a click opens that series at that slice
    item = panel.list.item(2)
    key, index = item.data(Qt.ItemDataRole.UserRole)
    panel.list.itemClicked.emit(item)
    qtbot.waitUntil(lambda: w.session.current_key == key
                    and w.session.viewer.index == index, timeout=15000)
    # labelling it with the usual action strikes the row through
    assert not item.font().strikeOut()
    assert tab.label_slice("lesion")
    assert item.font().strikeOut()
    others = [panel.list.item(r) for r in range(panel.list.count()) if r != 2]
    assert not any(o.font().strikeOut() for o in others)
