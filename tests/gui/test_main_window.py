"""Main window: import in the background (with cancel), errors listed, tabs, browser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from vitdesk.gui.main_window import RUO, TAB_ORDER, MainWindow
from vitdesk.imaging.dicom_write import write_ct_series


@pytest.fixture
def win(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    return w


def _series(folder, hu, desc, pid="P1", sex="M", age="061Y", seed=1):
    return write_ct_series(folder, hu, spacing=(3.0, 0.8, 0.8), origin=(0.0, 0.0, -50.0),
                           patient={"PatientName": "TEST^ONE", "PatientID": pid,
                                    "PatientSex": sex, "PatientAge": age},
                           series_description=desc, window=(1500.0, -600.0), rng_seed=seed)


def test_window_has_the_tabs_and_research_notice(win):
    titles = [win.tabs.tabText(i) for i in range(win.tabs.count())]
    assert titles == list(TAB_ORDER)
    assert "Research use only" in win.windowTitle()
    assert win.ruo_label.text() == RUO and win.ruo_label.isVisible()
    assert win.export_action.isEnabled()
    from vitdesk.gui.tabs.report_tab import ReportTab
    from vitdesk.gui.tabs.training_tab import TrainingTab

    assert isinstance(win.tabs.widget(TAB_ORDER.index("Report")), ReportTab)
    assert isinstance(win.tabs.widget(TAB_ORDER.index("Training")), TrainingTab)


def test_in_memory_volume_is_listed_and_shown(win, volume):
    key = win.session.add_volume(volume)
    assert win.browser.series_keys() == [key]
    assert win.session.viewer.volume is volume  # selecting the first series opens it
    np.testing.assert_array_equal(win.viewer.image.image, volume.hu[6])


def test_background_import_lists_series_and_opens_one(qtbot, win, tmp_path):
    hu = np.full((6, 32, 32), -1000, np.float32)
    hu[:, 8:24, 8:24] = 40.0
    _series(tmp_path / "a", hu, "Chest A", pid="P1")
    _series(tmp_path / "b", hu + 10, "Chest B", pid="P2", sex="F", age="034Y", seed=2)
    (tmp_path / "notes.txt").write_text("not an image")
    task = win.open_path(tmp_path)
    assert task is not None and win.job_bar.isVisible()
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=10000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    assert len(win.browser.series_keys()) == 2
    patients = [win.browser.model.item(r).text() for r in range(win.browser.model.rowCount())]
    assert sorted(p.split(" · ", 1)[1] for p in patients) == ["F 34y", "M 61y"]
    assert all("TEST" not in p and "P1" not in p for p in patients)  # PHI hidden
    vol = win.session.viewer.volume
    assert vol.shape == (6, 32, 32)
    assert (win.session.window.width, win.session.window.level) == (1500.0, -600.0)
    assert vol.hu[3, 16, 16] in (40.0, 50.0)
    qtbot.waitUntil(lambda: not win.job_bar.isVisible(), timeout=5000)


def test_unreadable_files_are_listed_with_a_reason(qtbot, win, tmp_path):
    hu = np.zeros((3, 16, 16), np.float32)
    _series(tmp_path / "good", hu, "ok")
    (broken,) = _series(tmp_path / "cut", hu[:1], "cut", seed=9)
    broken.write_bytes(broken.read_bytes()[:-100])  # pixel data cut short
    bad_nifti = tmp_path / "junk.nii"
    bad_nifti.write_bytes(b"this is not a NIfTI file" * 4)
    win.open_path(tmp_path)
    qtbot.waitUntil(lambda: win.last_errors_dialog is not None, timeout=10000)
    rows = {path: (status, reason) for path, status, reason in win.last_errors_dialog.rows()}
    assert set(rows) == {str(broken), str(bad_nifti)}
    assert rows[str(broken)][0] == "not imported" and "truncated" in rows[str(broken)][1]
    assert rows[str(bad_nifti)][1]
    summary = win.last_errors_dialog.summary.text()
    assert summary.startswith("Imported 1 series (3 files).") and "2 files could not" in summary
    assert "skipped" not in summary
    qtbot.waitUntil(lambda: win.session.current_key is not None, timeout=10000)
    assert win.browser.series_keys() == [win.session.current_key]
    qtbot.waitUntil(lambda: win.session.load_task is None or win.session.load_task.has_ended())


def test_one_bad_file_never_stops_a_folder_import(qtbot, win, tmp_path, monkeypatch):
    """Issue 16 #2: a Modality LUT item without descriptor aborted the import ("This is a
    bug", zero series). Every good file is imported; each other file is listed in full."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.imaging.dcmfactory import ct_series, ct_slice
    from tests.test_one_bad_file import _unknown_vr
    from vitdesk.imaging.scan import scan_path

    root = tmp_path / "study"
    stored = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)
    good = ct_series(root, stored, series_uid="1.2.3.100", prefix="good")
    item = Dataset()
    item.add_new(0x00283006, "US", [0] * 16)  # LUT Data without LUT Descriptor
    lut = ct_slice(root / "lut.dcm", stored[0], series_uid="1.2.3.101",
                   extra={"ModalityLUTSequence": Sequence([item])})
    bad = _unknown_vr(ct_slice(root / "bad.dcm", stored[1], series_uid="1.2.3.102"),
                      b"\x28\x00\x10\x00US")
    (root / "notes.txt").write_text("not an image")
    third = ct_series(root / "more", stored, series_uid="1.2.3.103", prefix="more")
    # and whatever a reader raises for one file (a loader bug) stays that file's problem
    import vitdesk.imaging.dicom as dicom

    real = dicom.read_slice_hu
    boom = str(third[1])

    def flaky(path, *a, **k):
        if str(path) == boom:
            raise TypeError("unsupported operand type(s) for *: 'NoneType' and 'float'")
        return real(path, *a, **k)

    monkeypatch.setattr(dicom, "read_slice_hu", flaky)
    expected = {e.path: e.reason for e in scan_path(root).errors}
    errors = []
    win.session.failed.disconnect()
    win.session.failed.connect(errors.append)
    task = win.open_path(root)
    qtbot.waitUntil(lambda: win.last_errors_dialog is not None, timeout=15000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    assert errors == []  # no "This is a bug" dialog
    assert len(win.browser.series_keys()) == 3  # good, the LUT file, more
    imported = sorted(f for k in win.browser.series_keys()
                      for f in win.session.library.entries[k].files)
    assert imported == sorted(str(p) for p in [*good, lut, *third])
    dialog = win.last_errors_dialog
    rows = {path: (status, reason) for path, status, reason in dialog.rows()}
    assert rows[str(bad)] == ("not imported", expected[str(bad)])  # the full reason
    assert rows[boom][0] == "imported" and "without a preview" in rows[boom][1]
    assert "TypeError" in rows[boom][1] and "\n" not in rows[boom][1]
    assert str(lut) not in rows and str(good[0]) not in rows
    for _status, reason in rows.values():
        assert "Traceback" not in reason and "read_slice_hu" not in reason
    # every reason fits: no elided text in the reason column (rows grow to wrap it)
    t = dialog.table
    for r in range(t.rowCount()):
        fm = t.fontMetrics()
        width = t.columnWidth(2)
        needed = fm.boundingRect(0, 0, max(width - 8, 50), 10_000,
                                 int(Qt.TextFlag.TextWordWrap), t.item(r, 2).text()).height()
        assert t.rowHeight(r) >= needed
    summary = dialog.summary.text()
    assert "Imported 3 series (7 files)." in summary
    assert "1 file could not be read and was not imported" in summary
    assert "1 imported file has a remark" in summary and "1 other file is not an image" in summary
    assert "skipped" not in summary
    status = win.statusBar().currentMessage()
    assert status.startswith("Imported 3 series (7 files);") and "1 file(s) could not" in status
    assert "1 file(s) that are not images left aside" in status


def test_cancelled_import_stops_its_thread_and_imports_nothing(qtbot, win, tmp_path):
    hu = np.zeros((4, 16, 16), np.float32)
    for i in range(3):
        _series(tmp_path / f"s{i}", hu, f"s{i}", seed=i + 5)
    task = win.open_path(tmp_path)
    with qtbot.waitSignals([task.cancelled, task.done], order="strict", timeout=10000):
        win.job_bar.cancel_button.click()
    assert not task.is_running()
    assert win.browser.series_keys() == []
    assert win.session.viewer.volume is None


def test_missing_path_is_a_user_error_not_a_crash(qtbot, win, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("vitdesk.gui.main_window.show_error",
                        lambda parent, exc: shown.append(exc))
    win.session.failed.disconnect()
    win.session.failed.connect(lambda exc: shown.append(exc))
    assert win.open_path(tmp_path / "nope") is None
    assert len(shown) == 1 and "no such file or folder" in str(shown[0])


def test_synthetic_sample_opens(qtbot, win, tmp_path):
    from vitdesk.imaging.synthetic import generate_sample

    generate_sample(tmp_path / "sample", patients=2, slices=6, size=48, seed=3)
    task = win.open_path(tmp_path / "sample")
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=15000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    assert len(win.browser.series_keys()) == 2
    assert win.session.viewer.volume.shape == (6, 48, 48)


def test_geometry_is_remembered(qtbot, tmp_path):
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(900, 520)  # the offscreen screen is 800x600: test the height
    w.show()
    w.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.height() == w.height() == 520  # the default would be 880




def test_dropping_a_folder_imports_it(qtbot, win, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    _series(tmp_path / "dropped", np.zeros((3, 16, 16), np.float32), "dropped")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "dropped"))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                    Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    task = win.session.import_task
    assert task is not None
    qtbot.waitUntil(lambda: len(win.browser.series_keys()) == 1, timeout=10000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=10000)


def test_new_workspace_keeps_open_series_and_is_recent(qtbot, win, tmp_path, volume):
    from vitdesk.gui.settings import open_settings, recent_workspaces

    files = _series(tmp_path / "s", np.zeros((3, 16, 16), np.float32), "kept")
    task = win.open_path(tmp_path / "s")
    qtbot.waitUntil(lambda: task.has_ended(), timeout=10000)
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=10000)
    win.new_workspace(tmp_path / "ws")
    ws = win.session.workspace
    assert [s.files for s in ws.series()] == [tuple(str(f) for f in files)]
    assert len(win.browser.series_keys()) == 1
    assert recent_workspaces(open_settings())[0] == str((tmp_path / "ws").resolve())
    assert "ws" in win.windowTitle() and "Research use only" in win.windowTitle()
    # a workspace folder given as PATH (command line, drop) opens as a workspace
    win.session.close_workspace()
    assert win.open_path(tmp_path / "ws") is None
    assert win.session.workspace is not None and len(win.browser.series_keys()) == 1
    qtbot.waitUntil(lambda: not any(t is not None and t.is_running() for t in (
        win.session.thumb_task, win.session.load_task)), timeout=10000)


def test_failed_load_keeps_the_browser_on_the_series_shown(qtbot, win, tmp_path, monkeypatch):
    """Issue 16 #4: after a failed load the browser highlighted the series that failed
    while the viewer kept showing the previous one."""
    shown = []
    win.session.failed.disconnect()
    win.session.failed.connect(shown.append)
    hu = np.zeros((4, 16, 16), np.float32)
    _series(tmp_path / "a", hu, "A", pid="P1")
    _series(tmp_path / "b", hu + 5, "B", pid="P2", seed=4)
    task = win.open_path(tmp_path)
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=10000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    first = win.session.current_key
    assert win.browser.current_key() == first
    other = next(k for k in win.browser.series_keys() if k != first)
    for f in win.session.library.entries[other].files:
        Path(f).unlink()
    volume_before = win.session.viewer.volume
    win.browser.select(other)  # the user clicks the series whose files are gone
    qtbot.waitUntil(lambda: bool(shown), timeout=10000)
    assert "not found" in str(shown[0]) or "no such" in str(shown[0]).lower()
    assert win.session.viewer.volume is volume_before
    assert win.browser.current_key() == first == win.session.current_key
    # choosing it again tries again (the selection was not left on the failed series)
    win.browser.select(other)
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=10000)
    assert win.browser.current_key() == first


def test_series_opened_without_one_file_lists_it_with_its_reason(qtbot, win, tmp_path):
    """A slice of another size is left out when the series loads: the viewer shows the
    rest (with a warning) and a dialog names the file and why."""
    from tests.imaging.dcmfactory import ct_slice

    stored = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)
    for k in range(3):
        ct_slice(tmp_path / f"a{k}.dcm", stored[k], z=2.0 * k)
    odd = ct_slice(tmp_path / "b.dcm", np.zeros((9, 8), np.int16), z=8)
    task = win.open_path(tmp_path)
    qtbot.waitUntil(lambda: win.session.viewer.volume is not None, timeout=10000)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=5000)
    assert win.session.viewer.volume.n_slices == 3
    qtbot.waitUntil(lambda: win.last_errors_dialog is not None, timeout=5000)
    dialog = win.last_errors_dialog
    assert dialog.windowTitle() == "Series opened with files left out"
    ((path, status, reason),) = dialog.rows()
    assert path == str(odd) and status == "left out" and "8x8" in reason
    assert "without 1 of its files" in dialog.summary.text()
    assert win.viewer.banner.isVisible()


def test_open_slice_by_key_prefix_shows_that_axial_slice(qtbot, win, volume):
    key = win.session.add_volume(volume)
    win.session.viewer.set_axis("coronal")
    assert win.open_slice(key[:8], 3)
    assert win.session.viewer.axis == "axial" and win.session.viewer.index == 3
    np.testing.assert_array_equal(win.viewer.image.image, volume.hu[3])
    messages = []
    win.session.message.connect(messages.append)
    assert not win.open_slice("ffffffff", 2)  # not open: says so, changes nothing
    assert win.session.viewer.index == 3 and "ffffffff is not open" in messages[-1]
    # the browser's search box: KEY#N and Enter
    win.browser.search.setText(f"{key[:8]}#5")
    qtbot.keyClick(win.browser.search, Qt.Key.Key_Return)
    assert win.session.viewer.index == 4


def test_open_slice_loads_a_series_not_yet_shown(qtbot, win, tmp_path):
    hu = np.zeros((6, 16, 16), np.float32)
    hu += np.arange(6, dtype=np.float32)[:, None, None] * 100
    _series(tmp_path / "a", hu, "Chest A", pid="P1")
    _series(tmp_path / "b", hu + 10, "Chest B", pid="P2", seed=2)
    task = win.open_path(tmp_path)
    qtbot.waitUntil(lambda: task.has_ended() and win.session.viewer.volume is not None,
                    timeout=10000)
    other = [k for k in win.browser.series_keys() if k != win.session.current_key][0]
    assert win.open_slice(other, 4)
    qtbot.waitUntil(lambda: win.session.current_key == other, timeout=10000)
    assert win.session.viewer.index == 4
    assert win.browser.current_key() == other


def test_viewer_keys_work_from_the_tabs_but_not_while_typing(qtbot, win, volume):
    from PySide6.QtWidgets import QPushButton

    win.session.add_volume(volume)
    win.activateWindow()
    start = win.session.viewer.index
    win.tabs.setCurrentIndex(TAB_ORDER.index("Windowing"))
    button = next(b for b in win.windowing_tab.findChildren(QPushButton)
                  if b.isVisible() and b.isEnabled())
    button.setFocus()
    qtbot.waitUntil(button.hasFocus)
    qtbot.keyClick(button, Qt.Key.Key_Down)
    assert win.session.viewer.index == start + 1  # focus in a tab: the viewer scrolls
    qtbot.keyClick(button, Qt.Key.Key_C)
    assert win.session.viewer.axis == "coronal"
    search = win.browser.search
    search.setFocus()
    qtbot.waitUntil(search.hasFocus)
    qtbot.keyClicks(search, "as")
    assert search.text() == "as" and win.session.viewer.axis == "coronal"
