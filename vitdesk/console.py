"""Console output for the CLI: a progress-bar listener on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from vitdesk.jobs import Notice, Progress


class ConsoleProgress:
    """Listener that renders :class:`Progress` events as a one-line bar.

    Other event types are printed if they define ``describe()``; the rest are ignored.
    On a non-terminal stream it prints at most one line per task every few seconds.
    """

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.min_interval = min_interval if self.tty else 5.0
        self._last: dict[str, float] = {}
        self._open_line = False

    def __call__(self, event: Any) -> None:
        if isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, Notice):
            self._line(f"warning: {event.message}")
        elif hasattr(event, "describe"):
            text = event.describe()
            if text:
                self._line(text)

    def _progress(self, ev: Progress) -> None:
        now = time.monotonic()
        finished = ev.total is not None and ev.done >= ev.total
        if not finished and now - self._last.get(ev.task, 0.0) < self.min_interval:
            return
        self._last[ev.task] = now
        if ev.total:
            frac = min(1.0, ev.done / ev.total)
            bar = "#" * int(frac * 24)
            text = f"{ev.task:<12} [{bar:<24}] {ev.done}/{ev.total} {ev.message}"
        else:
            text = f"{ev.task:<12} {ev.done} {ev.message}"
        if self.tty:
            self.stream.write("\r\033[K" + text[:160])
            self._open_line = not finished
            if finished:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()
