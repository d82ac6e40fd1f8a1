"""``vitdesk inspect PATH``: one patient-safe line per series, one line per bad file.

Prints only safe metadata (key, modality, description, size, spacing, sex and
age); never names, IDs, dates or UIDs. Every file that was not used (unreadable,
or left out of a series that loaded) and every folder that cannot be listed gets
one line: "path: reason and what to do". Exit 0 when at least one series
loaded; otherwise raises LoadError (the CLI prints it and exits 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from vitdesk.console import ConsoleProgress
from vitdesk.errors import LoadError
from vitdesk.imaging.io import load_path
from vitdesk.imaging.volume import Volume


def series_line(vol: Volume) -> str:
    """One line describing ``vol`` with safe metadata only."""
    z, y, x = vol.shape
    sz, sy, sx = vol.spacing
    m = vol.meta
    desc = str(m.get("SeriesDescription") or "-").replace("\n", " ")
    parts = [
        vol.key or "-",
        str(m.get("Modality") or "?"),
        f"'{desc}'",
        f"{z} slice{'s' if z != 1 else ''}",
        f"{x}x{y}",
        f"spacing {sz:.2f}x{sy:.2f}x{sx:.2f} mm (z,y,x)",
    ]
    sex, age = m.get("PatientSex"), m.get("PatientAge")
    if sex or age:
        parts.append(f"sex {sex or '?'} age {age or '?'}")
    if vol.default_window:
        w, lv = vol.default_window
        parts.append(f"window {w:g}/{lv:g}")
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Load ``args.path`` and print what was found."""
    bar = ConsoleProgress()

    def listener(event: object) -> None:
        # per-series slice bars would bury the result lines; folder-level bars stay
        if getattr(event, "task", "") != "load":
            bar(event)

    with warnings.catch_warnings():
        # pydicom warns about every odd value it tolerates; problems that matter
        # reach the user as FileError lines and Volume warnings instead.
        warnings.simplefilter("ignore", UserWarning)
        result = load_path(args.path, listener=listener)
    for vol in result.volumes:
        print(series_line(vol))
        for w in vol.warnings:
            print(f"    warning: {w}")
    for err in result.errors:
        print(f"{err.path}: {err.reason}")
    if not result.volumes:
        if result.errors:
            raise LoadError(
                f"{args.path}: no series could be loaded ({len(result.errors)} unreadable "
                "file(s) or folder(s), listed above); fix what each line says"
            )
        raise LoadError(
            f"{args.path}: no DICOM series or NIfTI/MHA/NRRD volume found "
            f"({result.n_files} file(s) looked at); point to a folder of DICOM files"
        )
    sys.stdout.flush()
    return 0
