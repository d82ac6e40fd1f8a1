"""What the study browser lists: imported series with safe metadata and thumbnails.

:func:`import_path` is a plain function (run it in a :class:`~vitdesk.gui.worker.Task`):
it scans headers, loads volume files (NIfTI, MHA...), and makes one small
thumbnail per series from its middle slice. :class:`Library` holds the result
on the GUI side and caches the few volumes loaded for viewing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from vitdesk.gui.state import CT_FALLBACK_WINDOW, auto_window, display_window
from vitdesk.imaging.volume import Volume
from vitdesk.imaging.windowing import window_uint8
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

THUMB_PX = 64
CACHE_VOLUMES = 4  # series kept in memory for quick switching


@dataclass
class SeriesEntry:
    """One series as the browser shows it (safe metadata only, plus ``phi`` on request)."""

    key: str
    patient_key: str
    study_key: str
    modality: str
    description: str
    n_slices: int
    sex: str | None = None
    age: str | None = None
    files: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    phi: dict[str, Any] = field(default_factory=dict)
    source: Any = None  # SeriesInfo to load lazily, or an in-memory Volume
    thumbnail: np.ndarray | None = None  # uint8 (h, w)

    @property
    def study_label(self) -> str:
        return str(self.meta.get("StudyDescription") or f"Study {self.study_key[:6]}")


@dataclass(frozen=True)
class ImportResult:
    """What an import found.

    ``errors`` are files that were not imported (path, reason); ``notes`` are files of
    imported series with a remark (no preview); ``ignored`` counts files that are not
    images (other files, DICOMDIR indexes, reports, presentation states).
    """

    entries: list[SeriesEntry]
    errors: list[tuple[str, str]]
    n_files: int
    notes: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0

    @property
    def n_imported_files(self) -> int:
        return sum(len(e.files) or 1 for e in self.entries)


def thumbnail(hu2d: np.ndarray, width: float | None = 400.0,
              level: float | None = 40.0) -> np.ndarray:
    """A small windowed uint8 preview of one slice (nearest-neighbour downsampling);
    ``width=None``: the slice's own 1st..99th percentile range."""
    h, w = hu2d.shape
    step = max(1, int(np.ceil(max(h, w) / THUMB_PX)))
    small = hu2d[::step, ::step]
    if width is None or level is None:
        width, level = auto_window(small)
    return window_uint8(small, width, level)


def _first_window(meta: dict) -> tuple[float, float] | tuple[None, None]:
    """The file's window, else CT's soft tissue, else (None, None): the slice's range."""
    try:
        w = meta.get("WindowWidth")
        c = meta.get("WindowCenter")
        w = float(w[0] if isinstance(w, list | tuple) else w)
        c = float(c[0] if isinstance(c, list | tuple) else c)
        if w > 0:
            return w, c
    except (TypeError, ValueError, IndexError):
        pass
    if str(meta.get("Modality") or "CT").upper() != "CT":
        return None, None
    return CT_FALLBACK_WINDOW


def entry_from_volume(volume: Volume, patient_key: str = "", study_key: str = "") -> SeriesEntry:
    """Browser entry for an already loaded volume (volume files, tests)."""
    meta = volume.meta
    key = volume.key or f"vol{id(volume):x}"[-12:]
    w, lv = display_window(volume)
    return SeriesEntry(
        key=key, patient_key=patient_key or key, study_key=study_key or key,
        modality=str(meta.get("Modality") or "CT"),
        description=str(meta.get("SeriesDescription") or ""),
        n_slices=volume.n_slices, sex=meta.get("PatientSex") or None,
        age=meta.get("PatientAge") or None, files=tuple(volume.source_files),
        meta=dict(meta), phi=dict(volume.phi), source=volume,
        thumbnail=thumbnail(volume.hu[volume.n_slices // 2], w, lv),
    )


def entry_from_series(info: Any, thumb: np.ndarray | None = None) -> SeriesEntry:
    """Browser entry for a scanned :class:`~vitdesk.imaging.scan.SeriesInfo`."""
    return SeriesEntry(
        key=info.key, patient_key=info.patient_key, study_key=info.study_key,
        modality=info.modality, description=info.description,
        n_slices=int(info.n_frames or len(info.files)),
        sex=info.meta.get("PatientSex") or None, age=info.meta.get("PatientAge") or None,
        files=tuple(info.files), meta=dict(info.meta), phi=dict(info.phi), source=info,
        thumbnail=thumb,
    )


def import_path(path: str | Path, cancel: CancelToken = NEVER,
                listener: Listener | None = None, workspace: Any = None) -> ImportResult:
    """Scan ``path`` for series (headers only) and make thumbnails.

    Pixel data of DICOM series is read later, when a series is opened; volume
    files (NIfTI, MHA, NRRD) are loaded here since they are one file each. With a
    ``workspace`` its header cache is used, so opening a folder again parses only
    new or changed files.
    """
    from vitdesk.imaging.scan import is_volume_file, scan_path

    p = Path(path)
    if p.is_file() and is_volume_file(p.name):
        entry, problem = _volume_entry(str(p))
        return ImportResult([entry] if entry else [], [problem] if problem else [], 1)
    if workspace is None:
        scan = scan_path(p, cancel=cancel, listener=listener)
    else:
        with workspace.header_cache() as cache:  # opened in this (worker) thread
            scan = scan_path(p, cancel=cancel, listener=listener, cache=cache)
    errors = [(e.path, e.reason) for e in scan.errors]
    notes: list[tuple[str, str]] = []
    entries: list[SeriesEntry] = []
    total = len(scan.series) + len(scan.volume_files)
    for i, info in enumerate(scan.series):
        cancel.check()
        emit(listener, Progress("thumbnails", i, total, info.description or info.key))
        thumb, problem = _preview(info.files, info.meta)
        if problem:
            # A missing preview is no reason to hide the series: it is imported, and
            # opening it shows what can be read.
            notes.append((info.files[len(info.files) // 2],
                          f"imported without a preview: {problem}"))
        entries.append(entry_from_series(info, thumb))
    for j, f in enumerate(scan.volume_files):
        cancel.check()
        emit(listener, Progress("thumbnails", len(scan.series) + j, total, Path(f).name))
        entry, problem = _volume_entry(f)
        if entry is not None:
            entries.append(entry)
        if problem:
            errors.append(problem)
    emit(listener, Progress("thumbnails", total, total, f"{len(entries)} series"))
    return ImportResult(entries, errors, scan.n_files, notes, scan.skipped)


def file_reason(exc: BaseException) -> str:
    """One line for a file that failed: the loader's own words for a user error, else
    the imaging layer's description of the exception (never a traceback)."""
    from vitdesk.errors import VitdeskError
    from vitdesk.imaging.scan import file_problem

    if isinstance(exc, VitdeskError):
        return " ".join(str(exc).split())
    return file_problem(exc)


def _preview(files: tuple[str, ...] | list[str], meta: dict) -> tuple[np.ndarray | None, str]:
    """(thumbnail, "") of the middle file, or (None, reason). Never raises for a bad file."""
    from vitdesk.errors import Cancelled
    from vitdesk.imaging.dicom import read_slice_hu

    if not files:
        return None, "the series lists no files"
    try:
        return thumbnail(read_slice_hu(files[len(files) // 2]), *_first_window(meta)), ""
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one file never stops an import
        return None, file_reason(exc)


def _volume_entry(path: str) -> tuple[SeriesEntry | None, tuple[str, str] | None]:
    """The entry of one NIfTI/MHA/NRRD file, or (None, (path, reason))."""
    from vitdesk.errors import Cancelled
    from vitdesk.imaging.sitk_io import load_sitk

    try:
        return entry_from_volume(load_sitk(path)), None
    except (Cancelled, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one file never stops an import
        return None, (path, file_reason(exc))


@dataclass(frozen=True)
class Thumbnail:
    """Event: the preview of series ``key`` is ready."""

    key: str
    image: np.ndarray


def make_thumbnails(items: list[tuple[str, tuple[str, ...], dict]], cancel: CancelToken = NEVER,
                    listener: Listener | None = None) -> int:
    """Preview the middle slice of each (key, files, meta); emits :class:`Thumbnail` events."""
    made = 0
    for i, (key, files, meta) in enumerate(items):
        cancel.check()
        emit(listener, Progress("previews", i, len(items)))
        thumb, _problem = _preview(files, meta)
        if thumb is None:
            continue  # no preview; opening the series reports the problem
        emit(listener, Thumbnail(key, thumb))
        made += 1
    emit(listener, Progress("previews", len(items), len(items)))
    return made


def load_entry(entry: SeriesEntry, cancel: CancelToken = NEVER,
               listener: Listener | None = None) -> Volume:
    """The volume of a browser entry (loads DICOM pixels on first use)."""
    if isinstance(entry.source, Volume):
        return entry.source
    from vitdesk.imaging.dicom import load_series

    return load_series(entry.source, cancel=cancel, listener=listener)


class Library(QObject):
    """The imported series (by key) and a small cache of loaded volumes."""

    entries_added = Signal(list)  # list[SeriesEntry]
    thumbnail_ready = Signal(str)  # series key
    cleared = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, SeriesEntry] = {}
        self._cache: OrderedDict[str, Volume] = OrderedDict()

    def add(self, entries: list[SeriesEntry]) -> list[SeriesEntry]:
        """Add entries not already present (importing twice is harmless)."""
        new = [e for e in entries if e.key not in self.entries]
        for e in new:
            self.entries[e.key] = e
        if new:
            self.entries_added.emit(new)
        return new

    def add_volume(self, volume: Volume, patient_key: str = "", study_key: str = "") -> str:
        entry = entry_from_volume(volume, patient_key, study_key)
        self.add([entry])
        return entry.key

    def clear(self) -> None:
        self.entries.clear()
        self._cache.clear()
        self.cleared.emit()

    def cached(self, key: str) -> Volume | None:
        """The loaded volume of ``key`` if it is in memory, else None."""
        entry = self.entries.get(key)
        if entry is not None and isinstance(entry.source, Volume):
            return entry.source
        vol = self._cache.get(key)
        if vol is not None:
            self._cache.move_to_end(key)
        return vol

    def remember(self, key: str, volume: Volume) -> None:
        """Keep a loaded DICOM volume; the least recently viewed ones are dropped."""
        self._cache[key] = volume
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_VOLUMES:
            self._cache.popitem(last=False)
