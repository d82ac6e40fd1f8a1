"""Slices into model tensors: one preprocessing path for training, inference and overlays.

The pure numpy steps and their geometry (window, centred zero-pad to a square, resize,
normalise; nothing cropped, so maps go back onto the slice with
:meth:`Letterbox.to_slice`) live in :mod:`vitdesk.data.preprocess` (torch-free, so an
exported model predicts without torch) and are re-exported here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vitdesk.data.augment import (
    AugmentConfig,
    geometric,
    jitter_hu,
    jitter_image,
    sample_rng,
)
from vitdesk.data.preprocess import (  # noqa: F401 - the torch-free half, re-exported
    Letterbox,
    crop_box,
    image_to_unit,
    letterbox_resize,
    normalise,
    preprocess_slice,
    read_dicom_hu,
    read_image,
    read_record,
    to_slice,
    to_unit,
)
from vitdesk.data.records import SliceRecord
from vitdesk.errors import DataError
from vitdesk.imaging.windowing import WindowSpec

_INT16_MIN, _INT16_MAX = -32768, 32767



def _compact_hu(hu: np.ndarray) -> np.ndarray:
    """int16 when lossless (CT HU usually are integers), else float32."""
    if hu.size and hu.min() >= _INT16_MIN and hu.max() <= _INT16_MAX:
        r = np.rint(hu)
        if np.array_equal(r, hu):
            return r.astype(np.int16)
    return hu.astype(np.float32)


class LRUCache:
    """A thread-safe LRU of numpy arrays bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._d[key] = value
            self.nbytes += value.nbytes
            while self.nbytes > self.max_bytes:
                _, ev = self._d.popitem(last=False)
                self.nbytes -= ev.nbytes

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.nbytes = 0


# ---------------------------------------------------------------- dataset


class SliceDataset(Dataset):
    """Slices as normalised tensors ``(C, img_size, img_size)`` with integer labels.

    ``dataset[i]`` uses epoch ``self.epoch`` (see :meth:`set_epoch`);
    ``dataset[(i, epoch)]`` names the epoch explicitly, which is what
    :class:`vitdesk.data.build.EpochSampler` yields so persistent DataLoader workers
    (which hold their own copy of the dataset) still see the right epoch.

    Caching: decoded slices are kept in a per-process LRU bounded by ``cache_mb``.
    Each DataLoader worker has its own cache, so use ``persistent_workers=True``
    (non-persistent workers start empty every epoch). Without intensity
    augmentation the cache holds the windowed, resized [0, 1] image as float16
    (``C * img_size**2 * 2`` bytes); with HU jitter it holds HU as int16 (or the
    image's own uint8/uint16), because jitter must act before windowing.
    """

    def __init__(
        self,
        records: Sequence[SliceRecord],
        classes: list[str],
        window: WindowSpec,
        img_size: int,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channels: int = 3,
        augment: AugmentConfig | None = None,
        cache: bool = True,
        cache_mb: float = 512.0,
    ) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({r.label for r in self.records if r.label is not None}
                         - set(self.class_index))
        if unknown:
            raise DataError(
                f"label(s) {', '.join(unknown)} are not among the model's classes "
                f"({', '.join(self.classes)}): relabel or retrain with these classes"
            )
        self.window = window
        self.img_size = int(img_size)
        self.mean = tuple(float(v) for v in np.atleast_1d(mean))
        self.std = tuple(float(v) for v in np.atleast_1d(std))
        self.channels = int(channels)
        self.augment = augment
        self.epoch = 0
        self.cache = LRUCache(int(cache_mb * 2**20)) if cache else None
        self.n_reads = 0  # disk reads in this process (tests check the cache with it)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_img_size(self, img_size: int) -> None:
        """Change the output size (progressive resizing); cached sources stay valid."""
        self.img_size = int(img_size)

    @property
    def targets(self) -> list[int]:
        return [self.class_index.get(r.label, -1) if r.label else -1 for r in self.records]

    def read_source(self, index: int) -> np.ndarray:
        """The decoded slice (HU float32 or the image array), read from disk."""
        self.n_reads += 1
        return read_record(self.records[index])

    def _cached(self, key, make):
        if self.cache is None:
            return make()
        v = self.cache.get(key)
        if v is None:
            v = make()
            self.cache.put(key, v)
        return v

    def _source(self, index: int) -> np.ndarray:
        def make() -> np.ndarray:
            src = self.read_source(index)
            return _compact_hu(src) if self.records[index].kind == "dicom" else src

        return self._cached(("src", index), make)

    def _prepared(self, index: int) -> np.ndarray:
        """Windowed, letterboxed [0, 1] image at the current size (float32)."""
        rec = self.records[index]

        def make() -> np.ndarray:
            unit = to_unit(self.read_source(index), rec.kind, self.window, self.channels)
            return letterbox_resize(unit, self.img_size).astype(np.float16)

        return self._cached(("prep", index, self.img_size), make).astype(np.float32)

    def _intensity_aug(self, kind: str) -> bool:
        a = self.augment
        if a is None:
            return False
        return a.jitters_hu if kind == "dicom" else a.image_jitter > 0

    def sample(self, index: int, epoch: int | None = None) -> np.ndarray:
        """The float32 normalised array of one sample (no torch)."""
        rec = self.records[index]
        epoch = self.epoch if epoch is None else int(epoch)
        rng = sample_rng(self.augment.seed, epoch, index) if self.augment else None
        if self._intensity_aug(rec.kind):
            if rec.kind == "dicom":
                hu = jitter_hu(self._source(index), self.augment, rng)
                unit = self.window.apply(hu, self.channels)
            else:
                unit = jitter_image(image_to_unit(self._source(index), self.channels),
                                    self.augment, rng)
            x = letterbox_resize(unit, self.img_size)
        else:
            x = self._prepared(index)
        if self.augment is not None:
            x = geometric(x, self.augment, rng)
        return normalise(x, self.mean, self.std)

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:
        if isinstance(item, tuple | list):
            index, epoch = int(item[0]), int(item[1])
        else:
            index, epoch = int(item), None
        x = self.sample(index, epoch)
        label = self.records[index].label
        y = self.class_index[label] if label is not None else -1
        return torch.from_numpy(x), y
