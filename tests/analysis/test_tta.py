"""Test-time augmentation: views, batching, flip invariance, cancel and progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.analysis.conftest import SIZE, tiny_vit
from vitdesk.analysis.tta import (
    TTAConfig,
    View,
    apply_view,
    predict_proba,
    tta_predict,
    tta_predict_loop,
    tta_summary,
)
from vitdesk.errors import Cancelled, ConfigError
from vitdesk.jobs import CancelToken, Progress


class FlipInvariant(nn.Module):
    """Sees the average of the image and its mirror: invariant to horizontal flips."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(0.5 * (x + x.flip(-1)))


def test_flip_tta_of_flip_invariant_model_equals_plain_prediction():
    torch.manual_seed(0)
    model = FlipInvariant(tiny_vit(num_classes=3)).eval()
    x = torch.randn(5, 3, SIZE, SIZE)
    plain, _ = predict_proba(model, [x])
    res = tta_predict(model, [x], TTAConfig(hflip=True, scales=(1.0,)))
    assert res.views == ("identity", "flip")
    np.testing.assert_allclose(res.probs, plain, atol=1e-6)
    assert res.uncertainty.max() < 1e-6
    np.testing.assert_allclose(res.probs.sum(1), 1.0, atol=1e-6)


def test_batched_tta_equals_per_view_loop_with_chunking():
    torch.manual_seed(1)
    model = tiny_vit().eval()
    x = torch.randn(6, 3, SIZE, SIZE)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    cfg = TTAConfig(hflip=True, scales=(1.0, 0.9, 1.1), crops=("center", "tl", "br"), max_batch=7)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    res = tta_predict(model, batches, cfg)
    ref = tta_predict_loop(model, batches, cfg)
    assert res.view_probs.shape == (12, 6, 2)
    np.testing.assert_allclose(res.view_probs, ref.view_probs, atol=1e-5)
    np.testing.assert_allclose(res.probs, res.view_probs.mean(0), atol=1e-6)
    np.testing.assert_allclose(res.std, res.view_probs.std(0), atol=1e-6)
    assert (res.labels == y.numpy()).all()
    plain, _ = predict_proba(model, [x])
    np.testing.assert_allclose(res.plain, plain, atol=1e-5)
    summary = tta_summary(res)
    assert summary["n_views"] == 12 and 0 <= summary["accuracy_tta"] <= 1


def test_geometric_mean_and_entropy():
    torch.manual_seed(2)
    model = tiny_vit(num_classes=3).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    res = tta_predict(model, [x], TTAConfig(scales=(1.0, 1.2), combine="geometric"))
    g = np.exp(np.log(res.view_probs).mean(0))
    np.testing.assert_allclose(res.probs, g / g.sum(1, keepdims=True), atol=1e-5)
    p = res.probs
    np.testing.assert_allclose(res.entropy, -(p * np.log(p)).sum(1), atol=1e-5)


def test_views_geometry():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(1, 2, 16, 16)
    assert torch.equal(apply_view(x, View()), x)
    assert torch.equal(apply_view(x, View(flip=True)), x.flip(-1))
    tl = apply_view(x, View(crop="tl"), crop_fraction=0.5)
    assert tl.shape == x.shape
    assert tl.max() <= x[..., :8, :8].max() + 1e-4  # only top-left content
    out = apply_view(x, View(scale=0.5))
    assert out[0, 0, 0, 0] == x[0, 0].min() and out[0, 1, 0, 0] == x[0, 1].min()
    zoom = apply_view(x, View(scale=2.0))
    assert zoom.min() >= x[..., 4:12, 4:12].min() - 1e-4


def test_cancel_and_progress_and_config_errors():
    model = tiny_vit().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    events = []
    tta_predict(model, [x, x, x], TTAConfig(scales=(1.0,)), total=3, listener=events.append)
    assert [e.done for e in events if isinstance(e, Progress)] == [1, 2, 3]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        tta_predict(model, [x], cancel=token)
    with pytest.raises(ConfigError):
        tta_predict(model, [x], TTAConfig(crops=("middle",)))
