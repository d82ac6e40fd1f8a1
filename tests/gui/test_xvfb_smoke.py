"""A real X11 window under Xvfb: ``vitdesk gui SAMPLE`` starts through the command line
on Qt's xcb plugin (not offscreen), imports the sample, shows every tab, and quits
with exit code 0 and nothing on stderr that looks like a crash.

Needs ``xvfb-run`` (Debian: ``apt-get install xvfb``; the CI set-up installs it);
skipped cleanly without it. The process is driven from inside: a hook wraps
``MainWindow.show`` to switch the tabs once the import is done, then closes the window
as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DRIVER = r"""
import json, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import vitdesk.gui.main_window as mw

report = {"tabs": [], "series": 0, "platform": ""}
original_show = mw.MainWindow.show

def drive(win, waited=0):
    s = win.session
    busy = s.import_task is not None and s.import_task.is_running()
    if (busy or s.viewer.volume is None) and waited < 600:
        QTimer.singleShot(100, lambda: drive(win, waited + 1))
        return
    report["platform"] = QApplication.platformName()
    report["series"] = len(win.browser.series_keys())
    report["size"] = [win.width(), win.height()]
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        QApplication.processEvents()
        image = win.grab().toImage()
        report["tabs"].append([win.tabs.tabText(i), image.width() > 0,
                               win.tabs.widget(i).isVisible()])
    with open(sys.argv[2], "w") as fh:
        json.dump(report, fh)
    win.close()

def show(self):
    original_show(self)
    QTimer.singleShot(200, lambda: drive(self))

mw.MainWindow.show = show
from vitdesk.cli import main
sys.exit(main(["gui", sys.argv[1]]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 smoke test")
def test_real_window_starts_switches_every_tab_and_quits(tmp_path):
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        pytest.skip("xvfb-run not installed (apt-get install xvfb)")
    from vitdesk.gui.xcb_check import missing_libraries

    missing = missing_libraries()
    if missing:
        pytest.skip(f"xcb plugin libraries missing here: {', '.join(missing)}")
    from vitdesk.imaging.synthetic import generate_sample

    sample = tmp_path / "sample"
    generate_sample(sample, patients=2, slices=4, size=48, seed=1)
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "DISPLAY")}
    env.update(PYTHONPATH=str(ROOT), VITDESK_SETTINGS=str(tmp_path / "settings.ini"))
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [xvfb, "-a", "-s", "-screen 0 1440x880x24", sys.executable, "-c", DRIVER,
         str(sample), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for bad in ("Traceback", "This is a bug", "Segmentation", "Could not load the Qt"):
        assert bad not in proc.stderr, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["platform"] == "xcb"
    assert report["series"] == 2
    from vitdesk.gui.main_window import TAB_ORDER

    assert [t[0] for t in report["tabs"]] == list(TAB_ORDER)
    assert all(painted and visible for _name, painted, visible in report["tabs"])
