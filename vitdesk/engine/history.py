"""Reading a run's ``history.jsonl`` (no torch: the GUI and reports use it cheaply)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch rows of ``RUN/history.jsonl``; a torn last line (a kill mid-write) is skipped."""
    path = Path(run_dir) / "history.jsonl"
    rows: list[dict[str, Any]] = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows
