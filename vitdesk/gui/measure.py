"""Reading-aid maths of the viewer: orientation letters, scale bar, distances, ROI statistics.

Pure numpy (no Qt) so every number the viewer draws is tested here. Display
conventions are those of :mod:`vitdesk.gui.geometry`: the view's coordinates are
millimetres, x to the right along the image columns, y downward along the rows,
and pixel (row, col) covers ``[col*pw, (col+1)*pw) x [row*ph, (row+1)*ph)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Patient axes in DICOM LPS: +x is the patient's left, +y posterior, +z superior.
_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
# Components below this share of a direction are left out of an oblique label.
_OBLIQUE_MIN = 0.25
SCALE_STEPS_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def direction_letters(v: np.ndarray) -> str:
    """Letters of the patient direction ``v`` (LPS), strongest first: ``(1,0,0)`` -> ``"L"``,
    a 30-degree oblique ``(0.87,0.5,0)`` -> ``"LP"``."""
    v = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(v))
    if n == 0:
        return ""
    v = v / n
    order = np.argsort(-np.abs(v))
    return "".join(_LETTERS[i][int(v[i] > 0)] for i in order[:2]
                   if abs(v[i]) >= _OBLIQUE_MIN)


def screen_directions(direction: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Patient directions (LPS) of screen right and screen down for a display plane.

    ``direction``'s columns are the patient vectors of the array's x, y and z axes;
    coronal and sagittal planes show the highest slice index at the top
    (:func:`vitdesk.gui.geometry.plane`), so screen down is minus the slice axis.
    """
    d = np.asarray(direction, dtype=float)
    if axis == "axial":
        return d[:, 0], d[:, 1]
    if axis == "coronal":
        return d[:, 0], -d[:, 2]
    if axis == "sagittal":
        return d[:, 1], -d[:, 2]
    raise ValueError(f"unknown axis {axis!r}")


def orientation_labels(direction: np.ndarray, axis: str) -> dict[str, str]:
    """Letters at the four screen edges, e.g. axial identity ->
    ``{"left": "R", "right": "L", "top": "A", "bottom": "P"}``."""
    right, down = screen_directions(direction, axis)
    return {"left": direction_letters(-right), "right": direction_letters(right),
            "top": direction_letters(-down), "bottom": direction_letters(down)}


def scale_bar_mm(mm_per_pixel: float, max_pixels: float) -> float:
    """The longest round length (1, 2, 5, 10, ... mm) that fits in ``max_pixels``; 0 if none."""
    if mm_per_pixel <= 0 or max_pixels <= 0:
        return 0.0
    fits = [s for s in SCALE_STEPS_MM if s / mm_per_pixel <= max_pixels]
    return float(fits[-1]) if fits else 0.0


def distance_mm(p0: tuple[float, float], p1: tuple[float, float]) -> float:
    """Distance between two points of the view (already in mm)."""
    return float(np.hypot(p1[0] - p0[0], p1[1] - p0[1]))


@dataclass(frozen=True)
class RoiStats:
    """Statistics of the pixels whose centres lie inside a region."""

    mean: float
    sd: float
    minimum: float
    maximum: float
    n_pixels: int
    area_mm2: float


def roi_mask(shape: tuple[int, int], pixel_size: tuple[float, float],
             rect: tuple[float, float, float, float], kind: str = "rectangle") -> np.ndarray:
    """Pixels (rows, cols) of an image whose centres lie in the region.

    Args:
        shape: (rows, cols) of the displayed plane.
        pixel_size: (width, height) of one pixel in mm.
        rect: (x, y, width, height) in mm of the region's bounding box.
        kind: ``"rectangle"`` or ``"ellipse"`` (inscribed in the box).
    """
    h, w = shape
    pw, ph = pixel_size
    x0, y0, rw, rh = (float(v) for v in rect)
    if rw < 0:
        x0, rw = x0 + rw, -rw
    if rh < 0:
        y0, rh = y0 + rh, -rh
    cx = (np.arange(w) + 0.5) * pw
    cy = (np.arange(h) + 0.5) * ph
    if kind == "rectangle":
        inx = (cx >= x0) & (cx < x0 + rw)
        iny = (cy >= y0) & (cy < y0 + rh)
        return iny[:, None] & inx[None, :]
    if kind == "ellipse":
        if rw == 0 or rh == 0:
            return np.zeros((h, w), dtype=bool)
        u = (cx - (x0 + rw / 2)) / (rw / 2)
        v = (cy - (y0 + rh / 2)) / (rh / 2)
        return (v[:, None] ** 2 + u[None, :] ** 2) <= 1.0
    raise ValueError(f"kind must be 'rectangle' or 'ellipse', not {kind!r}")


def roi_stats(image: np.ndarray, pixel_size: tuple[float, float],
              rect: tuple[float, float, float, float], kind: str = "rectangle",
              exclude: np.ndarray | None = None) -> RoiStats | None:
    """Mean, SD (population), range and area of the region on ``image``; None if empty.

    ``exclude`` is a mask of pixels to leave out (padding). Area counts the pixels
    used, so it matches the mean it is shown with.
    """
    mask = roi_mask(image.shape[:2], pixel_size, rect, kind)
    if exclude is not None:
        mask &= ~np.asarray(exclude, dtype=bool)
    values = np.asarray(image, dtype=np.float64)[mask]
    if values.size == 0:
        return None
    return RoiStats(mean=float(values.mean()), sd=float(values.std()),
                    minimum=float(values.min()), maximum=float(values.max()),
                    n_pixels=int(values.size),
                    area_mm2=float(values.size * pixel_size[0] * pixel_size[1]))
