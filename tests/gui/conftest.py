"""GUI test fixtures: offscreen Qt, isolated settings, no leaked threads or windows."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import shiboken6  # noqa: E402
from PySide6.QtCore import QThread  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from tests.gui.helpers import make_volume  # noqa: E402
from vitdesk.gui.worker import shutdown  # noqa: E402
from vitdesk.imaging.volume import Volume  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    # Never read or write the developer's real QSettings.
    monkeypatch.setenv("VITDESK_SETTINGS", str(tmp_path / "settings.ini"))


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_windows(qapp, monkeypatch):
    """Fail a test that leaves a QThread running; close every window it opened."""
    started: list[QThread] = []
    original = QThread.start

    def recording_start(self, *args):
        started.append(self)
        return original(self, *args)

    monkeypatch.setattr(QThread, "start", recording_start)
    yield
    qapp.processEvents()
    leaked = [t for t in started if shiboken6.isValid(t) and t.isRunning()]
    if leaked:  # stop them so one failure does not hang the suite
        shutdown(5000)
        for t in leaked:
            t.quit()
            t.wait(2000)
    for w in QApplication.topLevelWidgets():
        w.close()
        w.deleteLater()
    qapp.processEvents()
    assert not leaked, f"test left {len(leaked)} QThread(s) running: " + ", ".join(
        t.objectName() or "?" for t in leaked)


@pytest.fixture
def volume() -> Volume:
    return make_volume()
