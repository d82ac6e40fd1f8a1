"""Any prediction input (a DICOM file or folder, a NIfTI/MHA/NRRD volume, PNG/JPEG images)
as a list of raw slices, without torch: a run's predict and an exported model's predict
read their inputs here, so both see the same slices under the same keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitdesk.errors import DataError, LoadError
from vitdesk.jobs import CancelToken, Listener

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def input_slices(path: Path, cancel: CancelToken, listener: Listener | None,
                 sources: dict[str, list[str]] | None = None
                 ) -> tuple[list[tuple[str, int, np.ndarray, str]], list[str]]:
    """(key, slice index, raw array, kind) of every slice under ``path``, and errors.

    Keys are safe keys (hashes), never patient names or paths; ``kind`` is "dicom" (HU)
    or "image" (already windowed). One unreadable file becomes one error line.
    ``sources``, when given, receives each DICOM series key's source file per slice
    (what DICOM results reference; kept in memory, never written).
    """
    from vitdesk.data.preprocess import read_image
    from vitdesk.data.records import safe_key

    if not path.exists():
        raise LoadError(f"{path}: no such file or folder: give a DICOM file/folder, a "
                        "NIfTI/MHA/NRRD volume or PNG/JPEG images")
    images = ([path] if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES else
              sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
              if path.is_dir() else [])
    out: list[tuple[str, int, np.ndarray, str]] = []
    errors: list[str] = []
    for p in images:
        cancel.check()
        try:
            out.append((safe_key(str(p.resolve())), 0, read_image(str(p)), "image"))
        except DataError as exc:
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - one unreadable image never stops the rest
            errors.append(f"{p}: cannot read the image ({type(exc).__name__}); "
                          "export it again as PNG or JPEG")
    if path.is_file() and images:
        return out, errors
    from vitdesk.imaging.io import load_path

    res = load_path(path, cancel=cancel, listener=listener)
    from vitdesk.jobs import Notice, emit

    for vol in res.volumes:
        # what the viewer's banner says (colour read as luminance, gaps, tilt) predict says too
        for warning in vol.warnings:
            emit(listener, Notice("predict", f"series {vol.key}: {warning}"))
        if sources is not None:
            sources[vol.key] = list(vol.source_files)
        for z in range(vol.hu.shape[0]):
            out.append((vol.key, z, vol.hu[z], "dicom"))
    # every file left out (unreadable, or skipped from a series that loaded), one line each
    errors.extend(e.describe() for e in res.errors)
    if not out:
        first = f" ({errors[0]})" if errors else ""
        raise LoadError(f"{path}: no readable slices{first}: give CT DICOM, a volume file "
                        "or PNG/JPEG images")
    return out, errors
