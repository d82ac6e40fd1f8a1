"""One rule for where a loop runs and in which precision, and what it ran with.

Fine-tuning (``engine.trainer``/``engine.run``) and pretraining (``engine.pretrain``)
both call these, so ``--amp fp16`` or ``--device auto`` means the same in both.
"""

from __future__ import annotations

import os
import platform

import torch

from vitdesk.errors import ConfigError


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> a device; under torchrun each rank takes its
    ``LOCAL_RANK`` GPU. ``cuda`` without a GPU is a one-line ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is available: use --device cpu or auto")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        return torch.device("cuda", local % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``mode`` (auto | off | fp16 | bf16) on ``device``; None: fp32.

    auto: bf16 on a GPU that has it, else fp16 (with loss scaling, see
    :func:`grad_scaler`); fp32 on the CPU, where bf16 autocast is slower on most CPUs.
    """
    if mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on a GPU (fp16 gradients underflow without it); a
    pass-through scaler otherwise."""
    return torch.amp.GradScaler(
        "cuda", enabled=dtype == torch.float16 and device.type == "cuda")


def amp_name(dtype: torch.dtype | None) -> str:
    """How run cards and env.json name the precision: off | fp16 | bf16."""
    return {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def software_versions() -> dict[str, str]:
    """The versions a result depends on, as cards and env.json record them."""
    import numpy as np
    import timm

    import vitdesk

    return {"vitdesk": vitdesk.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}
