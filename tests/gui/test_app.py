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


# ---- issue 16 #10: the xcb plugin's missing system libraries, named before Qt loads ----

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /x/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f)
"""


def test_xcb_is_checked_only_where_qt_uses_it():
    from vitdesk.gui.xcb_check import uses_xcb

    assert uses_xcb({"DISPLAY": ":0"}, "linux")
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"},
                        "linux")
    assert not uses_xcb({"DISPLAY": ":0"}, "darwin") and not uses_xcb({}, "win32")


def test_missing_libraries_are_named_with_their_debian_packages():
    from vitdesk.gui.xcb_check import missing_libraries, problem

    libs = missing_libraries([Path("libqxcb.so")], ldd=lambda _p: LDD_OUTPUT)
    assert libs == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    msg = problem({"DISPLAY": ":0"}, "linux", missing=libs)
    assert msg.count("\n") == 0 and msg.startswith("vitdesk: error:")
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in msg
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in msg
    assert problem({"DISPLAY": ":0"}, "linux", missing=[]) is None
    assert problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", missing=libs) is None
    odd = problem({"DISPLAY": ":0"}, "linux", missing=["libQt6XcbQpa.so.6"])
    assert "provides libQt6XcbQpa.so.6" in odd and "apt-get" not in odd


def test_real_ldd_reports_what_the_plugin_cannot_find(tmp_path):
    import shutil

    from vitdesk.gui.xcb_check import missing_libraries, plugin_files

    plugin = next((f for f in plugin_files() if f.name == "libqxcb.so"), None)
    if plugin is None or shutil.which("ldd") is None:
        import pytest

        pytest.skip("no xcb plugin or no ldd here")
    assert "libQt6XcbQpa.so.6" not in missing_libraries([plugin])  # installed as shipped
    # copied away from PySide6's Qt/lib, its rpath no longer finds Qt's own library
    lonely = tmp_path / "a" / "b" / "libqxcb.so"
    lonely.parent.mkdir(parents=True)
    shutil.copy(plugin, lonely)
    assert "libQt6XcbQpa.so.6" in missing_libraries([lonely])


def test_gui_start_with_missing_xcb_libraries_exits_2_naming_packages(monkeypatch, capsys):
    import vitdesk.gui.xcb_check as xcb
    from vitdesk.gui.app import main

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.setattr(xcb, "missing_libraries",
                        lambda *a, **k: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert main() == 2
    err = capsys.readouterr().err.strip()
    assert "libxcb-icccm4 libxcb-keysyms1" in err and "Traceback" not in err
