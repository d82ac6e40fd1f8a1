"""Run any plain engine function in a worker thread and forward its events as Qt signals.

Engine functions follow one calling convention::

    fn(*args, cancel=token, listener=callback, **kwargs) -> result

where ``cancel`` is a :class:`vitdesk.jobs.CancelToken` checked cooperatively and
``listener`` receives small frozen dataclass events (plain data). :class:`Task`
runs such a function in a :class:`QThread` through a QObject moved to that thread
(the thread itself runs Qt's own event loop; no ``QThread.run`` override, never
``QThread.terminate``). Everything it emits reaches the GUI thread as queued
signals, so slots connected to a task may touch widgets.

Usage::

    task = Task(scan_path, folder, parent=self)
    task.event.connect(self.on_event)          # every listener event, in order
    task.finished.connect(self.on_result)      # the function's return value
    task.errored.connect(self.on_error)        # an exception (see show_error)
    task.cancelled.connect(self.on_cancelled)  # the function raised Cancelled
    task.done.connect(self.on_done)            # always last; the thread has stopped
    task.start()
    ...
    task.cancel()                              # cooperative: returns at once

Exactly one of ``finished``, ``errored`` or ``cancelled`` is emitted, then ``done``.
When ``done`` arrives the thread has ended (``task.is_running()`` is False).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from vitdesk.errors import Cancelled
from vitdesk.jobs import CancelToken

# Tasks are kept alive here until their thread ends, so a caller may drop its
# reference without Python collecting a QObject whose thread is still running.
_LIVE: set[Task] = set()


def running_tasks() -> list[Task]:
    """Tasks whose threads have not ended yet (for shutdown and tests)."""
    return [t for t in _LIVE if t.is_running()]


def format_exception(exc: BaseException) -> str:
    """The full traceback text of ``exc`` (for an error dialog's details)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class _Runner(QObject):
    """Lives in the worker thread; calls the function once and reports the outcome."""

    event = Signal(object)
    returned = Signal(object)
    failed = Signal(object)
    was_cancelled = Signal()
    ended = Signal()

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict,
                 token: CancelToken) -> None:
        super().__init__()
        self._fn, self._args, self._kwargs, self._token = fn, args, kwargs, token

    @Slot()
    def run(self) -> None:
        try:
            result = self._fn(*self._args, cancel=self._token, listener=self.event.emit,
                              **self._kwargs)
        except Cancelled:
            self.was_cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - every failure must reach the GUI
            self.failed.emit(exc)
        else:
            if self._token.cancelled:
                self.was_cancelled.emit()
            else:
                self.returned.emit(result)
        finally:
            # Back to the GUI thread before this thread ends, so the runner is destroyed
            # there. Destroyed here, its ~QObject locked the Task's connection mutex while
            # this thread held the GIL, and a GUI-thread disconnect() holding that mutex
            # while asking for the GIL (PySide's disconnectNotify hook) deadlocked (CI).
            app = QCoreApplication.instance()
            if app is not None:
                self.moveToThread(app.thread())
            self.ended.emit()


class Task(QObject):
    """A handle, owned by the GUI thread, on one function running in its own thread.

    Args:
        fn: plain function taking ``cancel`` and ``listener`` keyword arguments.
        *args, **kwargs: passed to ``fn``.
        parent: optional QObject parent (the task is kept alive until it ends anyway).
        name: short text for progress displays ("Import", "Training"...).
    """

    event = Signal(object)
    finished = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[..., Any], *args: Any, parent: QObject | None = None,
                 name: str = "", **kwargs: Any) -> None:
        super().__init__(parent)
        self.name = name or getattr(fn, "__name__", "task")
        self.token = CancelToken()
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = QThread()
        self._thread.setObjectName(f"vitdesk-{self.name}")
        self._runner = _Runner(fn, args, kwargs, self.token)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        # Runner signals cross threads: these connections are queued to this
        # object's (the GUI) thread, so every slot below runs on the GUI thread.
        self._runner.event.connect(self.event)
        self._runner.returned.connect(self._on_returned)
        self._runner.failed.connect(self._on_failed)
        self._runner.was_cancelled.connect(self.cancelled)
        # quit() is thread-safe: a direct call from the worker lets wait() on the GUI
        # thread return at once (a queued one would wait for the blocked GUI loop)
        self._runner.ended.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        # the runner moves itself back to this thread when it ends and is deleted here
        # (see _Runner.run), never by the worker thread
        self._thread.finished.connect(self._on_thread_finished)
        self._started = False
        self._ended = False

    def start(self) -> Task:
        """Start the thread (once). Returns self for chaining."""
        if self._started:
            raise RuntimeError("a Task runs once; create a new one")
        self._started = True
        _LIVE.add(self)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the function to stop at its next ``cancel.check()``; returns at once."""
        self.token.cancel()

    def pause(self) -> None:
        self.token.pause()

    def resume(self) -> None:
        self.token.resume()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def has_ended(self) -> bool:
        """True once ``done`` has been emitted: the result (``finished``/``errored``/
        ``cancelled``) has reached the GUI thread. ``is_running()`` turns False earlier,
        as soon as the thread leaves, while those queued signals may still be on the way."""
        return self._ended

    def wait(self, msecs: int = 5000) -> bool:
        """Block until the thread ends (shutdown only; never in normal GUI code)."""
        return self._thread.wait(msecs)

    @Slot(object)
    def _on_returned(self, result: Any) -> None:
        self.result = result
        self.finished.emit(result)

    @Slot(object)
    def _on_failed(self, exc: BaseException) -> None:
        self.error = exc
        self.errored.emit(exc)

    @Slot()
    def _on_thread_finished(self) -> None:
        # ``finished`` is sent just before the thread leaves; wait() makes sure it has.
        self._thread.wait()
        self._runner.deleteLater()
        _LIVE.discard(self)
        self._ended = True
        self.done.emit()


def shutdown(timeout_ms: int = 5000) -> bool:
    """Cancel every running task and wait for its thread; True if all stopped."""
    ok = True
    for task in list(_LIVE):
        task.cancel()
    for task in list(_LIVE):
        ok = task.wait(timeout_ms) and ok
    return ok
