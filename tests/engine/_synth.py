"""Synthetic data and configs for engine tests: a bright square ("lesion") vs none."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from vitdesk.config import RunConfig, StageConfig
from vitdesk.engine.run import TrainData

CLASSES = ["normal", "lesion"]


def squares(n: int, seed: int, size: int = 32) -> TensorDataset:
    """Noise images; class 1 carries a bright 10 px square at a random place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.3
    y = torch.arange(n) % 2
    y = y[torch.randperm(n, generator=g)]
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, size - 10, (2,), generator=g).tolist()
        x[i, :, r:r + 10, c:c + 10] += 1.5
    return TensorDataset(x, y)


def data(n_train: int = 64, n_val: int = 32, size: int = 32) -> TrainData:
    return TrainData(squares(n_train, 0, size), squares(n_val, 1, size), list(CLASSES))


def tiny_cfg(out, *, kind: str = "full", epochs: int = 2, lr: float = 1e-3,
             batch: int = 16, img_size: int = 32) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = "vit_test_tiny"
    cfg.model.img_size = img_size
    cfg.model.drop_path = 0.0
    cfg.model.attention = "eager"  # no timing pass: tests stay quick and deterministic
    cfg.weights.pretrained = "none"
    cfg.data.batch_size = batch
    cfg.data.label_smoothing = 0.0
    cfg.recipe.kind = kind
    cfg.recipe.stages = [StageConfig("full", epochs, lr, "all", 1.0)] if kind == "full" else []
    cfg.optim.warmup_fraction = 0.0
    cfg.out = str(out)
    return cfg
