"""Before Qt starts on Linux/X11: are the system libraries of Qt's xcb plugin installed?

On a fresh desktop, Qt's xcb platform plugin fails to load until libxcb-icccm4,
libxcb-keysyms1 and friends are installed, and Qt's own message ("Could not load the
Qt platform plugin "xcb" ... libxcb-cursor0 is needed") names only one of them, if the
right one. This module asks the dynamic linker (``ldd``) which libraries the plugin,
and the Qt libraries it links, cannot find, and names the Debian/Ubuntu packages that
provide them. It imports nothing of Qt (loading Qt is what would fail).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# soname -> Debian/Ubuntu package (the libraries PySide6's xcb plugin and Qt GUI link)
DEBIAN_PACKAGES: dict[str, str] = {
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
}

# What a fresh Debian/Ubuntu desktop usually lacks (README's system packages list).
SYSTEM_PACKAGES = ("libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0",
                   "libxcb-render-util0", "libxcb-xkb1", "libxkbcommon-x11-0",
                   "libxcb-cursor0", "libxcb-randr0", "libxcb-shape0", "libegl1",
                   "libfontconfig1", "libdbus-1-3")

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def uses_xcb(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """True when Qt will use its xcb (X11) plugin: Linux/BSD, QT_QPA_PLATFORM unset or
    ``xcb``, and not a Wayland session (where Qt takes its Wayland plugin)."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    if not (plat.startswith("linux") or "bsd" in plat):
        return False
    chosen = env.get("QT_QPA_PLATFORM", "").strip().lower()
    if chosen:
        return chosen.split(":", 1)[0] == "xcb"
    wayland = env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE", "") == "wayland"
    return not wayland


def plugin_files() -> list[Path]:
    """PySide6's xcb plugin and the Qt libraries it links (what ``ldd`` should check)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return []
    qt = Path(spec.origin).parent / "Qt"
    files = [qt / "plugins" / "platforms" / "libqxcb.so", qt / "lib" / "libQt6Widgets.so.6"]
    return [f for f in files if f.is_file()]


def _ldd(path: Path) -> str:
    exe = shutil.which("ldd")
    if exe is None:
        return ""
    try:
        out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def missing_libraries(files: list[Path] | None = None,
                      ldd: Callable[[Path], str] = _ldd) -> list[str]:
    """Sonames the dynamic linker cannot find for ``files`` (default: the xcb plugin)."""
    found: list[str] = []
    for f in plugin_files() if files is None else files:
        for name in _NOT_FOUND.findall(ldd(f)):
            if name not in found:
                found.append(name)
    return found


def package_for(soname: str) -> str | None:
    """The Debian/Ubuntu package of a library soname, or None when not known."""
    return DEBIAN_PACKAGES.get(soname)


def problem(environ: Mapping[str, str] | None = None, platform: str | None = None,
            missing: list[str] | None = None) -> str | None:
    """The message to print when the xcb plugin cannot load here, else None."""
    if not uses_xcb(environ, platform):
        return None
    libs = missing_libraries() if missing is None else missing
    if not libs:
        return None
    packages = sorted({p for p in map(package_for, libs) if p})
    unknown = [lib for lib in libs if package_for(lib) is None]
    fix = []
    if packages:
        fix.append("install them with: sudo apt-get install " + " ".join(packages))
    if unknown:
        fix.append(f"install the package that provides {', '.join(unknown)}")
    return ("vitdesk: error: the workbench cannot start: Qt's X11 display plugin (xcb) needs "
            f"system libraries that are missing ({', '.join(libs)}): {'; '.join(fix)} "
            "(on Debian/Ubuntu; the headless commands work without them)")
