"""The Volume type every loader returns and every consumer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FileError:
    """One file that could not be used: its path and one line of reason and remedy."""

    path: str
    reason: str

    def describe(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Volume:
    """A CT volume in Hounsfield units.

    Attributes:
        hu: float32 voxels, axes (z, y, x). Padding voxels hold ``-1024`` and are
            flagged in ``padding``.
        spacing: voxel size in mm along (z, y, x); z comes from slice positions.
        origin: patient position (x, y, z) in mm of the first voxel (LPS).
        direction: 3x3 matrix whose columns are the patient-space unit vectors of
            the array's x (column), y (row) and z (slice) axes.
        meta: safe metadata (modality, series description, slice thickness, kVp,
            PatientSex, PatientAge, body part, ...): may be shown and exported.
        phi: identifying metadata (names, IDs, dates, institution, UIDs): may be
            shown in the viewer on request, never written to any output.
        key: short, non-identifying, stable key of the series (hash of its UID).
        warnings: problems the user must see (gaps, uneven spacing, tilt...).
        padding: bool mask (z, y, x) of PixelPaddingValue voxels, or None.
        default_window: (width, level) from the file's own VOI tags, if any.
        invert_display: True for MONOCHROME1 data (display only; HU unchanged).
        slice_positions: position of each slice along the slice normal (mm).
        source_files: the file each slice came from (multi-frame: repeated).
        skipped: files of the series that could not be decoded and were left out
            (the volume has a gap where they were; ``warnings`` says so).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict[str, Any] = field(default_factory=dict)
    phi: dict[str, Any] = field(default_factory=dict, repr=False)  # never log PHI
    key: str = ""
    warnings: list[str] = field(default_factory=list)
    padding: np.ndarray | None = None
    default_window: tuple[float, float] | None = None
    invert_display: bool = False
    slice_positions: np.ndarray | None = None
    source_files: list[str] = field(default_factory=list)
    skipped: list[FileError] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    def describe(self) -> str:
        """One patient-safe line: modality, description, size, spacing."""
        z, y, x = self.shape
        sz, sy, sx = self.spacing
        desc = self.meta.get("SeriesDescription") or "-"
        mod = self.meta.get("Modality") or "?"
        return f"{self.key or '-'} {mod} '{desc}' {z}x{y}x{x} spacing {sz:.2f}x{sy:.2f}x{sx:.2f} mm"
