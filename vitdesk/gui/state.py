"""Small observable state objects the widgets bind to (one change signal per field).

Widgets never own these values: the slice viewer, the Windowing tab and the
keyboard all write to the same :class:`WindowState`, and everyone redraws from
its ``changed`` signal. That is what keeps spin boxes, preset list and mouse
dragging in step.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from vitdesk.imaging.volume import Volume
from vitdesk.imaging.windowing import PRESETS, Preset

AXES = ("axial", "coronal", "sagittal")
# Limits of the W/L controls: wide enough for any CT window, never a zero width.
MIN_WIDTH, MAX_WIDTH = 1.0, 8000.0
MIN_LEVEL, MAX_LEVEL = -2000.0, 6000.0
CT_FALLBACK_WINDOW = (400.0, 40.0)  # soft tissue, for CT without a window in the file


def is_ct(volume: Volume | None) -> bool:
    """True for CT (and volumes that do not say: NIfTI/MHA files carry no modality)."""
    if volume is None:
        return True
    return str(volume.meta.get("Modality") or "CT").upper() == "CT"


def value_unit(volume: Volume | None) -> str:
    """The unit of the voxel values: ``HU`` for CT, else the neutral ``value`` (an MR
    or PET value has no fixed scale)."""
    return "HU" if is_ct(volume) else "value"


def auto_window(values: np.ndarray, lo_pct: float = 1.0,
                hi_pct: float = 99.0) -> tuple[float, float]:
    """(width, level) spanning the 1st..99th percentile of ``values`` (a subsample of
    at most ~1M voxels; padding and NaN left out by the caller or ignored)."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, flat.size // 1_000_000)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return CT_FALLBACK_WINDOW
    lo, hi = np.percentile(sample, [lo_pct, hi_pct])
    if hi <= lo:  # a flat image: any small window around its value
        lo, hi = float(sample.min()), float(sample.max())
        if hi <= lo:
            span = max(abs(lo) * 0.1, 1.0)
            lo, hi = lo - span / 2, lo + span / 2
    return float(hi - lo), float((hi + lo) / 2.0)


def display_window(volume: Volume) -> tuple[float, float]:
    """The window a series opens with: the file's own (Window Center/Width), else for CT
    the soft-tissue window, else the 1st..99th percentile of its voxels (a CT window on
    MR values shows a flat grey image)."""
    if volume.default_window:
        return volume.default_window
    if is_ct(volume):
        return CT_FALLBACK_WINDOW
    values = volume.hu if volume.padding is None else volume.hu[~volume.padding]
    return auto_window(values)


def window_limits(volume: Volume | None) -> tuple[float, float, float, float]:
    """(min width, max width, min level, max level) of the W/L controls for ``volume``:
    the CT limits, widened (and made finer) for other values."""
    if volume is None or is_ct(volume):
        return MIN_WIDTH, MAX_WIDTH, MIN_LEVEL, MAX_LEVEL
    w, lv = display_window(volume)
    flat = volume.hu.reshape(-1)[:: max(1, volume.hu.size // 1_000_000)]
    vmin, vmax = float(np.nanmin(flat)), float(np.nanmax(flat))
    span = max(vmax - vmin, w, 1e-6)
    min_w = min(MIN_WIDTH, span / 1000.0)
    return (min_w, max(MAX_WIDTH, 2.0 * span), min(MIN_LEVEL, vmin - span),
            max(MAX_LEVEL, vmax + span))


class WindowState(QObject):
    """Display window (width, level), the preset it came from, and CLAHE.

    ``preset`` is the key of the preset the window equals (built-in key or
    ``"custom:<name>"``) or "" once the user has dragged away from it.
    """

    changed = Signal(float, float)  # width, level
    preset_changed = Signal(str)
    clahe_changed = Signal(bool)
    scale_changed = Signal()  # unit or limits changed (another kind of series)

    def __init__(self, width: float = 400.0, level: float = 40.0) -> None:
        super().__init__()
        self._width, self._level = float(width), float(level)
        self._preset = ""
        self._clahe = False
        self.default: tuple[float, float] = (self._width, self._level)
        self.custom: dict[str, tuple[float, float]] = {}
        self.unit = "HU"
        self.limits: tuple[float, float, float, float] = (MIN_WIDTH, MAX_WIDTH, MIN_LEVEL,
                                                          MAX_LEVEL)

    def set_scale(self, unit: str, limits: tuple[float, float, float, float]) -> None:
        """The unit of the values shown and the range of the W/L controls."""
        limits = tuple(float(v) for v in limits)
        if (unit, limits) != (self.unit, self.limits):
            self.unit, self.limits = unit, limits
            self.scale_changed.emit()

    @property
    def width(self) -> float:
        return self._width

    @property
    def level(self) -> float:
        return self._level

    @property
    def preset(self) -> str:
        return self._preset

    @property
    def levels(self) -> tuple[float, float]:
        """Display range (L - W/2, L + W/2) in the values' unit (HU for CT)."""
        return (self._level - self._width / 2.0, self._level + self._width / 2.0)

    def set_window(self, width: float, level: float, preset: str = "") -> None:
        min_w, max_w, min_l, max_l = self.limits
        width = float(np.clip(width, min_w, max_w))
        level = float(np.clip(level, min_l, max_l))
        if (width, level) != (self._width, self._level):
            self._width, self._level = width, level
            self.changed.emit(width, level)
        if preset != self._preset:
            self._preset = preset
            self.preset_changed.emit(preset)

    def set_width(self, width: float) -> None:
        self.set_window(width, self._level, self._matching_preset(width, self._level))

    def set_level(self, level: float) -> None:
        self.set_window(self._width, level, self._matching_preset(self._width, level))

    def apply_preset(self, key: str) -> None:
        """Apply a built-in preset key (``"lung"``) or ``"custom:<name>"``."""
        w, lv = self.preset_window(key)
        self.set_window(w, lv, key)

    def preset_window(self, key: str) -> tuple[float, float]:
        if key.startswith("custom:"):
            return self.custom[key[7:]]
        p: Preset = PRESETS[key]
        return (float(p.width), float(p.level))

    def reset(self) -> None:
        """Back to the series' own window (DICOM VOI tags) or the fallback."""
        w, lv = self.default
        self.set_window(w, lv, self._matching_preset(w, lv))

    def set_clahe(self, on: bool) -> None:
        if bool(on) != self._clahe:
            self._clahe = bool(on)
            self.clahe_changed.emit(self._clahe)

    @property
    def clahe(self) -> bool:
        return self._clahe

    def _matching_preset(self, width: float, level: float) -> str:
        for key, p in PRESETS.items():
            if (float(p.width), float(p.level)) == (width, level):
                return key
        for name, wl in self.custom.items():
            if wl == (width, level):
                return f"custom:{name}"
        return ""


class ViewerState(QObject):
    """Which volume is shown, along which axis, at which slice; PHI visibility."""

    volume_changed = Signal(object)  # Volume | None
    axis_changed = Signal(str)
    slice_changed = Signal(int)
    show_phi_changed = Signal(bool)

    def __init__(self) -> None:
        super().__init__()
        self._volume: Volume | None = None
        self._axis = "axial"
        self._index = {a: 0 for a in AXES}
        self._show_phi = False

    @property
    def volume(self) -> Volume | None:
        return self._volume

    @property
    def axis(self) -> str:
        return self._axis

    @property
    def index(self) -> int:
        return self._index[self._axis]

    @property
    def show_phi(self) -> bool:
        return self._show_phi

    def n_slices(self, axis: str | None = None) -> int:
        if self._volume is None:
            return 0
        z, y, x = self._volume.shape
        return {"axial": z, "coronal": y, "sagittal": x}[axis or self._axis]

    def set_volume(self, volume: Volume | None) -> None:
        self._volume = volume
        if volume is not None:
            # Open in the middle of every axis: the first slice is usually air.
            for a in AXES:
                self._index[a] = self.n_slices(a) // 2
        self.volume_changed.emit(volume)
        self.slice_changed.emit(self.index)

    def set_axis(self, axis: str) -> None:
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}")
        if axis != self._axis:
            self._axis = axis
            self.axis_changed.emit(axis)
            self.slice_changed.emit(self.index)

    def set_index(self, index: int) -> None:
        n = self.n_slices()
        if n == 0:
            return
        index = int(min(max(index, 0), n - 1))
        if index != self._index[self._axis]:
            self._index[self._axis] = index
            self.slice_changed.emit(index)

    def step(self, delta: int) -> None:
        self.set_index(self.index + delta)

    def set_show_phi(self, on: bool) -> None:
        if bool(on) != self._show_phi:
            self._show_phi = bool(on)
            self.show_phi_changed.emit(self._show_phi)

