"""Settings and events of :func:`vitdesk.engine.pretrain.pretrain` (torch is imported
only when a config is validated).

:class:`PretrainConfig` is everything that defines a run (MAE or formula-driven); the
events are what listeners (the console, the GUI's Pretrain page) receive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from vitdesk.config import AMP_MODES
from vitdesk.errors import ConfigError
from vitdesk.imaging.windowing import WindowSpec


# ---- configuration ----------------------------------------------------------------------
@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run.

    The learning rate follows the MAE paper's rule ``lr = base_lr * batch_size / 256``.
    ``formula`` empty: MAE on the images of ``data``; ``contours`` or ``fractals``:
    classify ``formula_classes`` generated formulas (``formula_per_class`` fresh images
    of each per epoch); ``data``, ``window`` and the MAE settings are then unused.
    """

    data: str = ""
    model: str = "vit_tiny_patch16_224"
    img_size: int = 224
    window: str = "soft_tissue"  # a WindowSpec label: must match the later fine-tuning
    clahe: bool = False
    epochs: int = 50
    batch_size: int = 64
    base_lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    clip_grad: float = 0.0  # 0 = off (the paper does not clip)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    formula: str = ""  # "" (MAE on data) | contours | fractals
    formula_classes: int = 64
    formula_per_class: int = 16
    augment: bool = True  # flips + small zoom/shift (MAE needs only light augmentation)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto | off | fp16 | bf16: the fine-tuning rule (engine.device)
    attention: str = "auto"  # auto | sdpa | eager
    workers: int = 0
    log_every: int = 10
    out: str = "pretrain"
    resume: bool = False

    @property
    def lr(self) -> float:
        """The actual peak learning rate (linear scaling with the batch size)."""
        return self.base_lr * self.batch_size / 256.0

    def validate(self) -> PretrainConfig:
        """Check every field; raise :class:`ConfigError` naming the field and the fix."""
        from vitdesk.config import patch_size_of

        if not str(self.out).strip():
            raise ConfigError("pretrain.out is empty: give an output folder with --out DIR")
        if not self.model.strip():
            raise ConfigError("pretrain.model is empty: give a timm ViT name, e.g. "
                              "vit_tiny_patch16_224")
        patch = patch_size_of(self.model)
        if self.img_size < 8:
            raise ConfigError(f"pretrain.img_size={self.img_size} is too small: use at least 8")
        if patch and self.img_size % patch:
            lo = self.img_size // patch * patch
            raise ConfigError(
                f"pretrain.img_size={self.img_size} is not divisible by the patch size {patch} "
                f"of {self.model}: use {max(lo, patch)} or {lo + patch}"
            )
        try:
            WindowSpec.parse(self.window, clahe=self.clahe)
        except ConfigError as exc:
            raise ConfigError(f"pretrain.window='{self.window}': {exc}") from None
        if self.epochs < 1:
            raise ConfigError(f"pretrain.epochs={self.epochs}: use 1 or more")
        if self.batch_size < 1:
            raise ConfigError(f"pretrain.batch_size={self.batch_size}: use 1 or more")
        for name in ("base_lr",):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"pretrain.{name}={v}: use a positive number")
        for name in ("weight_decay", "warmup_epochs", "min_lr", "clip_grad"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"pretrain.{name}={v}: use 0 or more")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"pretrain.betas={self.betas}: give two numbers in [0, 1)")
        from vitdesk.engine.formula import KINDS
        from vitdesk.engine.mae import n_visible

        if self.formula not in ("", *KINDS):
            raise ConfigError(f"pretrain.formula='{self.formula}': choose one of "
                              f"{', '.join(KINDS)} (or leave it empty for MAE on --data)")
        if self.formula_classes < 2 or self.formula_per_class < 1:
            raise ConfigError("pretrain.formula_classes must be 2 or more and "
                              "formula_per_class 1 or more")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"pretrain.mask_ratio={self.mask_ratio}: use a value between 0 "
                              "and 1 (0.75 is the usual choice)")
        if patch:
            n_visible((self.img_size // patch) ** 2, self.mask_ratio)
        if self.decoder_depth < 1 or self.decoder_heads < 1 or self.decoder_dim < 4:
            raise ConfigError("pretrain.decoder_depth and decoder_heads must be 1 or more and "
                              "decoder_dim 4 or more")
        if self.decoder_dim % 4 or self.decoder_dim % self.decoder_heads:
            raise ConfigError(
                f"pretrain.decoder_dim={self.decoder_dim}: use a multiple of 4 and of "
                f"decoder_heads={self.decoder_heads}"
            )
        for name, allowed in (("device", ("auto", "cpu", "cuda")), ("amp", AMP_MODES),
                              ("attention", ("auto", "sdpa", "eager"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"pretrain.{name}='{getattr(self, name)}': choose one of "
                                  f"{', '.join(allowed)}")
        if self.workers < 0 or self.log_every < 1:
            raise ConfigError("pretrain.workers must be 0 or more and log_every 1 or more")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown pretrain option(s): {', '.join(unknown)}")
        kw = dict(d)
        if "betas" in kw:
            kw["betas"] = tuple(float(b) for b in kw["betas"])
        return cls(**kw)

    def recorded(self) -> dict[str, Any]:
        """The settings written into checkpoints and the card: no data path, no out path
        (folder names may carry patient names)."""
        d = self.to_dict()
        for k in ("data", "out", "resume", "device", "workers", "log_every"):
            d.pop(k, None)
        return d


# ---- events -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainStarted:
    """Pretraining begins (or resumes at ``start_epoch``)."""

    epochs: int
    start_epoch: int
    n_images: int
    trainable_params: int
    lr: float
    mask_ratio: float
    formula: str = ""  # "" = MAE

    def describe(self) -> str:
        what = "resuming at" if self.start_epoch else "starting"
        kind = (f"formula pretraining ({self.formula})" if self.formula else "MAE pretraining")
        extra = "" if self.formula else f", mask ratio {self.mask_ratio:g}"
        return (f"{kind}: {what} epoch {self.start_epoch + 1}/{self.epochs}, "
                f"{self.n_images} images, {self.trainable_params:,} parameters, "
                f"lr {self.lr:.2e}{extra}")


@dataclass(frozen=True)
class PretrainEpochEnded:
    """An epoch of pretraining finished (``loss``: the mean reconstruction loss on hidden
    patches for MAE, the formula classification loss otherwise)."""

    epoch: int
    epochs: int
    global_step: int
    loss: float
    lr: float
    seconds: float

    def describe(self) -> str:
        return (f"pretrain epoch {self.epoch + 1}/{self.epochs}: loss "
                f"{self.loss:.4f}  lr {self.lr:.2e}  ({self.seconds:.1f} s)")


@dataclass(frozen=True)
class PretrainDone:
    """The encoder and its card were written."""

    out: str
    final_loss: float
    epochs: int
    seconds: float

    def describe(self) -> str:
        return (f"done: {self.epochs} epoch(s), final loss {self.final_loss:.4f}, "
                f"{self.seconds:.0f} s -> {self.out} (use --pretrained {self.out})")
