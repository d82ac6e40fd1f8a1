"""Start the workbench: check for a display, style the app, open the main window."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

NO_DISPLAY = (
    "vitdesk: the workbench needs a graphical display (none found: DISPLAY and "
    "WAYLAND_DISPLAY are unset). Run it from a desktop session, or use the headless "
    "commands instead: vitdesk inspect|train|evaluate|predict|report|demo (see vitdesk --help)."
)


def display_available(environ: dict[str, str] | None = None,
                      platform: str | None = None) -> bool:
    """True when Qt can open windows here (or the caller chose a platform plugin)."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    if env.get("QT_QPA_PLATFORM"):
        return True  # offscreen, vnc, wayland...: the user chose explicitly
    if plat.startswith("linux") or "bsd" in plat:
        return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have a window system


def main(path: str | None = None) -> int:
    """Run the workbench; returns the process exit code (2 without a display)."""
    from vitdesk.offline import go_offline

    go_offline()  # the GUI may be started without the command line (embedding, tests)
    if not display_available():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    from vitdesk.gui.xcb_check import problem as xcb_problem

    missing = xcb_problem()  # before Qt loads: its own message names the wrong library
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if path is not None and not Path(path).exists():
        print(f"vitdesk: error: {path}: no such file or folder; check the path",
              file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication

    from vitdesk.gui.main_window import MainWindow
    from vitdesk.gui.resources import stylesheet

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("vitdesk")
    app.setOrganizationName("vitdesk")
    app.setStyle("Fusion")  # the dark style sheet is drawn over Fusion on every OS
    app.setStyleSheet(stylesheet())
    window = MainWindow()
    _install_excepthook(window)
    window.show()
    if path is not None:
        window.open_path(path)
    return int(app.exec())


def _install_excepthook(parent) -> None:
    """Show exceptions raised in slots as error dialogs instead of losing them on stderr."""
    from vitdesk.gui.dialogs import show_error

    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        if isinstance(exc, KeyboardInterrupt):
            return
        with contextlib.suppress(Exception):  # never raise from the hook itself
            show_error(parent, exc.with_traceback(tb))

    sys.excepthook = hook
