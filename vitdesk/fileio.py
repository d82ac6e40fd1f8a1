"""File-system helpers shared by every layer (no torch, no Qt): the one atomic writer,
full-disk errors and the output-path check every command runs before its work."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitdesk.errors import ConfigError, DiskFullError


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


# ---- atomic writes ------------------------------------------------------------------------
# errno values that mean "no room": a full disk, or the user's quota on a shared server
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
# what writers that lose the errno say (safetensors' Rust I/O error, OS messages)
_NO_SPACE_TEXT = ("no space left", "os error 28", "disk quota", "not enough space")


def human_size(n: float) -> str:
    """``12.3 MB``-style size (decimal units, as file managers show them)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


def free_bytes(folder: str | Path) -> int | None:
    """Free bytes on the disk holding ``folder`` (its nearest existing parent), or None."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, folder: str | Path, needed: int | None = None,
                 written: int = 0) -> bool:
    """True when ``exc``, raised while writing into ``folder``, means the disk is full.

    ``torch.save`` turns ENOSPC into a RuntimeError about stream positions and safetensors
    into a SafetensorError, so the errno is not enough: a write that failed while the
    disk has less room than the file needed (``written`` bytes of it already on disk,
    about to be removed) counts as full too.
    """
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _NO_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    free = free_bytes(folder)
    if free is None:
        return False
    return free < 64 * 1024 or (needed is not None and free + written < needed)


def disk_full_error(path: str | Path, needed: int | None) -> DiskFullError:
    """The one-line error for a write that found the disk full."""
    free = free_bytes(Path(path).parent)
    need = f"about {human_size(needed)}" if needed else "more space"
    have = f", {human_size(free)} free" if free is not None else ""
    return DiskFullError(
        f"disk full writing {path}: it needs {need}{have}; free some space or write to "
        "another disk (earlier files there are intact)"
    )


def atomic_write_bytes(path: str | Path, write: Callable[[str], Any],
                       size_hint: int | None = None) -> None:
    """Write via ``write(temp_path)`` into a temp file next to ``path``, fsync, replace.

    A crash or error at any moment leaves ``path`` as it was and no temp file behind; a
    full disk raises :class:`DiskFullError` naming ``path`` and the space it needed
    (``size_hint`` bytes, when the caller knows).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc, path.parent, size_hint):
            raise disk_full_error(path, size_hint) from None
        raise
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        finish_temp_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        written = 0
        with contextlib.suppress(OSError):
            written = os.path.getsize(tmp)
        full = isinstance(exc, Exception) and is_disk_full(exc, path.parent, size_hint,
                                                           written)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if full:
            raise disk_full_error(path, size_hint or written or None) from None
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically; see :func:`atomic_write_bytes`."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda p: Path(p).write_bytes(data), size_hint=len(data))


def atomic_write_json(path: str | Path, data: Any, **dumps: Any) -> Path:
    """Write ``data`` as JSON (indent 2) atomically; returns ``path``."""
    atomic_write_text(path, json.dumps(data, **{"indent": 2, **dumps}))
    return Path(path)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- output paths -------------------------------------------------------------------------
def check_output_path(path: str | Path, flag: str, *, folder: bool,
                      files: tuple[str, ...] = ()) -> Path:
    """Check an output path before any work; return it. Raises :class:`ConfigError`.

    Args:
        path: where the command will write.
        flag: the option that named it (``--out``), for the message.
        folder: True when ``path`` is a folder the command writes into, False for a file
            (an existing file is replaced).
        files: for a folder, the names the command writes inside it; none may be a folder.
    """
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file: give a folder (it is created if missing)")
    if not folder and p.is_dir():
        raise ConfigError(f"{flag} {p} is a folder: give a file name, e.g. {p / 'out.csv'}")
    for name in files:
        if (p / name).is_dir():
            raise ConfigError(f"{flag} {p}: {p / name} is a folder where a file is written: "
                              "move it or choose another folder")
    parent = p if folder else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {p}: {parent} is a file, not a folder: choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {p}: cannot write in {parent} (permission denied): "
                          "choose a folder you can write to")
    return p
