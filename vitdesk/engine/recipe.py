"""Staged fine-tuning pieces: which parameters train, the optimizer and the schedule.

All built from timm: ``freeze``/``unfreeze`` for stages, ``create_optimizer_v2`` with
``layer_decay`` (``param_groups_layer_decay``; no weight decay on 1-D parameters and
``model.no_weight_decay()``), ``CosineLRScheduler`` stepped per optimizer update
(``step_update``) so each group's ``lr_scale`` is honoured.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vitdesk.config import OptimConfig, StageConfig
from vitdesk.errors import ConfigError


def _module_name(model: nn.Module, target: nn.Module) -> str | None:
    for name, mod in model.named_modules():
        if mod is target:
            return name
    return None


def _head_names(model: nn.Module) -> list[str]:
    """Module names of the classifier head(s): a distilled ViT has two (head, head_dist)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    heads = head if isinstance(head, tuple | list) else (head,)
    names = [_module_name(model, h) for h in heads if isinstance(h, nn.Module)]
    return [n for n in names if n is not None]


def _top_cnn_modules(model: nn.Module, n: int, heads: list[str]) -> list[str]:
    """Modules of the top ``n`` block groups of a timm CNN, by its ``group_matcher``."""
    from timm.models._manipulate import group_with_matcher

    if not hasattr(model, "group_matcher"):
        raise ConfigError("unfreeze=top:N needs a ViT with blocks or a timm model with "
                          "group_matcher: use unfreeze=all")
    groups = group_with_matcher(model.named_parameters(), model.group_matcher(coarse=False))
    in_head = tuple(f"{h}." for h in heads)
    # parameter name -> owning module name; the head (matched last) is trained anyway
    body = [[name.rsplit(".", 1)[0] for name in names if not name.startswith(in_head)]
            for _, names in sorted(groups.items())]
    body = [g for g in body if g]
    chosen: list[str] = []
    for g in body[max(0, len(body) - n):]:
        chosen += [m for m in dict.fromkeys(g) if m not in chosen]
    return chosen


def trainable_modules(model: nn.Module, stage: StageConfig) -> list[str]:
    """Names of the submodules a stage trains ([] = the whole model)."""
    if stage.unfreeze == "all":
        return []
    heads = _head_names(model)
    if not heads:
        raise ConfigError(f"stage '{stage.name}': the model has no classifier head to train")
    names = list(heads)
    n = stage.top_blocks()
    if n is not None:
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            return names + _top_cnn_modules(model, n, heads)
        depth = len(blocks)
        names += [f"blocks.{i}" for i in range(max(0, depth - n), depth)]
        for extra in ("norm", "fc_norm", "head_drop"):
            mod = getattr(model, extra, None)
            if isinstance(mod, nn.Module) and any(True for _ in mod.parameters()):
                names.append(extra)
    return names


def apply_stage(model: nn.Module, stage: StageConfig) -> list[str]:
    """Set ``requires_grad`` for ``stage`` (timm freeze/unfreeze); returns trained modules."""
    from timm.utils.model import freeze, unfreeze

    names = trainable_modules(model, stage)
    # BatchNorm layers stay BatchNorm2d (no FrozenBatchNorm2d swap): the checkpoint keys,
    # EMA copy and load_run's fresh model must keep the same structure in every stage
    if not names:
        unfreeze(model, include_bn_running_stats=False)
        return names
    freeze(model, include_bn_running_stats=False)
    unfreeze(model, names, include_bn_running_stats=False)
    return names


def build_optimizer(
    model: nn.Module, stage: StageConfig, optim: OptimConfig
) -> torch.optim.Optimizer:
    """AdamW (by default) over the trainable parameters, with layer-wise LR decay if set."""
    from timm.optim import create_optimizer_v2

    kwargs = {}
    if optim.opt.lower() in ("adamw", "adam", "lamb"):
        kwargs["betas"] = tuple(optim.betas)
    layer_decay = stage.layer_decay if stage.layer_decay < 1.0 else None
    opt = create_optimizer_v2(
        model, opt=optim.opt.lower(), lr=stage.lr, weight_decay=optim.weight_decay,
        layer_decay=layer_decay, **kwargs,
    )
    # Drop frozen parameters from every group: they get no update and no weight decay.
    for group in opt.param_groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    opt.param_groups = [g for g in opt.param_groups if g["params"]]
    if not opt.param_groups:
        raise ConfigError(f"stage '{stage.name}' trains no parameters: check its unfreeze")
    return opt


def warmup_steps(total_updates: int, steps_per_epoch: int, optim: OptimConfig) -> int:
    if optim.warmup_epochs > 0:
        w = int(round(optim.warmup_epochs * steps_per_epoch))
    else:
        w = int(round(optim.warmup_fraction * total_updates))
    return max(0, min(w, total_updates - 1))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    stage: StageConfig,
    steps_per_epoch: int,
    optim: OptimConfig,
):
    """Cosine decay to ``min_lr`` over the stage's updates after a linear warmup."""
    from timm.scheduler import CosineLRScheduler

    total = max(1, stage.epochs * steps_per_epoch)
    warm = warmup_steps(total, steps_per_epoch, optim)
    min_lr = min(optim.min_lr, stage.lr * 0.01)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(2, total - warm),  # timm warns that 1 step anneals nothing
        lr_min=min_lr,
        warmup_t=warm,
        warmup_lr_init=stage.lr * 0.01 if warm else stage.lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def steps_per_epoch(n_batches: int, accumulation: int) -> int:
    return max(1, math.ceil(n_batches / max(1, accumulation)))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest group LR (the head's under layer decay)."""
    return float(max(g["lr"] for g in optimizer.param_groups))
