"""HU windowing: pure functions, the preset table, multi-window stacks, CLAHE.

A window is (width W, level L): HU in [L - W/2, L + W/2] maps linearly to [0, 1],
values outside are clipped. This is the linear VOI LUT of DICOM PS3.3 C.11.2.1.2
(without its half-unit offsets, which only matter for integer display ranges).
One :class:`WindowSpec` serves display, training and inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vitdesk.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A named window with the reading task it comes from."""

    name: str
    width: float
    level: float
    viewer: str


PRESETS: dict[str, Preset] = {
    p.name.lower().replace(" ", "_"): p
    for p in (
        Preset("Brain", 80, 40, "head CT: brain parenchyma"),
        Preset("Subdural", 200, 75, "head CT: extra-axial blood"),
        Preset("Stroke", 40, 40, "head CT: early ischaemia (grey/white contrast)"),
        Preset("Lung", 1500, -600, "chest CT: lung parenchyma"),
        Preset("Mediastinum", 350, 50, "chest CT: mediastinum"),
        Preset("Abdomen", 400, 50, "abdominal CT: soft-tissue organs"),
        Preset("Liver", 150, 30, "abdominal CT: liver lesions"),
        Preset("Bone", 1800, 400, "any CT: cortical and trabecular bone"),
        Preset("Soft tissue", 400, 40, "any CT: general soft tissue"),
    )
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name (case and spaces ignored)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in PRESETS:
        raise ConfigError(
            f"unknown window preset '{name}': choose one of {', '.join(PRESETS)}"
        )
    return PRESETS[key]


def apply_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Map HU to float32 in [0, 1] with window ``width`` and ``level``."""
    if width <= 0:
        raise ConfigError(f"window width must be positive, got {width}")
    lo = level - width / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / width)
    return np.clip(out, 0.0, 1.0, out=out)


def to_uint8(img01: np.ndarray) -> np.ndarray:
    """Convert a [0, 1] image to uint8 (rounded)."""
    return np.clip(np.rint(np.asarray(img01, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def window_uint8(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """Window HU straight to uint8 for display."""
    return to_uint8(apply_window(hu, width, level))


def clahe(img01: np.ndarray, clip_limit: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) of a 2-D [0, 1] image."""
    import cv2  # lazy: OpenCV is heavy and only needed when CLAHE is on

    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile), int(tile)))
    img = np.asarray(img01)
    if img.ndim != 2:
        raise ValueError("clahe expects a single 2-D image")
    u16 = np.clip(np.rint(img * 65535.0), 0, 65535).astype(np.uint16)
    return op.apply(u16).astype(np.float32) / np.float32(65535.0)


@dataclass(frozen=True)
class WindowSpec:
    """How HU become model/display channels: 1 or 3 windows, optional CLAHE.

    ``windows`` holds (width, level) pairs; ``names`` their preset names (or
    "custom"). One window is replicated to the model's channels; three fill them.
    """

    windows: tuple[tuple[float, float], ...] = ((400.0, 40.0),)
    names: tuple[str, ...] = ("soft_tissue",)
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.windows) not in (1, 3):
            raise ConfigError(
                f"a window definition needs 1 or 3 windows, got {len(self.windows)}"
            )
        if len(self.names) != len(self.windows):
            raise ConfigError(
                f"a window definition has {len(self.windows)} windows but "
                f"{len(self.names)} names: give one name per window"
            )
        for w, _ in self.windows:
            if w <= 0:
                raise ConfigError(f"window width must be positive, got {w}")

    @classmethod
    def parse(cls, text: str, clahe: bool = False) -> WindowSpec:
        """Parse ``"brain,subdural,bone"``, ``"lung"`` or ``"400/40"`` (W/L) forms."""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        windows, names = [], []
        for p in parts:
            if "/" in p:
                try:
                    w, lv = (float(v) for v in p.split("/"))
                except ValueError:
                    raise ConfigError(
                        f"cannot read window '{p}': use WIDTH/LEVEL, e.g. 400/40"
                    ) from None
                windows.append((w, lv))
                names.append("custom")
            else:
                pr = get_preset(p)
                windows.append((float(pr.width), float(pr.level)))
                names.append(p.strip().lower().replace(" ", "_"))
        return cls(windows=tuple(windows), names=tuple(names), clahe=clahe)

    def label(self) -> str:
        """Text form that :meth:`parse` reads back."""
        return ",".join(
            n if n != "custom" else f"{w:g}/{lv:g}"
            for n, (w, lv) in zip(self.names, self.windows, strict=True)
        )

    def to_dict(self) -> dict:
        return {
            "windows": [list(w) for w in self.windows],
            "names": list(self.names),
            "clahe": self.clahe,
            "clahe_clip": self.clahe_clip,
            "clahe_tile": self.clahe_tile,
        }

    @classmethod
    def from_dict(cls, d: dict) -> WindowSpec:
        return cls(
            windows=tuple((float(w), float(lv)) for w, lv in d["windows"]),
            names=tuple(d.get("names") or ["custom"] * len(d["windows"])),
            clahe=bool(d.get("clahe", False)),
            clahe_clip=float(d.get("clahe_clip", 2.0)),
            clahe_tile=int(d.get("clahe_tile", 8)),
        )

    def apply(self, hu: np.ndarray, channels: int = 3) -> np.ndarray:
        """Window a 2-D HU slice into a float32 (channels, H, W) array in [0, 1]."""
        return window_stack(hu, self.windows, channels=channels, use_clahe=self.clahe,
                            clip_limit=self.clahe_clip, tile=self.clahe_tile)


def window_stack(
    hu: np.ndarray,
    windows: Sequence[tuple[float, float]],
    channels: int = 3,
    use_clahe: bool = False,
    clip_limit: float = 2.0,
    tile: int = 8,
) -> np.ndarray:
    """Stack windows of a 2-D HU slice as channels (C, H, W), float32 in [0, 1].

    With one window the result is replicated to ``channels``; with as many
    windows as channels each fills one (e.g. brain / subdural / bone).
    """
    planes = []
    for w, lv in windows:
        img = apply_window(hu, w, lv)
        if use_clahe:
            img = clahe(img, clip_limit, tile)
        planes.append(img)
    if len(planes) == 1:
        planes = planes * channels
    if len(planes) != channels:
        raise ConfigError(
            f"{len(planes)} windows cannot fill {channels} channels: give 1 or {channels}"
        )
    return np.stack(planes, axis=0)
