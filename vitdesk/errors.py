"""Error hierarchy.

A ``VitdeskError`` is a user error: the CLI prints its message as one line and
exits 2; the GUI shows it in a dialog. Anything else is a bug (exit 1).
Messages say what is wrong, where, and what to do.
"""

from __future__ import annotations


class VitdeskError(Exception):
    """Base class of errors caused by user input (files, folders, configs)."""

    exit_code = 2


class LoadError(VitdeskError):
    """A file or folder could not be read as medical image data."""


class ConfigError(VitdeskError):
    """A configuration file or option is invalid."""


class DataError(VitdeskError):
    """A dataset is unusable (missing files, a single class, leaking split...)."""


class CheckpointError(VitdeskError):
    """A weights or checkpoint file is missing, corrupt or unsafe."""


class ModelError(VitdeskError):
    """A model name or model option is invalid."""


class DiskFullError(VitdeskError):
    """A write found the disk (or quota) full; its temp files were removed."""


class Cancelled(VitdeskError):
    """The user cancelled a long operation (exit 130)."""

    exit_code = 130

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
