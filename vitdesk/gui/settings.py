"""Persistent GUI settings (QSettings): geometry, recent workspaces, custom presets.

Tests and portable installs may point ``VITDESK_SETTINGS`` at an INI file so
nothing leaks between runs or into the user's real settings.
"""

from __future__ import annotations

import json
import os

from PySide6.QtCore import QSettings

MAX_RECENT = 8


def open_settings() -> QSettings:
    """The application's settings store."""
    path = os.environ.get("VITDESK_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "vitdesk", "vitdesk")


def recent_workspaces(settings: QSettings) -> list[str]:
    value = settings.value("recent/workspaces", "[]")
    try:
        items = json.loads(value) if isinstance(value, str) else list(value or [])
    except ValueError:
        items = []
    return [str(v) for v in items][:MAX_RECENT]


def add_recent_workspace(settings: QSettings, folder: str) -> list[str]:
    items = [folder] + [f for f in recent_workspaces(settings) if f != folder]
    settings.setValue("recent/workspaces", json.dumps(items[:MAX_RECENT]))
    return items[:MAX_RECENT]


def custom_presets(settings: QSettings) -> dict[str, tuple[float, float]]:
    """User presets: name -> (width, level)."""
    value = settings.value("presets/custom", "{}")
    try:
        data = json.loads(value) if isinstance(value, str) else {}
        return {str(k): (float(w), float(lv)) for k, (w, lv) in data.items()}
    except (ValueError, TypeError):
        return {}


def save_custom_presets(settings: QSettings, presets: dict[str, tuple[float, float]]) -> None:
    settings.setValue("presets/custom", json.dumps({k: list(v) for k, v in presets.items()}))
