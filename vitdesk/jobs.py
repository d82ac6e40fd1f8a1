"""Plumbing for long work: cancel tokens and progress events.

Engine functions take a :class:`CancelToken` and a listener callable. Events are
small frozen dataclasses of plain data so they can cross threads (the GUI turns
them into Qt signals, the CLI into progress bars). No torch, no Qt here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitdesk.errors import Cancelled

Listener = Callable[[Any], None]


class CancelToken:
    """Cooperative cancel and pause flag shared between a worker and its owner."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # a paused worker must wake up to see the cancel

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def check(self) -> None:
        """Block while paused; raise :class:`Cancelled` if cancel was requested."""
        self._running.wait()
        if self._cancel.is_set():
            raise Cancelled()


NEVER = CancelToken()  # default for callers that never cancel; never call cancel() on it


@dataclass(frozen=True)
class Progress:
    """Generic progress of a task: ``done`` of ``total`` units (total None = unknown)."""

    task: str
    done: int
    total: int | None = None
    message: str = ""


@dataclass(frozen=True)
class Notice:
    """Something the user should see that does not stop the work."""

    task: str
    message: str


def emit(listeners: Listener | list[Listener] | None, event: Any) -> None:
    """Send ``event`` to one listener, a list of listeners, or nobody."""
    if listeners is None:
        return
    if callable(listeners):
        listeners(event)
        return
    for listener in listeners:
        listener(event)
