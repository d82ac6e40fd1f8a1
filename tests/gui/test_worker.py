"""The generic worker: results, events, cancel, errors, threads stopped."""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication, QMessageBox

from vitdesk.errors import LoadError
from vitdesk.gui.dialogs import error_box
from vitdesk.gui.worker import Task, running_tasks
from vitdesk.jobs import Progress


def count_to(n, cancel, listener, delay=0.0):
    for i in range(n):
        cancel.check()
        listener(Progress("count", i + 1, n))
        time.sleep(delay)
    return n * 10


def test_result_and_events_arrive_in_order_on_the_gui_thread(qtbot):
    task = Task(count_to, 5, name="count")
    seen, threads = [], []
    task.event.connect(lambda ev: (seen.append(ev.done), threads.append(QThread.currentThread())))
    with qtbot.waitSignals([task.finished, task.done], order="strict", timeout=5000):
        task.start()
    assert task.result == 50
    assert seen == [1, 2, 3, 4, 5]
    gui_thread = QApplication.instance().thread()
    assert all(t is gui_thread for t in threads)
    assert not task.is_running()
    assert task not in running_tasks()


def test_cancel_stops_the_thread_and_emits_cancelled(qtbot):
    started = threading.Event()

    def slow(cancel, listener):
        started.set()
        while True:
            cancel.check()
            time.sleep(0.005)

    task = Task(slow)
    finished = []
    task.finished.connect(finished.append)
    task.start()
    assert started.wait(5)
    assert task.is_running()
    with qtbot.waitSignals([task.cancelled, task.done], order="strict", timeout=5000):
        task.cancel()
    assert not task.is_running()
    assert finished == []


def test_user_error_is_one_line_without_details(qtbot):
    def fail(cancel, listener):
        raise LoadError("/data/x.dcm: unsupported transfer syntax JPEG 2000; install codecs")

    task = Task(fail)
    with qtbot.waitSignal(task.errored, timeout=5000) as blocker:
        task.start()
    qtbot.waitUntil(lambda: task.has_ended())
    exc = blocker.args[0]
    box = error_box(None, exc)
    assert box.text() == "/data/x.dcm: unsupported transfer syntax JPEG 2000; install codecs"
    assert box.detailedText() == ""
    assert box.icon() == QMessageBox.Icon.Warning


def test_bug_shows_traceback_in_collapsed_details(qtbot):
    def buggy(cancel, listener):
        return {}["missing"]

    task = Task(buggy)
    with qtbot.waitSignal(task.errored, timeout=5000) as blocker:
        task.start()
    qtbot.waitUntil(lambda: task.has_ended())
    box = error_box(None, blocker.args[0])
    assert "KeyError" in box.text()
    assert "buggy" in box.detailedText() and "Traceback" in box.detailedText()
    assert box.icon() == QMessageBox.Icon.Critical


def test_a_task_runs_once(qtbot):
    task = Task(count_to, 1)
    with qtbot.waitSignal(task.done, timeout=5000):
        task.start()
    try:
        task.start()
    except RuntimeError as exc:
        assert "once" in str(exc)
    else:
        raise AssertionError("second start() must fail")


def test_the_runner_is_deleted_on_the_gui_thread(qtbot):
    import shiboken6

    task = Task(count_to, 2)
    runner = task._runner
    with qtbot.waitSignal(task.done, timeout=5000):
        task.start()
    # moved back before its thread ended, so the worker thread never destroys it
    assert runner.thread() is QApplication.instance().thread()
    qtbot.waitUntil(lambda: not shiboken6.isValid(runner), timeout=2000)  # deleteLater ran


def test_has_ended_only_once_the_result_reached_the_gui_thread(qtbot):
    """is_running() turns False as the thread leaves; the queued ``finished`` may still be
    on its way. has_ended() is the point where the result has been delivered."""
    seen = []
    task = Task(count_to, 3)
    task.finished.connect(lambda r: seen.append(("finished", task.has_ended())))
    task.done.connect(lambda: seen.append(("done", task.has_ended())))
    assert not task.has_ended()
    task.start()
    task.wait(5000)
    assert not task.is_running() and not task.has_ended() and seen == []
    qtbot.waitUntil(task.has_ended, timeout=5000)
    assert seen == [("finished", False), ("done", True)] and task.result is not None
