"""Dataset tab: classes, labels by button and keyboard, CSV import, counts, split, window."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import Qt

from vitdesk.data.workspace import Workspace
from vitdesk.gui.main_window import MainWindow
from vitdesk.gui.tabs.training_input import PREFS_FILE, SETTING_KEY
from vitdesk.imaging.dicom_write import write_ct_series
from vitdesk.imaging.windowing import WindowSpec


def _write(folder, pid, sex, age, seed, n=8):
    hu = np.full((n, 24, 24), -1000, np.float32)
    hu[:, 6:18, 6:18] = np.arange(n, dtype=np.float32)[:, None, None] * 10
    return write_ct_series(folder, hu, spacing=(2.0, 1.0, 1.0),
                           patient={"PatientID": pid, "PatientName": f"NAME^{pid}",
                                    "PatientSex": sex, "PatientAge": age},
                           series_description=f"series {pid}", rng_seed=seed)


@pytest.fixture
def data(tmp_path):
    _write(tmp_path / "data" / "p1", "P1", "F", "052Y", 1)
    _write(tmp_path / "data" / "p2", "P2", "M", "067Y", 2)
    return tmp_path / "data"


@pytest.fixture
def win(qtbot, tmp_path, data):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.session.new_workspace(tmp_path / "ws")
    task = w.open_path(data)
    qtbot.waitUntil(lambda: w.session.viewer.volume is not None, timeout=10000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    tab = w.dataset_tab
    tab.add_class("normal")
    tab.add_class("lesion")
    return w


def _reopen(tmp_path):
    return Workspace.open(tmp_path / "ws", create=False)


def test_series_and_range_labels_survive_reopening(qtbot, win, tmp_path):
    tab, viewer = win.dataset_tab, win.session.viewer
    key = win.session.current_key
    assert tab.label_series("normal")
    viewer.set_index(2)
    tab.mark_start()
    viewer.set_index(4)
    tab.mark_end()
    assert tab.marked_range() == (2, 4)
    assert tab.label_range("lesion")
    assert "slice 5: lesion (own label)" in tab.current_label.text()
    win.session.close_workspace()
    with _reopen(tmp_path) as ws:
        assert ws.series_label(key) == "normal"
        assert ws.slice_labels(key) == {2: "lesion", 3: "lesion", 4: "lesion"}
        assert ws.counts_by_class() == {"normal": 5, "lesion": 3}


def test_keyboard_labels_slice_and_series(qtbot, win, tmp_path):
    win.activateWindow()
    qtbot.waitUntil(lambda: win.isActiveWindow(), timeout=3000)
    key = win.session.current_key
    g = win.viewer.graphics
    g.setFocus()
    win.session.viewer.set_index(1)
    qtbot.keyClick(g, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)  # slice -> lesion
    qtbot.keyClick(g, Qt.Key.Key_Down)  # the viewer still scrolls
    assert win.session.viewer.index == 2
    qtbot.keyClick(g, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.ShiftModifier)  # series -> normal
    ws = win.session.workspace
    assert ws.slice_labels(key) == {1: "lesion"}
    assert ws.series_label(key) == "normal"
    counts = win.dataset_tab.counts()
    assert counts == {"normal": 7, "lesion": 1}
    table = win.dataset_tab.counts_table
    assert table.item(0, 0).text() == "All"
    assert [table.item(0, c).text() for c in (1, 2)] == ["7", "1"]
    groups = [table.item(r, 0).text() for r in range(table.rowCount())]
    assert "Sex F" in groups or "Sex M" in groups


def test_labels_csv_import(win, data, tmp_path):
    csv = tmp_path / "labels.csv"
    files = sorted((data / "p2").glob("*.dcm"))
    csv.write_text("path,label\n"
                   f"{data / 'p1'},normal\n"
                   f"{files[0]},lesion\n"
                   "missing/file.dcm,lesion\n")
    result = win.dataset_tab.import_labels_csv(csv)
    assert (result.series_labels, result.slice_labels) == (1, 1)
    assert result.unmatched == ("missing/file.dcm",)
    assert win.dataset_tab.counts() == {"normal": 8, "lesion": 1}


def test_split_is_by_patient_and_shown(qtbot, win, data):
    _write(data / "p3", "P3", "F", "041Y", 3)
    _write(data / "p4", "P4", "M", "077Y", 4)
    task = win.open_path(data)  # re-import: adds the two new series only
    with qtbot.waitSignal(task.done, timeout=10000):
        pass
    ws = win.session.workspace
    assert len(ws.series()) == 4
    for s in ws.series():
        ws.set_series_label(s.key, "lesion" if s.description[-1] in "13" else "normal")
    panel = win.dataset_tab.training_input
    panel.fraction_spins[0].setValue(0.5)
    panel.fraction_spins[1].setValue(0.0)
    panel.fraction_spins[2].setValue(0.5)
    task = panel.compute_split()
    with qtbot.waitSignal(task.done, timeout=15000):
        pass
    rows = {r[0]: r for r in panel.summary.rows}
    classes = panel.summary.classes
    assert classes == ("lesion", "normal")
    # 4 patients, half to train and half to test, each split with both classes
    assert (rows["train"][1], rows["val"][1], rows["test"][1]) == (2, 0, 2)
    assert rows["train"][2] == rows["test"][2] == 16
    assert rows["train"][3] == rows["test"][3] == (8, 8)
    assert panel.split_table.rowCount() == 3


def test_window_choice_previews_rgb_and_is_stored(qtbot, win, tmp_path):
    panel = win.dataset_tab.training_input
    panel.stack_radio.setChecked(True)
    spec = panel.window_spec()
    assert spec.names == ("lung", "mediastinum", "bone")
    rgb = panel.preview_rgb
    vol, i = win.session.viewer.volume, win.session.viewer.index
    expected = np.rint(np.moveaxis(spec.apply(vol.hu[i]), 0, -1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    assert not np.array_equal(rgb[..., 0], rgb[..., 2])  # three different windows
    panel.seed_spin.setValue(7)
    # stored in the workspace database, readable by a second connection at once
    with _reopen(tmp_path) as ws:
        stored = ws.get_setting(SETTING_KEY)
    assert WindowSpec.from_dict(stored["window"]).names == ("lung", "mediastinum", "bone")
    assert stored["seed"] == 7
    assert not (tmp_path / "ws" / PREFS_FILE).exists()  # no side file any more
    # a fresh window on the same workspace restores the choice
    again = MainWindow()
    qtbot.addWidget(again)
    again.session.open_workspace(tmp_path / "ws")
    p2 = again.dataset_tab.training_input
    assert p2.stack_radio.isChecked() and p2.seed_spin.value() == 7
    assert again.browser.series_keys()  # the workspace lists its series at once
    # it opens the first series and makes previews in the background: let both end
    qtbot.waitUntil(lambda: again.session.viewer.volume is not None, timeout=10000)
    qtbot.waitUntil(lambda: not any(t is not None and t.is_running() for t in (
        again.session.thumb_task, again.session.load_task)), timeout=10000)


def test_legacy_prefs_json_is_adopted_once(qtbot, tmp_path):
    folder = tmp_path / "old_ws"
    Workspace.open(folder).close()
    legacy = folder / PREFS_FILE
    stack = WindowSpec.parse("lung,mediastinum,bone").to_dict()
    legacy.write_text(json.dumps({"window": stack, "fractions": [0.6, 0.2, 0.2], "seed": 11}))
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.session.open_workspace(folder) is not None
    panel = w.dataset_tab.training_input
    assert panel.stack_radio.isChecked() and panel.seed_spin.value() == 11
    assert panel.fractions() == pytest.approx((0.6, 0.2, 0.2))
    assert w.session.workspace.get_setting(SETTING_KEY)["seed"] == 11
    assert legacy.is_file()  # the user's file is not deleted
    # read once: a later edit of the json no longer counts, the setting does
    legacy.write_text(json.dumps({"window": stack, "seed": 3}))
    w.session.close_workspace()
    w.session.open_workspace(folder)
    assert panel.seed_spin.value() == 11
    panel.seed_spin.setValue(12)
    assert w.session.workspace.get_setting(SETTING_KEY)["seed"] == 12
    assert json.loads(legacy.read_text())["seed"] == 3  # changes go to the workspace only
    w.session.close_workspace()


def test_labelling_without_workspace_asks_for_one(qtbot, tmp_path, data, volume):
    w = MainWindow()
    qtbot.addWidget(w)
    w.session.add_volume(volume)
    messages = []
    w.session.message.connect(messages.append)
    assert not w.dataset_tab.label_slice("x")
    assert not w.dataset_tab.label_slice_button.isEnabled()
    w.dataset_tab._run(None)
    assert "workspace" in messages[-1]
