"""Slices into model inputs (numpy, no torch): one preprocessing path for training,
inference (the run's model and an exported one) and overlays.

Geometry of :func:`preprocess_slice` (and of every training sample):

1. the slice (H, W) becomes channels in [0, 1]: DICOM HU through ``WindowSpec.apply``;
   PNG/JPEG (already windowed) scaled by their bit depth, greyscale replicated;
2. it is zero-padded (black) to a centred square of side ``S = max(H, W)``:
   ``pad_top = (S - H) // 2``, ``pad_left = (S - W) // 2``;
3. the square is resized to ``img_size`` (``cv2.INTER_AREA`` when shrinking,
   ``INTER_LINEAR`` when enlarging), so one model pixel is ``S / img_size`` slice pixels;
4. channels are normalised with the model's pretrained ``mean`` / ``std``.

Nothing is cropped away, so any map over the model input (attention, Grad-CAM) maps
back onto the whole displayed slice with :meth:`Letterbox.to_slice`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitdesk.data.records import SliceRecord
from vitdesk.errors import DataError
from vitdesk.imaging.dicom import read_frame_hu
from vitdesk.imaging.windowing import WindowSpec

# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Letterbox:
    """Where a (height, width) slice sits inside the square ``size`` model input."""

    height: int
    width: int
    size: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def pad_top(self) -> int:
        return (self.side - self.height) // 2

    @property
    def pad_left(self) -> int:
        return (self.side - self.width) // 2

    @property
    def scale(self) -> float:
        """Model-input pixels per slice pixel."""
        return self.size / self.side

    def crop_box(self) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) of the slice inside the model input, in model pixels."""
        s = self.scale
        return (
            self.pad_top * s,
            self.pad_left * s,
            (self.pad_top + self.height) * s,
            (self.pad_left + self.width) * s,
        )

    def to_slice(self, map2d: np.ndarray) -> np.ndarray:
        """Map a 2-D map over the model input (any grid, e.g. 14x14 patches) to (H, W).

        Inverse of steps 2-3 of the module docstring: resize to the padded square,
        then drop the padding.
        """
        import cv2

        m = np.asarray(map2d, dtype=np.float32)
        sq = cv2.resize(m, (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        return sq[self.pad_top : self.pad_top + self.height,
                  self.pad_left : self.pad_left + self.width]

    def to_input_xy(self, x: float, y: float) -> tuple[float, float]:
        """A slice pixel coordinate (x, y) in model-input pixels."""
        return (x + self.pad_left) * self.scale, (y + self.pad_top) * self.scale


def crop_box(height: int, width: int, img_size: int) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) of a (height, width) slice inside the ``img_size`` model input."""
    return Letterbox(height, width, img_size).crop_box()


def to_slice(map2d: np.ndarray, height: int, width: int, img_size: int) -> np.ndarray:
    """Map a model-input map (attention etc.) back onto the (height, width) slice."""
    return Letterbox(height, width, img_size).to_slice(map2d)


# ---------------------------------------------------------------- pure preprocessing


def image_to_unit(img: np.ndarray, channels: int = 3) -> np.ndarray:
    """An already windowed image (H, W) / (H, W, 3|4) -> float32 (C, H, W) in [0, 1]."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / np.float32(255.0)
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / np.float32(65535.0)
    else:
        f = a.astype(np.float32)
        if f.size and float(f.max()) > 1.0:  # float image in 0..255 convention
            f = f / np.float32(255.0)
        f = np.clip(f, 0.0, 1.0)
    if f.ndim == 3 and f.shape[2] == 1:
        f = f[:, :, 0]
    if f.ndim == 2:
        return np.repeat(f[None], channels, axis=0)
    if f.ndim != 3 or f.shape[2] not in (3, 4):
        raise DataError(f"unsupported image shape {a.shape}: use greyscale or RGB images")
    rgb = f[:, :, :3].transpose(2, 0, 1)
    if channels == 3:
        return np.ascontiguousarray(rgb)
    grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float32)
    return np.repeat(grey[None], channels, axis=0)


def to_unit(
    hu_or_img: np.ndarray, kind: str, window: WindowSpec, channels: int = 3
) -> np.ndarray:
    """Step 1: HU (kind "dicom") or an image (kind "image") -> (C, H, W) in [0, 1]."""
    if kind == "dicom":
        return window.apply(np.asarray(hu_or_img, dtype=np.float32), channels=channels)
    if kind == "image":
        return image_to_unit(hu_or_img, channels)
    raise DataError(f"unknown slice kind '{kind}': expected 'dicom' or 'image'")


def letterbox_resize(unit: np.ndarray, img_size: int) -> np.ndarray:
    """Steps 2-3: pad (C, H, W) to a centred square with zeros, resize to img_size."""
    import cv2

    c, h, w = unit.shape
    box = Letterbox(h, w, img_size)
    s = box.side
    sq = np.zeros((s, s, c), dtype=np.float32)
    sq[box.pad_top : box.pad_top + h, box.pad_left : box.pad_left + w] = unit.transpose(1, 2, 0)
    if s != img_size:
        interp = cv2.INTER_AREA if s > img_size else cv2.INTER_LINEAR
        sq = cv2.resize(sq, (img_size, img_size), interpolation=interp)
        if sq.ndim == 2:
            sq = sq[:, :, None]
    return np.ascontiguousarray(sq.transpose(2, 0, 1))


def _stats(values: Sequence[float] | float, channels: int, name: str) -> np.ndarray:
    v = np.atleast_1d(np.asarray(values, dtype=np.float32))
    if v.size == 1:
        v = np.repeat(v, channels)
    elif v.size != channels:
        if channels == 1:
            v = v.mean(keepdims=True)
        else:
            raise DataError(f"normalisation {name} has {v.size} values for {channels} channels")
    return v.reshape(channels, 1, 1)


def normalise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Step 4: (x - mean) / std per channel."""
    c = x.shape[0]
    return ((x - _stats(mean, c, "mean")) / _stats(std, c, "std")).astype(np.float32)


def preprocess_slice(
    hu_or_img: np.ndarray,
    kind: str,
    window: WindowSpec,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
) -> np.ndarray:
    """One slice -> float32 (channels, img_size, img_size), exactly as training sees it
    without augmentation. See the module docstring for the geometry."""
    unit = to_unit(hu_or_img, kind, window, channels)
    return normalise(letterbox_resize(unit, img_size), mean, std)


# ---------------------------------------------------------------- reading


def read_dicom_hu(path: str, frame: int = 0) -> np.ndarray:
    """One 2-D float32 HU slice (frame ``frame`` of a multi-frame file).

    The imaging package's reader, the same one the viewer uses: legacy rescale
    tags, enhanced CT functional groups, a valid Modality LUT, padding masked.
    """
    return read_frame_hu(path, frame)


def read_image(path: str) -> np.ndarray:
    """A PNG/JPEG as uint8/uint16, greyscale (H, W) or RGB (H, W, 3)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: cannot read the image: the file is missing or corrupt")
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
        img = cv2.cvtColor(img, code)
    return img


def read_record(rec: SliceRecord) -> np.ndarray:
    """The raw slice of a record: HU float32 (DICOM) or the image array (PNG/JPEG).

    This is what the viewer displays and what :func:`preprocess_slice` takes.
    """
    if not Path(rec.path).is_file():
        raise DataError(f"{rec.path}: file missing: it was listed in the dataset; "
                        "restore it or rebuild the dataset")
    if rec.kind == "image":
        return read_image(rec.path)
    return read_dicom_hu(rec.path, rec.frame)
