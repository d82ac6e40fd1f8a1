"""File-system helpers shared by every layer (no torch, no Qt)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path


@functools.cache
def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 minus the umask).

    ``mkstemp`` creates 0600 files; renamed into place they would hide reports and
    checkpoints from the colleagues a shared workstation's umask means to let in.
    """
    try:  # Linux: read the umask without changing it (os.umask is process-wide)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def finish_temp_file(tmp: str | Path) -> None:
    """Give a ``mkstemp`` file the usual permissions before it is renamed into place."""
    with contextlib.suppress(OSError):  # e.g. a file system without modes
        os.chmod(tmp, file_mode())
