"""The open session: library, viewer and window state, workspace, background tasks.

No widgets here. The main window and the tabs call these methods and listen to
the signals; every slow step runs in a :class:`~vitdesk.gui.worker.Task`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from vitdesk.errors import LoadError
from vitdesk.gui.library import (
    ImportResult,
    Library,
    SeriesEntry,
    Thumbnail,
    import_path,
    load_entry,
    make_thumbnails,
)
from vitdesk.gui.state import (
    CT_FALLBACK_WINDOW,
    ViewerState,
    WindowState,
    display_window,
    value_unit,
    window_limits,
)
from vitdesk.gui.worker import Task
from vitdesk.imaging.volume import Volume

WORKSPACE_DB = "workspace.sqlite"
FALLBACK_WINDOW = CT_FALLBACK_WINDOW  # soft tissue, when a CT file carries no window


def _norm(path: str | Path) -> str:
    return os.path.normcase(os.path.realpath(str(path)))


def slice_index(files: Sequence[str | Path], path: str | Path, frame: int = 0) -> int | None:
    """The axial index of ``path`` (frame ``frame``) in a series whose slices came from
    ``files`` in viewer order (:attr:`Volume.source_files`), or None if not there.

    A multi-frame file repeats in ``files``: its frames are taken in file order (the
    order a multi-frame CT is written in; the loader sorts frames by position).
    """
    target = _norm(path)
    hits = [i for i, f in enumerate(files) if _norm(f) == target]
    if not hits:
        return None
    return hits[min(max(int(frame), 0), len(hits) - 1)] if len(hits) > 1 else hits[0]


def is_workspace(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / WORKSPACE_DB).is_file()


class Session(QObject):
    """Everything the workbench has open, and the operations on it."""

    task_started = Signal(object, str)  # Task, text for the status bar
    import_finished = Signal(object)  # ImportResult
    import_errors = Signal(object)  # ImportResult with files not imported or with remarks
    # a series opened without some of its files: (series text, [(path, reason)])
    series_problems = Signal(str, list)
    failed = Signal(object)  # exception to show
    workspace_changed = Signal(object)  # Workspace | None
    message = Signal(str)  # short status text
    # The series the viewer shows (key, or None): after a failed load the browser goes
    # back to it, so the highlighted series is always the one on screen.
    series_shown = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.library = Library()
        self.viewer = ViewerState()
        self.window = WindowState(*FALLBACK_WINDOW)
        self.workspace: Any = None
        self.import_task: Task | None = None
        self.load_task: Task | None = None
        self.thumb_task: Task | None = None
        self.current_key: str | None = None
        self._wanted: str | None = None
        # (key, axial index) to go to, or (key, (file, frame)) found once the series is loaded
        self._pending_slice: tuple[str, Any] | None = None
        # folders opened this session: trained runs beside the images are offered too
        # (``vitdesk gui DEMO_OUT`` finds DEMO_OUT/run)
        self.opened_folders: list[Path] = []

    # ------------------------------------------------------------------ import
    def import_path(self, path: str | Path) -> Task | None:
        """Open a folder, file or workspace in the background (workspace: at once)."""
        if is_workspace(path):
            self.open_workspace(path)
            return None
        if not Path(path).exists():
            self.failed.emit(LoadError(f"{path}: no such file or folder; check the path"))
            return None
        if self.import_task is not None and self.import_task.is_running():
            self.message.emit("An import is already running; cancel it first.")
            return None
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        if folder not in self.opened_folders:
            self.opened_folders.append(folder)
        task = Task(import_path, str(path), name="import", workspace=self.workspace)
        task.finished.connect(self._on_imported)
        task.errored.connect(self.failed)
        task.cancelled.connect(lambda: self.message.emit("Import cancelled."))
        self.import_task = task
        self.task_started.emit(task, f"Importing {Path(path).name}")
        return task.start()

    def _on_imported(self, result: ImportResult) -> None:
        new = self.library.add(result.entries)
        if self.workspace is not None:
            self.record_in_workspace(new, result.errors)
        text = f"Imported {len(new)} series ({result.n_imported_files} files)"
        if len(new) < len(result.entries):
            text += f"; {len(result.entries) - len(new)} were already open"
        if result.errors:
            text += f"; {len(result.errors)} file(s) could not be read"
        if result.ignored:
            text += f"; {result.ignored} file(s) that are not images left aside"
        self.message.emit(text + ".")
        if result.errors or result.notes:
            self.import_errors.emit(result)
        self.import_finished.emit(result)

    def add_volume(self, volume: Volume) -> str:
        """Show an in-memory volume (volume files, tests); returns its key."""
        key = self.library.add_volume(volume)
        return key

    # ------------------------------------------------------------------ series
    def find_series(self, key_or_prefix: str) -> str | None:
        """The one open series whose safe key is or starts with ``key_or_prefix`` (tables
        show the first 8 characters), else None."""
        text = str(key_or_prefix).strip().lower()
        if not text:
            return None
        if text in self.library.entries:
            return text
        hits = [k for k in self.library.entries if k.lower().startswith(text)]
        return hits[0] if len(hits) == 1 else None

    def open_slice(self, series_key: str, slice_index: int) -> bool:
        """Show axial slice ``slice_index`` (0-based) of a series (key or unique key
        prefix) in the viewer, loading it if needed. False, with a status message,
        when no open series matches."""
        key = self.find_series(series_key)
        if key is None:
            self.message.emit(f"Series {series_key} is not open here: open its folder or "
                              "workspace first.")
            return False
        self._pending_slice = (key, int(slice_index))
        if self.current_key == key and self.viewer.volume is not None:
            self._go_to_pending()
        else:
            self.open_series(key)
        return True

    def record_slice(self, series_key: str, path: str | Path, frame: int = 0
                     ) -> tuple[str, int] | None:
        """(open series key, 0-based axial index) of a dataset record's slice (its
        series key, file and frame), or None when the series is not open here."""
        key = self.find_series(series_key)
        if key is None:
            return None
        vol = self.library.cached(key)
        files = vol.source_files if vol is not None else self.library.entries[key].files
        index = slice_index(files, path, frame)
        return None if index is None else (key, index)

    def open_record(self, series_key: str, path: str | Path, frame: int = 0) -> bool:
        """Show a dataset record's slice (series key, file, frame) in the viewer; the
        index is read from the loaded volume's own slice order. False, with a status
        message, when its series is not open here."""
        key = self.find_series(series_key)
        if key is None or self.record_slice(key, path, frame) is None:
            self.message.emit(f"Series {series_key[:8]} is not open here: open its folder or "
                              "workspace first.")
            return False
        self._pending_slice = (key, (str(path), int(frame)))
        if self.current_key == key and self.viewer.volume is not None:
            self._go_to_pending()
        else:
            self.open_series(key)
        return True

    def _go_to_pending(self) -> None:
        if self._pending_slice is None or self._pending_slice[0] != self.current_key:
            return
        index = self._pending_slice[1]
        self._pending_slice = None
        if isinstance(index, tuple):  # a record: its place in the volume just loaded
            vol = self.viewer.volume
            index = slice_index(vol.source_files if vol is not None else (), *index)
            if index is None:
                self.message.emit("That slice is not in the loaded series.")
                return
        self.viewer.set_axis("axial")
        self.viewer.set_index(index)

    def open_series(self, key: str) -> Task | None:
        """Show series ``key``, loading its pixels in the background if needed."""
        entry = self.library.entries.get(key)
        if entry is None:
            return None
        self._wanted = key
        vol = self.library.cached(key)
        if vol is not None:
            self._show(key, vol)
            return None
        if self.load_task is not None and self.load_task.is_running():
            self.load_task.cancel()  # the user moved on: the older load is moot
        task = Task(load_entry, entry, name="load")
        task.finished.connect(lambda v, k=key: self._on_loaded(k, v))
        task.errored.connect(lambda exc, k=key: self._on_load_failed(k, exc))
        self.load_task = task
        self.task_started.emit(task, f"Loading {entry.description or key}")
        return task.start()

    def _on_loaded(self, key: str, volume: Volume) -> None:
        self.library.remember(key, volume)
        if key == self._wanted:  # a slower, older load must not replace a newer choice
            self._show(key, volume)
            left_out = [(e.path, e.reason) for e in getattr(volume, "skipped", None) or []]
            if left_out:
                entry = self.library.entries.get(key)
                self.series_problems.emit(
                    (entry.description if entry is not None else "") or key, left_out)

    def _on_load_failed(self, key: str, exc: BaseException) -> None:
        if key == self._wanted:
            self._wanted = self.current_key  # the viewer still shows that one
            self.series_shown.emit(self.current_key)
        self.failed.emit(exc)

    def _show(self, key: str, volume: Volume) -> None:
        self.current_key = key
        # CT in HU with CT windows; other modalities with their own window or range
        self.window.set_scale(value_unit(volume), window_limits(volume))
        self.window.default = display_window(volume)
        self.viewer.set_volume(volume)
        self.window.reset()
        self._go_to_pending()
        self.series_shown.emit(key)

    # ------------------------------------------------------------------ workspace
    def open_workspace(self, folder: str | Path, create: bool = False,
                       announce: bool = True) -> Any:
        """Open (or create) a workspace and list its series instead of the current ones."""
        from vitdesk.data.workspace import Workspace

        try:
            ws = Workspace.open(Path(folder), create=create)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
            self.failed.emit(exc)
            return None
        self.close_workspace()
        self.workspace = ws
        self.library.clear()
        self.viewer.set_volume(None)
        self.current_key = None
        entries = self._entries_from_workspace(ws)
        self.library.add(entries)
        self.workspace_changed.emit(ws)
        if announce:
            self.message.emit(f"Workspace {Path(folder).name} open: {len(entries)} series.")
        if entries:
            self._start_thumbnails(entries)
        return ws

    def new_workspace(self, folder: str | Path) -> Any:
        """Create a workspace in ``folder`` and add the series already open to it."""
        entries = list(self.library.entries.values())
        ws = self.open_workspace(folder, create=True, announce=False)
        if ws is None:
            return None
        if entries:
            self.record_in_workspace(entries)
            self.library.add(entries)
        n = len(self.library.entries)
        self.message.emit(f"Workspace {Path(folder).name} open: {n} series"
                          + (f" ({len(entries)} added from the open folder)." if entries
                             else "."))
        return ws

    def close_workspace(self) -> None:
        if self.workspace is not None:
            self.workspace.close()
            self.workspace = None
            self.workspace_changed.emit(None)

    def _entries_from_workspace(self, ws: Any) -> list[SeriesEntry]:
        return [
            SeriesEntry(
                key=s.key, patient_key=s.patient_key, study_key=s.study_key,
                modality=s.modality, description=s.description, n_slices=s.n_slices,
                sex=s.meta.get("PatientSex") or None, age=s.meta.get("PatientAge") or None,
                files=tuple(s.files), meta=dict(s.meta), phi={},
                # Slice order in a workspace is the order of its file list.
                source=list(s.files),
            )
            for s in ws.series()
        ]

    def record_in_workspace(self, entries: list[SeriesEntry],
                            errors: list[tuple[str, str]] | None = None) -> None:
        """Index these series (and the files that could not be read) in the open
        workspace (re-recording one is harmless)."""
        from vitdesk.imaging.scan import FileError, ScanResult, SeriesInfo

        infos = []
        for e in entries:
            if isinstance(e.source, SeriesInfo):
                infos.append(e.source)
            elif isinstance(e.source, Volume) and e.files:
                infos.append(SeriesInfo(e.key, e.patient_key, e.study_key, tuple(e.files),
                                        e.modality, e.description, dict(e.meta), {},
                                        e.n_slices))
        problems = [FileError(p, r) for p, r in errors or []]
        if infos or problems:
            try:
                self.workspace.import_scan(ScanResult(infos, problems, 0))
            except Exception as exc:  # noqa: BLE001 - shown to the user, never a crash
                self.failed.emit(exc)

    def _start_thumbnails(self, entries: list[SeriesEntry]) -> None:
        task = Task(make_thumbnails, [(e.key, e.files, e.meta) for e in entries],
                    name="thumbnails")
        task.event.connect(self._on_thumbnail)
        self.thumb_task = task
        self.task_started.emit(task, "Making previews")
        task.start()

    def _on_thumbnail(self, ev: Any) -> None:
        if isinstance(ev, Thumbnail):
            entry = self.library.entries.get(ev.key)
            if entry is not None:
                entry.thumbnail = ev.image
                self.library.thumbnail_ready.emit(ev.key)

    def shutdown(self) -> None:
        for task in (self.import_task, self.load_task, self.thumb_task):
            if task is not None and task.is_running():
                task.cancel()
                task.wait(5000)
        self.close_workspace()
