"""Settings that stay: the Preferences dialog (QSettings in a temporary file) and the
training form's last values kept per workspace."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from vitdesk.data.workspace import Workspace
from vitdesk.gui import preferences
from vitdesk.gui.preferences import Preferences, PreferencesDialog
from vitdesk.gui.tabs.training_form import TrainingForm


@pytest.fixture
def settings(tmp_path):
    """A QSettings in a temporary INI file (never the user's own)."""
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))
    s = QSettings(str(tmp_path / "prefs.ini"), QSettings.Format.IniFormat)
    yield s
    s.sync()


def test_defaults_round_trip_and_bad_values(settings, tmp_path):
    assert preferences.load(settings) == Preferences()
    p = Preferences(device="cpu", threads=3, output_folder=str(tmp_path / "out"), theme="light")
    preferences.save(settings, p)
    again = QSettings(settings.fileName(), QSettings.Format.IniFormat)
    assert preferences.load(again) == p
    settings.setValue("preferences/device", "tpu")
    settings.setValue("preferences/threads", "many")
    settings.setValue("preferences/theme", "neon")
    assert preferences.load(settings) == Preferences(output_folder=str(tmp_path / "out"))


def test_dialog_shows_and_returns_the_values(qtbot, tmp_path):
    p = Preferences(device="cuda", threads=2, output_folder="/data/runs", theme="light")
    dlg = PreferencesDialog(p, "/tmp/x.ini")
    qtbot.addWidget(dlg)
    assert dlg.preferences() == p
    assert dlg.offline_box.isChecked() and not dlg.offline_box.isEnabled()  # always offline
    dlg.device_combo.setCurrentIndex(dlg.device_combo.findData("cpu"))
    dlg.threads_spin.setValue(1)
    dlg.output_edit.setText(str(tmp_path))
    dlg.theme_combo.setCurrentIndex(dlg.theme_combo.findData("dark"))
    assert dlg.preferences() == Preferences("cpu", 1, str(tmp_path), "dark")


def test_threads_apply_to_torch_or_to_its_start(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(set_num_threads=calls.append)
    monkeypatch.setitem(sys.modules, "torch", fake)
    preferences.apply_threads(3)
    assert calls == [3]
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    preferences.apply_threads(2)
    import os

    assert os.environ["OMP_NUM_THREADS"] == "2"
    preferences.apply_threads(0)  # automatic: left alone
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_theme_switches_the_style_sheet(qapp):
    from vitdesk.gui.resources import stylesheet

    before = qapp.styleSheet()
    try:
        preferences.apply_theme("light", qapp)
        assert qapp.styleSheet() == ""
        preferences.apply_theme("dark", qapp)
        assert qapp.styleSheet() == stylesheet() != ""
    finally:
        qapp.setStyleSheet(before)


def test_output_folder_and_device_reach_the_training_form(qtbot, tmp_path):
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    form.set_devices([("CPU", "cpu"), ("CUDA", "cuda")])
    assert form.cfg.device == "cuda"  # the form's own choice: the GPU
    form.output_root = str(tmp_path / "mine")
    form.prefer_device("cpu")
    form.refresh_workspace()
    assert form.cfg.device == "cpu" and form.device_combo.currentData() == "cpu"
    form.set_devices([("CPU", "cpu"), ("CUDA", "cuda")])  # a later probe keeps it
    assert form.cfg.device == "cpu"
    form.src_edit.setText(str(tmp_path))
    cfg = form.run_config(validate=False)
    assert Path(cfg.out).parent == tmp_path / "mine" / "runs"
    assert str(tmp_path / "mine") in form.out_edit.placeholderText()


# --------------------------------------------------------------------- form memory
class _Host:
    """The open workspace as the main window hands it to the form."""

    def __init__(self) -> None:
        self.ws: Workspace | None = None

    def folder(self) -> str | None:
        return str(self.ws.folder) if self.ws is not None else None


def _form(qtbot, host: _Host) -> TrainingForm:
    form = TrainingForm(host.folder)
    form.store = lambda: host.ws
    qtbot.addWidget(form)
    return form


def test_training_form_remembers_its_values_per_workspace(qtbot, tmp_path):
    host = _Host()
    host.ws = Workspace.open(tmp_path / "ws_a", create=True)
    form = _form(qtbot, host)
    form.refresh_workspace()
    form.batch_spin.setValue(24)
    form.patience_spin.setValue(7)
    form.set_weights("none")
    form.out_edit.setText(str(tmp_path / "a_run"))
    qtbot.waitUntil(lambda: host.ws.get_setting("training_form") is not None, timeout=3000)
    saved = host.ws.get_setting("training_form")
    assert saved["data"]["batch_size"] == 24 and saved["patience"] == 7
    assert saved["out"] == ""  # each run gets a new folder
    assert saved["data"]["source"] == str(host.ws.folder)
    host.ws.close()

    # another workspace keeps its own values
    host.ws = Workspace.open(tmp_path / "ws_b", create=True)
    form_b = _form(qtbot, host)
    form_b.refresh_workspace()
    form_b.batch_spin.setValue(4)
    assert form_b.remember()
    host.ws.close()

    # reopening A (a new form, as after a restart) shows A's values
    host.ws = Workspace.open(tmp_path / "ws_a", create=False)
    again = _form(qtbot, host)
    again.refresh_workspace()
    assert again.batch_spin.value() == 24 and again.cfg.data.batch_size == 24
    assert again.patience_spin.value() == 7
    assert again.weights_combo.currentData() == "none"
    assert again.ws_radio.isChecked()
    assert again.out_edit.text() == ""
    host.ws.close()
    host.ws = Workspace.open(tmp_path / "ws_b", create=False)
    b = _form(qtbot, host)
    b.refresh_workspace()
    assert b.batch_spin.value() == 4
    host.ws.close()
    host.ws = None


def test_unreadable_memory_keeps_the_defaults(qtbot, tmp_path):
    host = _Host()
    host.ws = Workspace.open(tmp_path / "ws", create=True)
    host.ws.set_setting("training_form", {"model": {"img_size": "huge"}, "nonsense": 1})
    form = _form(qtbot, host)
    form.refresh_workspace()  # no crash, the defaults stay
    assert form.img_spin.value() == form.cfg.model.img_size
    host.ws.close()
    host.ws = None


def test_main_window_preferences_dialog_saves_and_applies(qtbot, tmp_path, monkeypatch):
    from vitdesk.gui.main_window import MainWindow

    ini = tmp_path / "win.ini"
    s = QSettings(str(ini), QSettings.Format.IniFormat)
    win = MainWindow(settings=s)
    qtbot.addWidget(win)
    win.show()
    dlg = win.show_settings()
    dlg.output_edit.setText(str(tmp_path / "runs_here"))
    dlg.device_combo.setCurrentIndex(dlg.device_combo.findData("cpu"))
    dlg.accept()
    assert win.preferences.output_folder == str(tmp_path / "runs_here")
    assert win.training_tab.form.output_root == str(tmp_path / "runs_here")
    win.close()
    # a new window (the next start) reads them back
    win2 = MainWindow(settings=QSettings(str(ini), QSettings.Format.IniFormat))
    qtbot.addWidget(win2)
    win2.show()
    assert win2.preferences.output_folder == str(tmp_path / "runs_here")
    assert win2.preferences.device == "cpu"
    assert win2.training_tab.form.output_root == str(tmp_path / "runs_here")
    assert QApplication.instance() is not None


def test_data_source_sits_at_the_top_of_the_form(qtbot):
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    first = form.layout().itemAt(0).widget()
    assert first.title() == "Data and output" and first.isAncestorOf(form.src_edit)
