"""Shared fixtures: a tiny timm ViT trained on images whose class is in one quadrant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SIZE = 32


def tiny_vit(num_classes: int = 2, **kw) -> VisionTransformer:
    return VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                             num_classes=num_classes, **kw)


def quadrant_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] images: noise everywhere, top-left 16x16 quadrant bright (class 1) or dark (0)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, SIZE, SIZE, generator=g)
    x[:, :, :16, :16] = torch.where(y.view(-1, 1, 1, 1) == 1, 0.9, 0.1)
    x[:, :, :16, :16] += 0.05 * torch.randn(n, 1, 16, 16, generator=g)
    return x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous(), y


def normalise(x01: torch.Tensor) -> torch.Tensor:
    return (x01 - 0.5) / 0.5


def _train_on_quadrants(model: torch.nn.Module, steps: int) -> torch.nn.Module:
    """AdamW on fresh quadrant batches, one thread; the model comes back in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core box
    try:
        for step in range(steps):
            x, y = quadrant_images(32, seed=step)
            loss = torch.nn.functional.cross_entropy(model(normalise(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="session")
def trained_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return _train_on_quadrants(tiny_vit(), 50)


@pytest.fixture(scope="session")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = quadrant_images(64, seed=1000)
    return normalise(x), y


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def trained_cnn() -> torch.nn.Module:
    """``cnn_test_tiny`` (a one-block-per-stage timm ResNet) trained on the quadrant task."""
    from vitdesk.engine.models import create_model

    torch.manual_seed(0)
    return _train_on_quadrants(create_model("cnn_test_tiny", 2, SIZE), 40)
