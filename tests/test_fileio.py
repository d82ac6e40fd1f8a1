"""The atomic writer (umask permissions, full disk, temp files) and the output-path check."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vitdesk.engine.checkpoint import atomic_write_text
from vitdesk.errors import ConfigError, DiskFullError
from vitdesk.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    check_output_path,
    file_mode,
    is_disk_full,
)


def test_file_mode_follows_the_umask_and_atomic_writes_use_it(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    assert file_mode() == 0o666 & ~mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    atomic_write_text(atomic, "x")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == file_mode()


# ---- the atomic writer on a full disk ----------------------------------------------------
def _half_then_enospc(data: bytes):
    """A writer that gets half of ``data`` onto the disk, then finds it full."""
    def write(p: str) -> None:
        Path(p).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", p)
    return write


def test_full_disk_keeps_the_old_file_removes_the_temp_and_names_path_and_size(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"auc": 0.9})
    with pytest.raises(DiskFullError) as info:
        atomic_write_bytes(target, _half_then_enospc(b"x" * 3000), size_hint=3000)
    msg = str(info.value)
    assert str(target) in msg and "3.0 kB" in msg and "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert target.read_text() == '{\n  "auc": 0.9\n}'


def test_other_errors_pass_through_and_still_remove_the_temp(tmp_path):
    def boom(p: str) -> None:
        Path(p).write_bytes(b"abc")
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        atomic_write_bytes(tmp_path / "f.bin", boom)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_recognised_without_an_errno(tmp_path):
    # safetensors reports ENOSPC as text; torch.save as a stream-position RuntimeError
    assert is_disk_full(RuntimeError("I/O error: No space left on device (os error 28)"),
                        tmp_path)
    assert not is_disk_full(RuntimeError("unexpected pos 576 vs 534"), tmp_path, needed=10)
    # ... which counts as full only when the disk lacks the room the file needed
    assert is_disk_full(RuntimeError("unexpected pos 576 vs 534"), tmp_path, needed=10**18)
    assert not is_disk_full(OSError(errno.EACCES, "denied"), tmp_path)


def test_check_output_path(tmp_path):
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    assert check_output_path(tmp_path / "new" / "deeper", "--out", folder=True) \
        == tmp_path / "new" / "deeper"
    assert check_output_path(a_file, "--out", folder=False) == a_file  # replaced later
    cases = [
        (dict(path=a_file, flag="--out", folder=True), "--out .*a.txt is a file"),
        (dict(path=tmp_path, flag="--out", folder=False), "is a folder: give a file name"),
        (dict(path=a_file / "sub", flag="--attention", folder=True),
         "--attention .*a.txt is a file, not a folder"),
    ]
    for kw, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            check_output_path(**kw)
    (tmp_path / "rep" / "report.html").mkdir(parents=True)
    with pytest.raises(ConfigError, match="report.html is a folder"):
        check_output_path(tmp_path / "rep", "--out", folder=True, files=("report.html",))
