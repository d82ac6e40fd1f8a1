"""Training augmentations with their own seeded RNG, and class-imbalance helpers.

Every random draw for sample ``index`` in ``epoch`` comes from
``numpy.random.default_rng([seed, epoch, index])``, so a run is reproducible and a
resumed run sees exactly the augmentations it would have seen (no global RNG, and
the result does not depend on DataLoader worker count or order).

Order inside :class:`SliceDataset`: HU jitter (before windowing) -> window ->
letterbox/resize -> flips + affine -> normalise. Mixup/CutMix are batch-level and
run in the trainer with ``timm.data.Mixup(**mixup_kwargs(...))``.
No torch import here so configs can use :class:`AugmentConfig` cheaply.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from vitdesk.data.records import SliceRecord
from vitdesk.errors import ConfigError, DataError


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (all in the run config).

    Attributes:
        hflip, vflip: random left-right / up-down flips (probability ``flip_prob``).
        rotate_deg: rotation drawn uniformly in [-rotate_deg, rotate_deg].
        scale: zoom factor range (min, max).
        translate: shift as a fraction of the image size, per axis.
        hu_shift: HU offset drawn in [-hu_shift, hu_shift], added BEFORE windowing
            (simulates calibration / scanner differences).
        hu_scale: relative HU gain drawn in [1 - hu_scale, 1 + hu_scale] (about 0 HU,
            i.e. water stays water).
        image_jitter: brightness/contrast jitter fraction for PNG/JPEG inputs, which
            carry no HU.
        mixup_alpha, cutmix_alpha, mix_prob, switch_prob: passed to timm's Mixup.
        progressive: ((first_epoch, img_size), ...) progressive-resizing schedule.
        seed: base of every per-sample RNG.
        intensity: shorthand (the run config's ``data.intensity``): when set, it is
            used as both ``hu_scale`` and ``image_jitter``.

    ``scale`` may also be one number s, meaning (1 - s, 1 + s) (the run config's form).
    """

    hflip: bool = True
    vflip: bool = False
    flip_prob: float = 0.5
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    hu_shift: float = 20.0
    hu_scale: float = 0.05
    image_jitter: float = 0.05
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    progressive: tuple[tuple[int, int], ...] = ()
    seed: int = 0
    intensity: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, int | float):
            s = float(self.scale)
            object.__setattr__(self, "scale", (1.0 - s, 1.0 + s))
        else:
            object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        if self.intensity is not None:
            object.__setattr__(self, "hu_scale", float(self.intensity))
            object.__setattr__(self, "image_jitter", float(self.intensity))
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"augment.flip_prob must be in [0, 1], got {self.flip_prob}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ConfigError(f"augment.scale must be (min, max) with 0 < min <= max: {self.scale}")
        if self.hu_shift < 0 or not 0 <= self.hu_scale < 1:
            raise ConfigError("augment.hu_shift must be >= 0 and augment.hu_scale in [0, 1)")
        if self.translate < 0 or self.rotate_deg < 0 or self.image_jitter < 0:
            raise ConfigError("augment.translate, rotate_deg and image_jitter must be >= 0")

    @property
    def jitters_hu(self) -> bool:
        return self.hu_shift > 0 or self.hu_scale > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"] = list(self.scale)
        d["progressive"] = [list(p) for p in self.progressive]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown augment option(s): {', '.join(sorted(unknown))}")
        kw = dict(d)
        if "scale" in kw:
            kw["scale"] = tuple(float(v) for v in kw["scale"])
        if "progressive" in kw:
            kw["progressive"] = tuple((int(e), int(s)) for e, s in kw["progressive"])
        return cls(**kw)

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all (for checks that need the plain pipeline)."""
        return cls(hflip=False, vflip=False, rotate_deg=0.0, scale=(1.0, 1.0), translate=0.0,
                   hu_shift=0.0, hu_scale=0.0, image_jitter=0.0)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The RNG of one sample in one epoch (independent of worker and order)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def jitter_hu(hu: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """HU' = HU * gain + shift, drawn from ``rng`` (applied before windowing)."""
    gain = 1.0 + rng.uniform(-cfg.hu_scale, cfg.hu_scale) if cfg.hu_scale > 0 else 1.0
    shift = rng.uniform(-cfg.hu_shift, cfg.hu_shift) if cfg.hu_shift > 0 else 0.0
    return np.asarray(hu, dtype=np.float32) * np.float32(gain) + np.float32(shift)


def jitter_image(img01: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness/contrast jitter of an already windowed [0, 1] image (PNG/JPEG)."""
    j = cfg.image_jitter
    if j <= 0:
        return img01
    gain = 1.0 + rng.uniform(-j, j)
    shift = rng.uniform(-j, j)
    return np.clip((img01 - 0.5) * gain + 0.5 + shift, 0.0, 1.0).astype(np.float32)


def geometric(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Flips and a small affine (rotate/scale/translate) of a (C, H, W) [0, 1] image.

    Out-of-image pixels are 0 (black, like the letterbox padding).
    """
    import cv2  # lazy: heavy, and only training needs it

    out = img
    if cfg.hflip and rng.random() < cfg.flip_prob:
        out = out[:, :, ::-1]
    if cfg.vflip and rng.random() < cfg.flip_prob:
        out = out[:, ::-1, :]
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if cfg.rotate_deg > 0 else 0.0
    lo, hi = cfg.scale
    zoom = rng.uniform(lo, hi) if hi > lo else lo
    t = cfg.translate
    tx, ty = (rng.uniform(-t, t, size=2) if t > 0 else (0.0, 0.0))
    if angle == 0.0 and zoom == 1.0 and tx == 0.0 and ty == 0.0:
        return np.ascontiguousarray(out, dtype=np.float32)
    _, h, w = out.shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(angle), float(zoom))
    m[0, 2] += tx * w
    m[1, 2] += ty * h
    hwc = np.ascontiguousarray(out.transpose(1, 2, 0), dtype=np.float32)
    warped = cv2.warpAffine(hwc, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if warped.ndim == 2:  # cv2 drops a single channel axis
        warped = warped[:, :, None]
    return np.ascontiguousarray(warped.transpose(2, 0, 1))


def mixup_kwargs(
    cfg: AugmentConfig | None, num_classes: int, label_smoothing: float = 0.0
) -> dict | None:
    """Keyword arguments for ``timm.data.Mixup``, or None when mixup/cutmix are off."""
    if cfg is None or (cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0):
        return None
    return {
        "mixup_alpha": cfg.mixup_alpha,
        "cutmix_alpha": cfg.cutmix_alpha,
        "prob": cfg.mix_prob,
        "switch_prob": cfg.switch_prob,
        "mode": "batch",
        "label_smoothing": label_smoothing,
        "num_classes": num_classes,
    }


def progressive_size(
    schedule: Sequence[Sequence[int]], epoch: int, default: int, multiple_of: int = 1
) -> int:
    """Image size at ``epoch`` from ((first_epoch, size), ...); ``default`` before any.

    ``multiple_of`` (the patch size) rounds the size down so the ViT patch grid fits.
    """
    size = default
    for first, s in sorted((int(a), int(b)) for a, b in schedule):
        if epoch >= first:
            size = s
    if multiple_of > 1:
        size = max(multiple_of, size - size % multiple_of)
    return size


def class_counts(records: Sequence[SliceRecord], classes: Sequence[str]) -> np.ndarray:
    """Slices per class, in ``classes`` order."""
    c = Counter(r.label for r in records)
    return np.array([c.get(k, 0) for k in classes], dtype=np.int64)


def loss_weights(records: Sequence[SliceRecord], classes: Sequence[str]) -> np.ndarray:
    """Balanced class weights n / (k * n_c) for a weighted loss (mean weight 1 per slice)."""
    counts = class_counts(records, classes)
    if (counts == 0).any():
        empty = [k for k, n in zip(classes, counts, strict=True) if n == 0]
        raise DataError(
            f"class(es) {', '.join(empty)} have no training slices: add images or drop "
            "the class"
        )
    return (counts.sum() / (len(classes) * counts)).astype(np.float32)


def sample_weights(records: Sequence[SliceRecord], classes: Sequence[str]) -> np.ndarray:
    """Per-slice weights (1 / class count) for ``torch.utils.data.WeightedRandomSampler``."""
    counts = class_counts(records, classes)
    index = {k: i for i, k in enumerate(classes)}
    return np.array(
        [1.0 / counts[index[r.label]] if r.label in index else 0.0 for r in records],
        dtype=np.float64,
    )
