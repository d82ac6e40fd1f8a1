"""Slice planes of a volume and the mapping from display pixels back to voxels and mm.

Pure numpy (no Qt) so it is easy to test. Display conventions, as in radiology
viewers: axial shows rows top-to-bottom as stored; coronal and sagittal put the
highest slice position (superior, for a feet-first-sorted stack) at the top.
"""

from __future__ import annotations

import numpy as np

from vitdesk.imaging.volume import Volume


def plane(volume: Volume, axis: str, index: int) -> np.ndarray:
    """The 2-D HU image shown for ``axis`` at ``index`` (a view, no copy when possible)."""
    hu = volume.hu
    if axis == "axial":
        return hu[index]
    if axis == "coronal":
        return hu[::-1, index, :]
    if axis == "sagittal":
        return hu[::-1, :, index]
    raise ValueError(f"unknown axis {axis!r}")


def pixel_size(volume: Volume, axis: str) -> tuple[float, float]:
    """(width, height) in mm of one display pixel, so the view keeps true proportions."""
    sz, sy, sx = (float(s) for s in volume.spacing)
    return {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}[axis]


def voxel_at(volume: Volume, axis: str, index: int, row: int, col: int) -> tuple[int, int, int]:
    """Array indices (x, y, z) of the voxel under display pixel (row, col)."""
    nz = volume.shape[0]
    if axis == "axial":
        return (col, row, index)
    if axis == "coronal":
        return (col, index, nz - 1 - row)
    return (index, col, nz - 1 - row)


def voxel_to_mm(volume: Volume, x: int, y: int, z: int) -> np.ndarray:
    """Patient position (x, y, z) in mm (LPS) of a voxel, from origin, direction, spacing."""
    sz, sy, sx = (float(s) for s in volume.spacing)
    d = np.asarray(volume.direction, dtype=float)
    origin = np.asarray(volume.origin, dtype=float)
    return origin + d[:, 0] * x * sx + d[:, 1] * y * sy + d[:, 2] * z * sz


def slice_position_mm(volume: Volume, index: int) -> float:
    """Position of axial slice ``index`` along the slice normal (mm)."""
    if volume.slice_positions is not None and len(volume.slice_positions) > index:
        return float(volume.slice_positions[index])
    return float(voxel_to_mm(volume, 0, 0, index) @ np.asarray(volume.direction)[:, 2])
