"""Model factory (timm ViT/DeiT plus tiny test configurations) and attention backends."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitdesk.errors import ConfigError, ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Tiny configurations for tests and quick demos; built with timm's VisionTransformer so
# every timm contract (group_matcher, no_weight_decay, set_grad_checkpointing) holds.
TEST_MODELS: dict[str, dict[str, Any]] = {
    "vit_test_tiny": dict(patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0),
}


def _is_supported_family(name: str) -> bool:
    return name.startswith(("vit_", "deit_", "deit3_", "eva", "beit")) or name in TEST_MODELS


def available_models() -> list[str]:
    """Names accepted by :func:`create_model` (timm ViT/DeiT families + test configs)."""
    import timm

    names = timm.list_models(["vit_*", "deit*"])
    return sorted(TEST_MODELS) + names


def create_model(
    name: str,
    num_classes: int,
    img_size: int,
    drop_path_rate: float = 0.0,
    in_chans: int = 3,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a ViT by timm name (or a registered test name) with a fresh head.

    Args:
        name: timm model name, e.g. ``vit_tiny_patch16_224``, or ``vit_test_tiny``.
        num_classes: size of the classifier head.
        img_size: input side in pixels (must be divisible by the patch size).
        drop_path_rate: stochastic depth rate.
        pretrained: load timm's hub weights (offline cache only; see weights.py).

    Raises:
        ModelError: unknown name (with close matches) or a bad option.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if num_classes < 1:
        raise ModelError(f"num_classes={num_classes}: a classifier needs at least 1 class")
    if name in TEST_MODELS:
        spec = TEST_MODELS[name]
        _check_divisible(name, img_size, spec["patch_size"])
        model = VisionTransformer(
            img_size=img_size, num_classes=num_classes, in_chans=in_chans,
            drop_path_rate=drop_path_rate, **spec, **kwargs,
        )
        model.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "architecture": name}
        return model
    if not timm.is_model(name) or not _is_supported_family(name):
        close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `timm.list_models('vit_*')`"
        raise ModelError(f"unknown model '{name}' (ViT/DeiT families only): {hint}")
    try:
        model = timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, img_size=img_size,
            drop_path_rate=drop_path_rate, in_chans=in_chans, **kwargs,
        )
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelError(f"cannot build {name} at img_size={img_size}: {exc}") from None
    patch = patch_size(model)
    if patch:
        _check_divisible(name, img_size, patch)
    return model


def _check_divisible(name: str, img_size: int, patch: int) -> None:
    if img_size % patch:
        lo = img_size // patch * patch
        raise ConfigError(
            f"model.img_size={img_size} is not divisible by the patch size {patch} of {name}: "
            f"use {max(lo, patch)} or {lo + patch}"
        )


def patch_size(model: nn.Module) -> int | None:
    pe = getattr(model, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None:
        return None
    return int(ps[0] if isinstance(ps, tuple | list) else ps)


def norm_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean/std from the model's pretrained config (ImageNet otherwise)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    return mean, std


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- attention backend ------------------------------------------------------------------
def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if hasattr(m, "fused_attn")]


def set_attention_backend(model: nn.Module, backend: str) -> None:
    """Switch timm attention to ``sdpa`` (fused SDPA), ``eager`` or ``flash`` (flash-attn).

    timm's Attention calls ``F.scaled_dot_product_attention`` when ``fused_attn`` is
    True and the explicit softmax(QK^T)V otherwise.
    """
    if backend == "flash":
        _install_flash(model)
        return
    if backend not in ("sdpa", "eager"):
        raise ConfigError(f"model.attention='{backend}': use auto, sdpa, eager or flash")
    for m in _attention_modules(model):
        m.fused_attn = backend == "sdpa"


def _install_flash(model: nn.Module) -> None:
    try:
        from flash_attn import flash_attn_func  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            "model.attention='flash' needs the flash-attn package (CUDA only): "
            "pip install vitdesk[gpu], or use attention = 'auto'"
        ) from None

    def make_forward(attn: nn.Module) -> Callable[..., torch.Tensor]:
        def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
            b, n, c = x.shape
            qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim)
            q, k, v = qkv.unbind(2)
            q, k = attn.q_norm(q), attn.k_norm(k)
            dt = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
            p = attn.attn_drop.p if attn.training else 0.0
            out = flash_attn_func(q.to(dt), k.to(dt), v.to(dt), dropout_p=p).to(x.dtype)
            out = attn.norm(out.reshape(b, n, c)) if hasattr(attn, "norm") else out.reshape(b, n, c)
            return attn.proj_drop(attn.proj(out))

        return forward

    for m in _attention_modules(model):
        if hasattr(m, "qkv") and hasattr(m, "num_heads"):
            m.forward = make_forward(m)


_TIMING_CACHE: dict[tuple, dict[str, Any]] = {}


def choose_attention_backend(
    model: nn.Module,
    sample: torch.Tensor,
    requested: str = "auto",
    amp_dtype: torch.dtype | None = None,
    repeats: int = 2,
) -> dict[str, Any]:
    """Apply the attention backend; for ``auto`` time sdpa vs eager and keep the faster.

    Timing is a forward+backward on ``sample`` (the first batch shape), once per
    device/shape/model in this process. Returns ``{"backend", "sdpa_ms", "eager_ms"}``.
    """
    if requested != "auto":
        set_attention_backend(model, requested)
        return {"requested": requested, "backend": requested, "sdpa_ms": None, "eager_ms": None}
    key = (type(model).__name__, count_trainable(model), tuple(sample.shape),
           str(sample.device), str(amp_dtype))
    if key not in _TIMING_CACHE:
        timings = {}
        was_training = model.training
        model.train()
        for backend in ("eager", "sdpa"):
            set_attention_backend(model, backend)
            best = float("inf")
            for i in range(repeats + 1):
                _sync(sample.device)
                t0 = time.perf_counter()
                with torch.autocast(sample.device.type, dtype=amp_dtype,
                                    enabled=amp_dtype is not None):
                    out = model(sample)
                out.float().sum().backward()
                _sync(sample.device)
                if i:  # first run warms up kernels/allocator
                    best = min(best, time.perf_counter() - t0)
            timings[backend] = best * 1000.0
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        choice = "sdpa" if timings["sdpa"] <= timings["eager"] else "eager"
        _TIMING_CACHE[key] = {"requested": "auto", "backend": choice,
                              "sdpa_ms": round(timings["sdpa"], 3),
                              "eager_ms": round(timings["eager"], 3)}
    info = dict(_TIMING_CACHE[key])
    set_attention_backend(model, info["backend"])
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_norm_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of a model's pretrained config by name, without building it."""
    if name in TEST_MODELS:
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        from timm.models import get_pretrained_cfg

        pc = get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):
        pc = None
    if pc is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in pc.mean), tuple(float(v) for v in pc.std)
