"""Find the shipped resources (style sheet, icons, preset keys) in source tree or install.

Resources live in the package (``vitdesk/resources``), so ``importlib.resources``
finds them both in a source checkout and in an installed wheel
(``[tool.setuptools.package-data] vitdesk = ["resources/*", "resources/**/*"]``).
"""

from __future__ import annotations

import csv
import io
from functools import cache
from importlib import resources
from pathlib import Path

from PySide6.QtGui import QIcon

from vitdesk.imaging.windowing import PRESETS, Preset


def _root():
    return resources.files("vitdesk") / "resources"


def read_text(name: str) -> str:
    """Text of one resource file, e.g. ``"style.qss"``."""
    return (_root() / name).read_text(encoding="utf-8")


@cache
def _icons_dir() -> str:
    # as_file gives a real folder for a normal install; zip installs extract once.
    ctx = resources.as_file(_root() / "icons")
    path = ctx.__enter__()
    return Path(path).as_posix()


def stylesheet() -> str:
    """The dark reading-room style sheet (icon URLs resolved to the installed folder)."""
    return read_text("style.qss").replace("@ICONS@", _icons_dir())


@cache
def icon(name: str) -> QIcon:
    """An SVG icon from ``resources/icons`` by stem (``"open_folder"``)."""
    path = _root() / "icons" / f"{name}.svg"
    with resources.as_file(path) as real:
        return QIcon(str(real))


def preset_keys() -> list[Preset]:
    """Presets bound to number keys 1-9, in key order (from ``presets.csv``).

    The W/L values themselves come from :data:`vitdesk.imaging.windowing.PRESETS`
    (one definition for display, training and inference); the CSV only says which
    preset each key applies.
    """
    rows = csv.DictReader(io.StringIO(read_text("presets.csv")))
    out = []
    for row in sorted(rows, key=lambda r: int(r["key"])):
        out.append(PRESETS[row["preset"].strip()])
    return out
