"""Load whatever a user points at: a DICOM file or folder, or a SimpleITK volume.

Errors in single files or series are collected, not raised, so one bad file
does not hide the good series next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitdesk.errors import Cancelled, LoadError
from vitdesk.imaging.dicom import load_series
from vitdesk.imaging.scan import FileError, ScanResult, is_volume_file, scan_path
from vitdesk.imaging.sitk_io import load_sitk
from vitdesk.imaging.volume import Volume
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit


@dataclass
class LoadResult:
    """Volumes that loaded and one :class:`FileError` per file or series that did not.

    ``errors`` also lists the files left out of a series that loaded (its
    ``Volume.skipped``), so a caller shows every unused file once.
    """

    volumes: list[Volume] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    n_files: int = 0


def _error_path(message: str, fallback: str) -> str:
    # LoadError messages start with "<path>: "; keep that path for the FileError.
    head = message.split(": ", 1)[0]
    return head if head and Path(head).exists() else fallback


def load_path(
    path: str | Path, cancel: CancelToken = NEVER, listener: Listener | None = None
) -> LoadResult:
    """Load every series and volume file under ``path`` (a file or a folder).

    Raises:
        LoadError: ``path`` does not exist (problems inside it become ``errors``).
        Cancelled: ``cancel`` was triggered.
    """
    p = Path(path)
    result = LoadResult()
    if p.is_file() and is_volume_file(p.name):
        result.n_files = 1
        try:
            result.volumes.append(load_sitk(p))
        except LoadError as exc:
            result.errors.append(FileError(str(p), _reason(exc, str(p))))
        except Exception as exc:  # noqa: BLE001 - reported as this file's problem
            result.errors.append(FileError(str(p), _unexpected(exc)))
        return result
    scan: ScanResult = scan_path(p, cancel=cancel, listener=listener)
    result.errors.extend(scan.errors)
    result.n_files = scan.n_files
    n = len(scan.series) + len(scan.volume_files)
    done = 0
    for info in scan.series:
        cancel.check()
        try:
            vol = load_series(info, cancel=cancel, listener=listener)
            result.volumes.append(vol)
            result.errors.extend(vol.skipped)  # files left out of a series that loaded
        except (Cancelled, KeyboardInterrupt):
            raise
        except LoadError as exc:
            where = _error_path(str(exc), info.files[0])
            result.errors.append(FileError(where, _reason(exc, where)))
        except Exception as exc:  # noqa: BLE001 - one series never stops the others
            result.errors.append(FileError(info.files[0], _unexpected(exc)))
        done += 1
        emit(listener, Progress("series", done, n))
    for vf in scan.volume_files:
        cancel.check()
        try:
            result.volumes.append(load_sitk(vf))
        except (Cancelled, KeyboardInterrupt):
            raise
        except LoadError as exc:
            result.errors.append(FileError(vf, _reason(exc, vf)))
        except Exception as exc:  # noqa: BLE001 - one file never stops the others
            result.errors.append(FileError(vf, _unexpected(exc)))
        done += 1
        emit(listener, Progress("series", done, n))
    if p.is_file() and not result.volumes and not result.errors:
        result.errors.append(
            FileError(str(p), "no image in this file (not DICOM, a DICOMDIR index, or a "
                              "DICOM object without pixels); give a DICOM image or a "
                              "NIfTI/MHA/NRRD volume")
        )
    return result


def _reason(exc: Exception, path: str) -> str:
    """The message without its leading "path: " (FileError carries the path)."""
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _unexpected(exc: Exception) -> str:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return (f"cannot be loaded ({type(exc).__name__}: {reason}); "
            "check the file is a complete image, or report this as a bug")
