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


HISTORY = "history.jsonl"


class HistoryWriter:
    """Keeps ``RUN/history.jsonl`` at one JSON line per finished epoch, for fine-tuning
    and pretraining alike. The file is rewritten atomically each epoch, so a kill or a
    full disk mid-write leaves the previous epochs intact (appending could leave a torn
    line, or none on a full disk)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = [json.dumps(r) for r in read_history(self.path.parent)] \
            if self.path.is_file() else []

    def append(self, row: dict[str, Any]) -> None:
        """Add one epoch's row (it must hold ``step``: resume truncates by it)."""
        from vitdesk.fileio import atomic_write_text

        lines = [*self.lines, json.dumps(row)]
        atomic_write_text(self.path, "".join(x + "\n" for x in lines))
        self.lines = lines

    def truncate(self, global_step: int) -> None:
        """Drop rows written after the checkpoint a run resumes from (a crash between
        the history line and the checkpoint)."""
        from vitdesk.fileio import atomic_write_text

        keep = []
        for line in self.lines:
            try:
                if json.loads(line)["step"] <= global_step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        if self.path.is_file():
            atomic_write_text(self.path, "".join(k + "\n" for k in keep))
        self.lines = keep
