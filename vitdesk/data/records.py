"""The unit of every dataset: one labelled 2-D slice (a DICOM frame or an image file).

Torch-free and Qt-free so the GUI and light CLI commands can list datasets cheaply.
A record never holds a raw patient identifier: ``patient`` and ``series`` are
:func:`safe_key` hashes.
"""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# The project-wide non-identifying key has one home (imaging.deid); re-exported
# here because every dataset source keys its records with it.
from vitdesk.imaging.deid import safe_key as safe_key

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DICOM_EXTS = frozenset({".dcm", ".dicom", ".ima"})
KINDS = ("dicom", "image")


@dataclass(frozen=True)
class SliceRecord:
    """One slice of a dataset.

    Attributes:
        path: absolute path of the file (DICOM, PNG or JPEG).
        frame: frame index inside a multi-frame DICOM file (0 otherwise).
        label: class name, or None when unlabelled.
        patient: safe key of the patient (never the raw ID).
        series: safe key of the series (DICOM) or of the file (images).
        sex: "M", "F", "O" or None.
        age: age in years, or None.
        kind: "dicom" (HU, windowed at load) or "image" (already windowed).
    """

    path: str
    frame: int = 0
    label: str | None = None
    patient: str = ""
    series: str = ""
    sex: str | None = None
    age: float | None = None
    kind: str = "dicom"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SliceRecord:
        return cls(
            path=str(d["path"]),
            frame=int(d.get("frame", 0)),
            label=d.get("label"),
            patient=str(d.get("patient", "")),
            series=str(d.get("series", "")),
            sex=d.get("sex"),
            age=None if d.get("age") is None else float(d["age"]),
            kind=str(d.get("kind", "dicom")),
        )


_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def parse_age(value: object) -> float | None:
    """Age in years from a DICOM AgeString ("045Y", "6M", "3W", "10D") or a number.

    Returns None for empty or unreadable values (PatientAge is often blank).
    """
    if value is None:
        return None
    if isinstance(value, numbers.Real):  # also numpy scalars
        v = float(value)
        return v if math.isfinite(v) and v >= 0 else None
    m = _AGE_RE.match(str(value))
    if not m:
        return None
    return float(m.group(1)) * _AGE_UNIT_YEARS[m.group(2).upper()]


def parse_sex(value: object) -> str | None:
    """"M", "F" or "O" from DICOM PatientSex or a CSV cell ("male", "f", ...)."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if not text:
        return None
    if text in ("M", "MALE"):
        return "M"
    if text in ("F", "FEMALE"):
        return "F"
    return "O"


def classes_of(records: Iterable[SliceRecord]) -> list[str]:
    """Sorted class names present in ``records`` (unlabelled ones ignored)."""
    return sorted({r.label for r in records if r.label is not None})


def label_counts(records: Iterable[SliceRecord]) -> dict[str, int]:
    """Number of slices per class."""
    return dict(sorted(Counter(r.label for r in records if r.label is not None).items()))


def patients_of(records: Sequence[SliceRecord]) -> list[str]:
    """Sorted patient keys."""
    return sorted({r.patient for r in records})


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def looks_like_dicom(path: str | Path) -> bool:
    """True for a .dcm-like extension or the "DICM" magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTS:
        return True
    if p.suffix.lower() in IMAGE_EXTS or p.name.startswith("."):
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"
