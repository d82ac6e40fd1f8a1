"""Test-time augmentation: several views of each image, one batched forward.

Views are made on the preprocessed tensor batch with torch ops (flip, zoom, crops
resized back to the model size), so TTA needs no second preprocessing pass. All
views of a batch are stacked and run through the model together (split into
chunks of at most ``max_batch`` images), which is much faster than one forward per
view. Softmax probabilities are averaged (arithmetic or geometric mean); the spread
across views is the per-case uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitdesk.errors import ConfigError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

CROP_POSITIONS = ("center", "tl", "tr", "bl", "br")


@dataclass(frozen=True)
class View:
    """One augmentation: optional horizontal flip, then zoom ``scale`` or a crop."""

    flip: bool = False
    scale: float = 1.0
    crop: str | None = None  # one of CROP_POSITIONS, at TTAConfig.crop_fraction

    def label(self) -> str:
        parts = ["flip"] if self.flip else []
        if self.crop:
            parts.append(f"crop-{self.crop}")
        elif self.scale != 1.0:
            parts.append(f"zoom{self.scale:g}")
        return "+".join(parts) or "identity"


@dataclass(frozen=True)
class TTAConfig:
    """Which views to use and how to combine them.

    Views are every scale (1.0 = the plain image) and every crop position, each
    also horizontally flipped when ``hflip``. A scale above 1 zooms in (centre crop
    of 1/scale, resized back); below 1 zooms out (resize down, pad with the image's
    minimum, i.e. the background). Crops take ``crop_fraction`` of each side.
    """

    hflip: bool = True
    scales: tuple[float, ...] = (1.0, 0.9, 1.1)
    crops: tuple[str, ...] = ()
    crop_fraction: float = 0.875
    combine: str = "mean"  # "mean" or "geometric"
    max_batch: int = 32  # images per forward; larger batches were slower per image on CPU

    def validate(self) -> None:
        if self.combine not in ("mean", "geometric"):
            raise ConfigError(f"tta.combine: {self.combine!r} is not 'mean' or 'geometric'")
        bad = [c for c in self.crops if c not in CROP_POSITIONS]
        if bad:
            raise ConfigError(f"tta.crops: unknown position(s) {bad}; use {CROP_POSITIONS}")
        if not 0.1 <= self.crop_fraction <= 1.0:
            raise ConfigError(f"tta.crop_fraction must be in [0.1, 1], got {self.crop_fraction}")
        if any(s <= 0 for s in self.scales):
            raise ConfigError(f"tta.scales must be positive, got {self.scales}")
        if self.max_batch < 1:
            raise ConfigError(f"tta.max_batch must be >= 1, got {self.max_batch}")
        if not self.views():
            raise ConfigError("tta: no views; give at least one scale or crop")

    def views(self) -> list[View]:
        base = [View(scale=float(s)) for s in self.scales]
        base += [View(crop=c) for c in self.crops]
        flips = [False, True] if self.hflip else [False]
        return [View(flip=f, scale=v.scale, crop=v.crop) for f in flips for v in base]


def apply_view(x: torch.Tensor, view: View, crop_fraction: float = 0.875) -> torch.Tensor:
    """Return view ``view`` of a (B, C, H, W) batch, same shape as ``x``."""
    h, w = x.shape[-2:]
    out = x.flip(-1) if view.flip else x
    if view.crop is not None:
        ch, cw = max(1, round(h * crop_fraction)), max(1, round(w * crop_fraction))
        top = {"center": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[view.crop]
        left = {"center": (w - cw) // 2, "tl": 0, "tr": w - cw, "bl": 0, "br": w - cw}[view.crop]
        out = out[..., top : top + ch, left : left + cw]
        return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    if view.scale > 1.0:
        ch, cw = max(1, round(h / view.scale)), max(1, round(w / view.scale))
        top, left = (h - ch) // 2, (w - cw) // 2
        out = out[..., top : top + ch, left : left + cw]
        return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    if view.scale < 1.0:
        sh, sw = max(1, round(h * view.scale)), max(1, round(w * view.scale))
        small = F.interpolate(out, size=(sh, sw), mode="bilinear", align_corners=False)
        fill = out.amin(dim=(-2, -1), keepdim=True)  # per image and channel: background
        canvas = fill.expand(*out.shape[:-2], h, w).clone()
        top, left = (h - sh) // 2, (w - sw) // 2
        canvas[..., top : top + sh, left : left + sw] = small
        return canvas
    return out


def make_views(x: torch.Tensor, config: TTAConfig) -> torch.Tensor:
    """All views of a batch stacked view-major: (V * B, C, H, W)."""
    return torch.cat([apply_view(x, v, config.crop_fraction) for v in config.views()], dim=0)


def combine_probs(view_probs: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Combine (V, B, K) probabilities into (B, K): arithmetic or geometric mean."""
    if how == "mean":
        return view_probs.mean(dim=0)
    log = torch.log(view_probs.clamp_min(1e-12)).mean(dim=0)
    return torch.softmax(log, dim=-1)  # renormalised geometric mean


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a (N, K) probability array."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return (-(p * np.log(p)).sum(axis=-1)).astype(np.float32)


@dataclass(frozen=True)
class TTAResult:
    """Probabilities of N cases with K classes under V views.

    ``probs`` (N, K) combined; ``plain`` (N, K) the identity view alone (or the
    first view when there is no identity view); ``view_probs`` (V, N, K);
    ``std`` (N, K) standard deviation across views; ``uncertainty`` (N,) the std
    of the combined predicted class; ``entropy`` (N,) predictive entropy of
    ``probs``; ``labels`` (N,) when batches carried labels, else None.
    """

    probs: np.ndarray
    plain: np.ndarray
    view_probs: np.ndarray
    std: np.ndarray
    uncertainty: np.ndarray
    entropy: np.ndarray
    views: tuple[str, ...]
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def _split_batch(batch: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 else None
        return batch[0], (torch.as_tensor(y) if y is not None else None)
    raise TypeError("batches must be tensors (B, C, H, W) or (x, y) pairs")


def _forward_chunks(model: nn.Module, x: torch.Tensor, max_batch: int) -> torch.Tensor:
    outs = [model(x[i : i + max_batch]) for i in range(0, x.shape[0], max_batch)]
    return torch.softmax(torch.cat(outs, dim=0).float(), dim=-1)


def _calibrated(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    from vitdesk.analysis.calibration import apply_temperature

    if temperature == 1.0:
        return probs
    return torch.from_numpy(apply_temperature(probs.cpu().numpy(), temperature))


@torch.no_grad()
def tta_predict(
    model: nn.Module,
    batches: Iterable[object],
    config: TTAConfig = TTAConfig(),
    *,
    device: str | torch.device = "cpu",
    total: int | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    temperature: float = 1.0,
) -> TTAResult:
    """Run batched TTA over ``batches`` (tensors or (x, y) pairs); model in eval mode.

    ``total`` (number of batches) is only used for progress events. ``temperature``
    (the run's calibration) rescales each view's probabilities before they are combined.
    """
    config.validate()
    views = config.views()
    model.eval()
    per_batch: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for done, batch in enumerate(batches, start=1):
        cancel.check()
        x, y = _split_batch(batch)
        x = x.to(device)
        b = x.shape[0]
        probs = _calibrated(_forward_chunks(model, make_views(x, config), config.max_batch),
                            temperature)
        per_batch.append(probs.reshape(len(views), b, -1).cpu())
        if y is not None:
            labels.append(y.reshape(-1).cpu())
        emit(listener, Progress("tta", done, total, f"{len(views)} views x {b} images"))
    return _result(per_batch, labels, views, config)


@torch.no_grad()
def tta_predict_loop(
    model: nn.Module,
    batches: Iterable[object],
    config: TTAConfig = TTAConfig(),
    *,
    device: str | torch.device = "cpu",
) -> TTAResult:
    """Reference implementation: one forward per view (for tests and benchmarks)."""
    config.validate()
    views = config.views()
    model.eval()
    per_batch, labels = [], []
    for batch in batches:
        x, y = _split_batch(batch)
        x = x.to(device)
        probs = [torch.softmax(model(apply_view(x, v, config.crop_fraction)).float(), -1)
                 for v in views]
        per_batch.append(torch.stack(probs).cpu())
        if y is not None:
            labels.append(y.reshape(-1).cpu())
    return _result(per_batch, labels, views, config)


def _result(
    per_batch: list[torch.Tensor], labels: list[torch.Tensor], views: list[View], config: TTAConfig
) -> TTAResult:
    if not per_batch:
        raise ConfigError("tta: no images were given")
    view_probs = torch.cat(per_batch, dim=1)  # (V, N, K)
    probs = combine_probs(view_probs, config.combine)
    ident = next((i for i, v in enumerate(views) if v == View()), 0)
    std = view_probs.std(dim=0, unbiased=False) if len(views) > 1 else torch.zeros_like(probs)
    pred = probs.argmax(dim=-1, keepdim=True)
    probs_np = probs.numpy().astype(np.float32)
    return TTAResult(
        probs=probs_np,
        plain=view_probs[ident].numpy().astype(np.float32),
        view_probs=view_probs.numpy().astype(np.float32),
        std=std.numpy().astype(np.float32),
        uncertainty=std.gather(-1, pred).squeeze(-1).numpy().astype(np.float32),
        entropy=predictive_entropy(probs_np),
        views=tuple(v.label() for v in views),
        labels=torch.cat(labels).numpy() if labels else None,
        meta={"combine": config.combine, "n_views": len(views)},
    )


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    batches: Iterable[object],
    *,
    device: str | torch.device = "cpu",
    total: int | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Plain softmax probabilities (N, K) and labels (N,) or None, no augmentation;
    rescaled by ``temperature`` (the run's calibration)."""
    model.eval()
    probs, labels = [], []
    for i, batch in enumerate(batches, start=1):
        cancel.check()
        x, y = _split_batch(batch)
        probs.append(_calibrated(torch.softmax(model(x.to(device)).float(), dim=-1).cpu(),
                                 temperature))
        if y is not None:
            labels.append(y.reshape(-1).cpu())
        emit(listener, Progress("predict", i, total))
    if not probs:
        raise ConfigError("predict: no images were given")
    out = torch.cat(probs).numpy().astype(np.float32)
    return out, (torch.cat(labels).numpy() if labels else None)


def tta_summary(result: TTAResult, labels: Sequence[int] | np.ndarray | None = None) -> dict:
    """Accuracy with and without TTA, mean uncertainty, and how many predictions changed."""
    y = result.labels if labels is None else np.asarray(labels)
    plain_pred = result.plain.argmax(axis=1)
    tta_pred = result.probs.argmax(axis=1)
    out = {
        "n": int(len(tta_pred)),
        "n_views": len(result.views),
        "views": list(result.views),
        "changed": int((plain_pred != tta_pred).sum()),
        "mean_uncertainty": float(result.uncertainty.mean()),
        "mean_entropy": float(result.entropy.mean()),
    }
    if y is not None:
        out["accuracy_plain"] = float((plain_pred == y).mean())
        out["accuracy_tta"] = float((tta_pred == y).mean())
    return out
