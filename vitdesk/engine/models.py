"""Model factory (timm ViT/DeiT and CNNs plus tiny test configurations), attention backends.

CNNs (ResNet, ConvNeXt, EfficientNet, RegNet, MobileNet...) are built by timm too: they
serve as distillation teachers for small labelled sets, where a CNN trained from
scratch beats a ViT. A ``*_distilled`` ViT (timm ``VisionTransformerDistilled``) carries
the DeiT distillation token and a second head.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitdesk.engine.plan import (  # the names' one home
    CNN_PREFIXES,
    CONV_STEM_NAMES,
    is_cnn_name,
)
from vitdesk.errors import ConfigError, ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Tiny configurations for tests and quick demos; built with timm's VisionTransformer so
# every timm contract (group_matcher, no_weight_decay, set_grad_checkpointing) holds.
TEST_MODELS: dict[str, dict[str, Any]] = {
    "vit_test_tiny": dict(patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0),
    # the same encoder plus DeiT's distillation token and head (an MAE encoder of
    # vit_test_tiny loads into it)
    "vit_test_tiny_distilled": dict(patch_size=8, embed_dim=64, depth=2, num_heads=4,
                                    mlp_ratio=2.0, distilled=True),
    # vit_test_tiny with a convolutional stem in place of the patchify layer (the names
    # with one: plan.CONV_STEM_NAMES)
    "vit_test_tiny_convstem": dict(patch_size=8, embed_dim=64, depth=2, num_heads=4,
                                   mlp_ratio=2.0),
}


class ConvStem(nn.Module):
    """Stride-2 3x3 convolutions down to the patch grid, then a 1x1 projection: the
    "early convolutions" stem of Xiao et al. 2021, which trains ViTs faster and more
    stably than one large-stride patchify convolution, most of all on small data."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        steps = int(math.log2(patch_size))
        if 2 ** steps != patch_size or steps < 1:
            raise ModelError(f"a convolutional stem needs a power-of-two patch, got {patch_size}")
        layers: list[nn.Module] = []
        c_in, c = in_chans, max(8, embed_dim // 2 ** (steps - 1))
        for _ in range(steps):
            layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True)]
            c_in, c = c, min(embed_dim, c * 2)
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.body = nn.Sequential(*layers)
        self.in_channels = in_chans  # what a patchify Conv2d says (MAE reads it)
        self.out_channels = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def first_norm(self) -> nn.Module:
        """The first convolution's batch norm: low-level features at half resolution
        (the shift check reads their statistics)."""
        return self.body[1]


def conv_stem_embed(**kwargs: Any) -> nn.Module:
    """timm's PatchEmbed (grid, flatten, dynamic sizes) with a ConvStem as ``proj``."""
    from timm.layers import PatchEmbed

    embed = PatchEmbed(**kwargs)
    embed.proj = ConvStem(embed.proj.in_channels, embed.proj.out_channels, embed.patch_size[0])
    return embed


# A ResNet with one BasicBlock per stage and narrow widths: trains in seconds at 32 px.
CNN_TEST_MODELS: dict[str, dict[str, Any]] = {
    "cnn_test_tiny": dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16),
}
VIT_PREFIXES = ("vit_", "deit_", "deit3_", "eva", "beit")


def is_cnn(model: nn.Module) -> bool:
    """True for a model without ViT blocks/patch embedding (analysis checks ``blocks``)."""
    return not hasattr(model, "patch_embed")


def is_distilled(model: nn.Module) -> bool:
    """True for a DeiT-style model with a distillation token and head."""
    return hasattr(model, "dist_token") and hasattr(model, "set_distilled_training")


def _is_supported_family(name: str) -> bool:
    return (name.startswith(VIT_PREFIXES) or is_cnn_name(name) or name in TEST_MODELS)


def available_models() -> list[str]:
    """Names accepted by :func:`create_model` (timm ViT/DeiT/CNN families + test configs)."""
    import timm

    names = timm.list_models(["vit_*", "deit*", *(f"{p}*" for p in CNN_PREFIXES)])
    return sorted(TEST_MODELS) + sorted(CNN_TEST_MODELS) + sorted(set(names))


def create_model(
    name: str,
    num_classes: int,
    img_size: int,
    drop_path_rate: float = 0.0,
    in_chans: int = 3,
    pretrained: bool = False,
    pool: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a ViT or CNN by timm name (or a registered test name) with a fresh head.

    Args:
        name: timm model name, e.g. ``vit_tiny_patch16_224``, ``resnet18``,
            ``deit_tiny_distilled_patch16_224``, or a test name (``vit_test_tiny``,
            ``vit_test_tiny_distilled``, ``cnn_test_tiny``).
        num_classes: size of the classifier head.
        img_size: input side in pixels (ViTs: divisible by the patch size; CNNs take
            any size, so it is not passed to them).
        drop_path_rate: stochastic depth rate.
        pretrained: load timm's hub weights (offline cache only; see weights.py).
        pool: a ViT's classifier input, ``token`` or ``avg`` (timm ``global_pool``);
            None or ``auto`` keeps the model's default. CNNs and distilled ViTs ignore it.

    Raises:
        ModelError: unknown name (with close matches) or a bad option.
    """
    import timm
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    if num_classes < 1:
        raise ModelError(f"num_classes={num_classes}: a classifier needs at least 1 class")
    if pool in ("token", "avg") and not is_cnn_name(name) and "distilled" not in name:
        kwargs["global_pool"] = pool
    patch_override = kwargs.pop("patch_size", None)  # a ViT's patch side (model.patch_size)
    if patch_override and not is_cnn_name(name):
        kwargs["patch_size"] = int(patch_override)
    if name in TEST_MODELS:
        spec = dict(TEST_MODELS[name])
        spec["patch_size"] = kwargs.pop("patch_size", spec["patch_size"])
        cls = VisionTransformerDistilled if spec.pop("distilled", False) else VisionTransformer
        if name in CONV_STEM_NAMES:
            spec["embed_layer"] = conv_stem_embed
        _check_divisible(name, img_size, spec["patch_size"])
        model = cls(
            img_size=img_size, num_classes=num_classes, in_chans=in_chans,
            drop_path_rate=drop_path_rate, **spec, **kwargs,
        )
        model.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "architecture": name}
        return model
    if name in CNN_TEST_MODELS:
        from timm.models.resnet import BasicBlock, ResNet

        model = ResNet(BasicBlock, num_classes=num_classes, in_chans=in_chans,
                       drop_path_rate=drop_path_rate, **CNN_TEST_MODELS[name], **kwargs)
        model.pretrained_cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "architecture": name}
        return model
    if not timm.is_model(name) or not _is_supported_family(name):
        close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `timm.list_models('vit_*')`"
        raise ModelError(f"unknown model '{name}' (ViT/DeiT and CNN families only): {hint}")
    if is_cnn_name(name):
        return _create_cnn(name, num_classes, drop_path_rate, in_chans, pretrained, **kwargs)
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


def _create_cnn(name: str, num_classes: int, drop_path_rate: float, in_chans: int,
                pretrained: bool, **kwargs: Any) -> nn.Module:
    """A timm CNN; ``drop_path_rate`` only where the family supports stochastic depth."""
    import timm

    try:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                     in_chans=in_chans, drop_path_rate=drop_path_rate,
                                     **kwargs)
        except TypeError:
            if not drop_path_rate:
                raise
            # e.g. some MobileNets/DenseNets have no stochastic depth: build without it
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                     in_chans=in_chans, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelError(f"cannot build {name}: {exc}") from None


def adapt_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Make ViT weights fit a distilled model: add the distillation token's position.

    An MAE encoder or a plain ViT has one prefix token (cls) in ``pos_embed``; the
    distilled model has two (cls, dist). The dist position starts as a copy of the cls
    position (both tokens read the whole image); ``dist_token`` and ``head_dist``
    stay freshly initialised and are reported missing. Heads of another size are
    dropped so they are reset. Other models get ``sd`` unchanged.
    """
    if not is_distilled(model):
        return sd
    sd = dict(sd)
    own = model.state_dict()
    pe = sd.get("pos_embed")
    if (pe is not None and "dist_token" not in sd and pe.ndim == 3 and pe.shape[1] > 1
            and not getattr(model, "no_embed_class", False)):
        # a non-distilled source has one prefix position; weights.py resamples the grid
        sd["pos_embed"] = torch.cat([pe[:, :1], pe[:, :1], pe[:, 1:]], dim=1)
    for k in ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias"):
        if k in sd and k in own and sd[k].shape != own[k].shape:
            del sd[k]
    return sd


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


EAGER_MARGIN = 0.1  # eager must be this much faster than sdpa to be chosen


def pick_backend(sdpa_ms: float, eager_ms: float, margin: float = EAGER_MARGIN) -> str:
    """``sdpa`` unless eager was faster by more than ``margin``.

    sdpa is the default everywhere else; when the two are close, machine load decided
    the choice and the same seed gave different numbers (measured: 26.3 vs 27.9 ms
    flipped between runs of the demo). A margin makes that flip rare.
    """
    return "eager" if eager_ms < (1.0 - margin) * sdpa_ms else "sdpa"


def choose_attention_backend(
    model: nn.Module,
    sample: torch.Tensor,
    requested: str = "auto",
    amp_dtype: torch.dtype | None = None,
    repeats: int = 2,
) -> dict[str, Any]:
    """Apply the attention backend; for ``auto`` time sdpa vs eager and keep sdpa unless
    eager is clearly faster (:func:`pick_backend`).

    Timing is a forward+backward on ``sample`` (the first batch shape), once per
    device/shape/model in this process. Returns ``{"backend", "sdpa_ms", "eager_ms"}``.
    """
    if not _attention_modules(model):  # a CNN: nothing to choose
        return {"requested": requested, "backend": "n/a", "sdpa_ms": None, "eager_ms": None}
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
                if isinstance(out, tuple):  # a distilled model in training: (cls, dist)
                    out = sum(o.float().sum() for o in out)
                out.float().sum().backward()
                _sync(sample.device)
                if i:  # first run warms up kernels/allocator
                    best = min(best, time.perf_counter() - t0)
            timings[backend] = best * 1000.0
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        choice = pick_backend(timings["sdpa"], timings["eager"])
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
    if name in TEST_MODELS or name in CNN_TEST_MODELS:
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        from timm.models import get_pretrained_cfg

        pc = get_pretrained_cfg(name)
    except (RuntimeError, ValueError, KeyError):
        pc = None
    if pc is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in pc.mean), tuple(float(v) for v in pc.std)
