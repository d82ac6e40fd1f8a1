"""Start-up: no-display message, resources found in the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vitdesk.gui.app import NO_DISPLAY, display_available
from vitdesk.gui.resources import icon, preset_keys, stylesheet
from vitdesk.imaging.windowing import PRESETS

ROOT = Path(__file__).resolve().parents[2]


def _env_without_display() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_gui_without_display_prints_one_line_and_exits_2():
    for argv in (["gui"], []):
        out = subprocess.run([sys.executable, "-m", "vitdesk", *argv], capture_output=True,
                             text=True, env=_env_without_display(), cwd=ROOT, timeout=60)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip() == NO_DISPLAY
        assert "Traceback" not in out.stderr


def test_display_detection():
    assert not display_available({}, "linux")
    assert display_available({"DISPLAY": ":0"}, "linux")
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert display_available({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert display_available({}, "win32")


def test_resources_come_from_the_package():
    qss = stylesheet()
    assert "QMainWindow" in qss and "#4a9eda" in qss
    assert "@ICONS@" not in qss
    arrow = qss.split("url(")[1].split(")")[0]
    assert Path(arrow).is_file()
    assert [p.name for p in preset_keys()] == [p.name for p in PRESETS.values()]
    for name in ("open_folder", "open_file", "workspace", "new_workspace", "report",
                 "settings", "about", "cancel", "reset", "app"):
        assert not icon(name).isNull(), name
        assert not icon(name).pixmap(24, 24).isNull(), name
