"""Atomic writes leave files with the permissions the umask gives ordinary files."""

from __future__ import annotations

import os

from vitdesk.engine.checkpoint import atomic_write_text
from vitdesk.fileio import file_mode


def test_file_mode_follows_the_umask_and_atomic_writes_use_it(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    assert file_mode() == 0o666 & ~mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    atomic_write_text(atomic, "x")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == file_mode()
