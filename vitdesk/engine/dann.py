"""Domain-adversarial adaptation (DANN, Ganin et al. 2016) as a training hook.

A small MLP tells source slices (the labelled training batch) from target slices
(``adapt.source``, unlabelled) on the model's pooled features. Between the features
and the MLP a gradient-reversal layer passes features forward unchanged and multiplies
the gradient by ``-lambda_p`` on the way back, so the backbone learns features the
domain classifier cannot separate while the label loss keeps them discriminative.
``lambda_p = 2 / (1 + exp(-10 p)) - 1`` rises from 0 to 1 over training progress ``p``
(the paper's schedule: the domain signal is noisy at the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from vitdesk.engine.trainer import StepContext, TrainHook


class GradReverse(torch.autograd.Function):
    """Identity forward; gradient times ``-lam`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = float(lam)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """``x`` with its gradient reversed and scaled by ``lam``."""
    return GradReverse.apply(x, lam)


def reversal_weight(progress: float) -> float:
    """Ganin et al.'s schedule ``2 / (1 + exp(-10 p)) - 1`` for ``p`` in [0, 1]."""
    p = min(1.0, max(0.0, float(progress)))
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features the classifier head reads (timm's ``forward_head(pre_logits=True)``)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class DomainClassifier(nn.Module):
    """Features -> one logit (target vs source): Linear, ReLU, dropout, Linear."""

    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()
        hidden = hidden or max(32, min(256, dim))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(-1)


class DANNHook(TrainHook):
    """The domain loss ``weight * BCE(domain(GRL(features)), source 0 / target 1)``.

    Each step draws as many target slices as the source batch has, by ``(seed, batch
    index)``. ``last`` keeps the latest domain accuracy and lambda for the history.
    """

    lr_scale = 1.0

    def __init__(self, target: Dataset, feature_dim: int, seed: int, weight: float = 1.0
                 ) -> None:
        if len(target) == 0:
            raise ValueError("no target slices")
        self.target, self.seed, self.weight = target, int(seed), float(weight)
        self.head = DomainClassifier(feature_dim)
        self.device = torch.device("cpu")
        self.last: dict[str, float] = {}

    def to(self, device: torch.device) -> DANNHook:
        self.device = device
        self.head.to(device)
        return self

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {"domain_head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["domain_head"])

    def target_batch(self, step: int, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 29 + int(step))
        idx = torch.randint(0, len(self.target), (n,), generator=g).tolist()
        return torch.stack([torch.as_tensor(self.target[i][0]) for i in idx])

    def loss(self, ctx: StepContext) -> torch.Tensor:
        self.head.train(ctx.model.training)
        xs = ctx.x
        xt = self.target_batch(ctx.step, int(xs.shape[0])).to(xs.device, xs.dtype)
        lam = reversal_weight(ctx.progress)
        f = pooled_features(ctx.model, torch.cat([xs, xt]))
        logit = self.head(grad_reverse(f.float(), lam))
        dom = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(logit.device)
        loss = F.binary_cross_entropy_with_logits(logit, dom)
        with torch.no_grad():
            self.last = {"lambda": lam, "domain_acc": float(((logit > 0).float() == dom)
                                                            .float().mean())}
        return self.weight * loss


def feature_dim(model: nn.Module) -> int:
    """Width of :func:`pooled_features` (timm's ``num_features``, else measured)."""
    dim = getattr(model, "num_features", None)
    return int(dim) if dim else 0


def target_records(records: list, splits: dict | None) -> tuple[list, int]:
    """The target slices adaptation may train on, and how many were dropped.

    A patient in the run's validation or test split is dropped (even unlabelled, the
    model must never see a patient it is scored on); so when the target is the run's
    own data only its training patients remain.
    """
    held_out = {r.patient for name, recs in (splits or {}).items() if name != "train"
                for r in recs}
    keep = [r for r in records if r.patient not in held_out]
    return keep, len(records) - len(keep)


@dataclass
class AdaptSetup:
    """The DANN hook, the labelled target slices (for the target accuracy) and a record."""

    hook: DANNHook
    labelled: Dataset | None
    info: dict


def prepare_adapt(cfg: Any, data: Any, model: nn.Module, mean: tuple, std: tuple,
                  sample: torch.Tensor, *, cancel: Any = None, listeners: Any = ()
                  ) -> AdaptSetup:
    """Read ``cfg.adapt.source`` (labels ignored for training), drop held-out patients,
    and build the hook; ``data.target`` (a prebuilt Dataset) is used as is."""
    import dataclasses

    from vitdesk.errors import DataError
    from vitdesk.imaging.windowing import WindowSpec
    from vitdesk.jobs import NEVER, Notice, emit

    with torch.no_grad():
        was = model.training
        model.eval()
        dim = int(pooled_features(model, sample[:1]).shape[-1])
        model.train(was)
    info: dict = {"weight": float(cfg.adapt.weight)}
    if getattr(data, "target", None) is not None:
        target, labelled = data.target, None
    else:
        from vitdesk.data.dataset import SliceDataset
        from vitdesk.data.sources import load_records

        try:
            records = load_records(cfg.adapt.source, cancel or NEVER, list(listeners),
                                   require_labels=False, min_classes=0,
                                   patient_id=cfg.data.patient_id)
        except DataError as exc:
            raise DataError(f"adapt.source: {exc}") from None
        keep, dropped = target_records(records, data.splits)
        if not keep:
            raise DataError(f"adapt.source {cfg.adapt.source}: every slice belongs to a "
                            "validation/test patient of this run: point it at other images")
        if dropped:
            emit(list(listeners), Notice("train", (
                f"adaptation: {len(keep)} of {len(records)} target slices used ({dropped} "
                "belong to validation/test patients)")))
        window = WindowSpec.parse(cfg.data.window, clahe=cfg.data.clahe)
        target = SliceDataset([dataclasses.replace(r, label=None) for r in keep],
                              list(data.classes), window, cfg.model.img_size, mean, std)
        try:  # the target's labels, when it has any, for the target accuracy only
            known = [r for r in load_records(cfg.adapt.source, cancel or NEVER, None,
                                             min_classes=1, patient_id=cfg.data.patient_id)
                     if r.label in set(data.classes)]
        except DataError:
            known = []
        known = target_records(known, data.splits)[0]
        labelled = (SliceDataset(known, list(data.classes), window, cfg.model.img_size,
                                 mean, std) if known else None)
        info["target_patients"] = len({r.patient for r in keep})
    info["target_slices"] = len(target)
    hook = DANNHook(target, dim, cfg.seed, cfg.adapt.weight)
    return AdaptSetup(hook, labelled, info)


@torch.no_grad()
def accuracy(model: nn.Module, ds: Dataset, device: torch.device, batch: int = 64) -> float:
    """Top-1 accuracy of ``model`` on the labelled items of ``ds`` (nan when none)."""
    from torch.utils.data import DataLoader

    model.eval()
    right = n = 0
    for x, y in DataLoader(ds, batch_size=batch, shuffle=False):
        y = torch.as_tensor(y)
        keep = y >= 0
        if not bool(keep.any()):
            continue
        out = model(x.to(device))
        out = out[0] if isinstance(out, tuple) else out
        right += int((out.argmax(-1).cpu()[keep] == y[keep]).sum())
        n += int(keep.sum())
    return right / n if n else math.nan
