"""Guard against PySide6 builds that lose a reference to True per Signal.emit().

PySide6 6.12.0 does (pyproject.toml excludes it): after a few hundred emits
CPython 3.11 frees the True singleton and aborts with "bool_dealloc".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMIT_MANY = (
    "from PySide6.QtCore import QObject, Signal\n"
    "class O(QObject):\n"
    "    s = Signal(int)\n"
    "o = O()\n"
    "for i in range(20000):\n"
    "    o.s.emit(i)\n"
    "print('survived')\n"
)


def test_many_emits_do_not_crash_the_interpreter():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", "import vitdesk.gui\n" + EMIT_MANY],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "survived"
