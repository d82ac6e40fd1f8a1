"""Attention extraction, rollout, Grad-CAM, geometry and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.analysis.conftest import SIZE, tiny_vit
from vitdesk.analysis.attention import (
    attention_maps,
    extract_attention,
    grad_cam,
    normalize01,
    overlay,
    pad_to_square_inverse,
    rollout_matrix,
    upsample_to,
)
from vitdesk.engine.models import create_model
from vitdesk.errors import ModelError


def _row_stochastic(rng, shape):
    a = rng.random(shape)
    return a / a.sum(-1, keepdims=True)


def test_rollout_equals_hand_computed_product(rng):
    a1 = _row_stochastic(rng, (2, 3, 4, 4))  # (B, heads, N, N)
    a2 = _row_stochastic(rng, (2, 3, 4, 4))
    eye = np.eye(4)

    def layer(a, fuse):
        f = getattr(a, fuse)(axis=1)
        f = 0.5 * f + 0.5 * eye
        return f / f.sum(-1, keepdims=True)

    for fuse in ("mean", "max", "min"):
        expected = layer(a2, fuse) @ layer(a1, fuse)
        got = rollout_matrix([torch.tensor(a1), torch.tensor(a2)], head_fusion=fuse)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.numpy().sum(-1), 1.0, atol=1e-6)


def test_extracted_attention_matches_manual_softmax_and_restores_fused():
    torch.manual_seed(0)
    model = tiny_vit().eval()
    for blk in model.blocks:
        blk.attn.fused_attn = True  # the fast path training uses; must survive extraction
    x = torch.randn(2, 3, SIZE, SIZE)
    attns = extract_attention(model, x)
    assert len(attns) == 2 and attns[0].shape == (2, 4, 17, 17)
    assert all(blk.attn.fused_attn for blk in model.blocks)
    assert not any(blk.attn.attn_drop._forward_hooks for blk in model.blocks)
    with torch.no_grad():
        tok = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        blk = model.blocks[0]
        qkv = blk.attn.qkv(blk.norm1(tok)).reshape(2, 17, 3, 4, 16).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        manual = ((q * blk.attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(attns[0], manual, rtol=1e-4, atol=1e-5)


def test_attention_maps_shapes_and_prefix_tokens():
    torch.manual_seed(0)
    model = tiny_vit(reg_tokens=2).eval()  # cls + 2 registers: 3 prefix tokens
    x = torch.randn(1, 3, SIZE, SIZE)
    maps = attention_maps(model, x)
    assert maps.n_prefix == 3 and maps.grid == (4, 4)
    assert maps.per_head.shape == (1, 2, 4, SIZE, SIZE)
    assert maps.head_mean.shape == (1, 2, SIZE, SIZE)
    assert maps.rollout.shape == (1, SIZE, SIZE)
    attn = extract_attention(model, x)
    cls_row = attn[1][0, :, 0, 3:].reshape(4, 4, 4)  # heads, grid
    # nearest check at patch centres (bilinear interpolation is exact at the centre
    # of a patch only approximately, so compare the grid via a down-sample instead)
    grid = maps.per_head[0, 1].reshape(4, 4, 8, 4, 8).mean(axis=(2, 4))
    assert np.corrcoef(grid.ravel(), cls_row.numpy().ravel())[0, 1] > 0.95
    # patch attention plus prefix attention sums to one per head
    assert np.allclose(attn[1][0, :, 0].sum(-1).numpy(), 1.0, atol=1e-5)
    # maps can be returned in the displayed slice's geometry (here 24 x 40 before padding)
    inv = attention_maps(model, x, inverse=pad_to_square_inverse((24, 40)))
    assert inv.rollout.shape == (1, 24, 40) and inv.per_head.shape == (1, 2, 4, 24, 40)
    assert grad_cam(model, x, target=[1], inverse=pad_to_square_inverse((24, 40))).shape == (
        1, 24, 40)


def test_grad_cam_highlights_the_quadrant_the_model_uses(trained_vit, test_set):
    # the trained model keys on the *dark* top-left quadrant as evidence for class 0
    # (class 1 is "no dark quadrant"), so class-0 cases carry the positive evidence
    x, y = test_set
    cam = grad_cam(trained_vit, x[y == 0])  # target None = predicted class
    assert cam.shape == (int((y == 0).sum()), SIZE, SIZE)
    assert cam.min() >= 0 and cam.max() <= 1
    used = cam[:, :16, :16].mean()
    others = [cam[:, 16:, 16:].mean(), cam[:, :16, 16:].mean(), cam[:, 16:, :16].mean()]
    assert used > 1.5 * max(others)


def test_pad_to_square_inverse_realigns_a_map():
    img = np.zeros((20, 32), np.float32)
    img[5:10, 4:12] = 1.0
    # forward geometry: pad centred to 32x32 (6 rows above), resize to 16
    padded = np.zeros((32, 32), np.float32)
    padded[6:26] = img
    small = upsample_to(padded, (16, 16))
    back = pad_to_square_inverse((20, 32))(small)
    assert back.shape == (20, 32)
    assert abs(np.unravel_index(back.argmax(), back.shape)[0] - 7) <= 2
    assert back[5:10, 4:12].mean() > 0.6 and back[14:, 20:].max() < 0.05


def test_overlay_blends_and_normalise():
    grey = np.full((8, 8), 0.5, np.float32)
    heat = normalize01(np.arange(64, dtype=np.float32).reshape(8, 8))
    assert heat.min() == 0 and heat.max() == 1
    out0 = overlay(grey, heat, alpha=0.0)
    assert out0.dtype == np.uint8 and out0.shape == (8, 8, 3)
    assert (out0 == 128).all()
    out1 = overlay(grey, heat, alpha=1.0, cmap="gray")
    np.testing.assert_allclose(out1[..., 0] / 255.0, heat, atol=1 / 255 + 1e-6)
    # small heat map is resized to the image
    assert overlay(np.zeros((16, 16, 3), np.uint8), heat).shape == (16, 16, 3)


def test_inverse_agrees_with_the_data_package_letterbox(rng):
    from vitdesk.data.dataset import Letterbox

    m = rng.random((7, 7)).astype(np.float32)  # e.g. a 7x7 patch grid
    mine = pad_to_square_inverse((45, 60))(m)
    theirs = Letterbox(45, 60, 112).to_slice(m)
    assert mine.shape == theirs.shape == (45, 60)
    np.testing.assert_allclose(mine, theirs, atol=1e-4)


def test_mean_pooled_model_maps_follow_the_patch_queries():
    torch.manual_seed(0)
    model = tiny_vit(global_pool="avg").eval()  # the head reads the mean patch token
    x = torch.randn(1, 3, SIZE, SIZE)
    maps = attention_maps(model, x)
    attn = extract_attention(model, x)
    patch_rows = attn[1][0, :, 1:, 1:].mean(dim=1).reshape(4, 4, 4)  # heads, grid
    cls_row = attn[1][0, :, 0, 1:].reshape(4, 4, 4)
    grid = maps.per_head[0, 1].reshape(4, 4, 8, 4, 8).mean(axis=(2, 4))
    assert np.corrcoef(grid.ravel(), patch_rows.numpy().ravel())[0, 1] > 0.95
    assert not np.allclose(patch_rows.numpy(), cls_row.numpy(), atol=1e-3)
    roll = rollout_matrix(attn)[0, 1:, 1:].mean(0).reshape(4, 4).numpy()
    got = maps.rollout[0].reshape(4, 8, 4, 8).mean(axis=(1, 3))
    assert np.corrcoef(got.ravel(), roll.ravel())[0, 1] > 0.95


# --------------------------------------------------------------------------- CNN Grad-CAM


def _quadrant_masses(cam):
    return cam[:, :16, :16].mean(), [cam[:, 16:, 16:].mean(), cam[:, :16, 16:].mean(),
                                     cam[:, 16:, :16].mean()]


def test_cnn_grad_cam_highlights_the_quadrant_the_model_uses(trained_cnn, test_set):
    x, y = test_set
    with torch.no_grad():
        assert (trained_cnn(x).argmax(1) == y).float().mean() > 0.95  # it learned the task
    for cls in (0, 1):  # both the bright and the dark quadrant are evidence to a CNN here
        cam = grad_cam(trained_cnn, x[y == cls])  # target None = predicted class
        assert cam.shape == (int((y == cls).sum()), SIZE, SIZE) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        used, others = _quadrant_masses(cam)
        assert used > 1.5 * max(others), (cls, used, others)


def test_cnn_grad_cam_default_layer_skips_a_one_cell_feature_map(trained_cnn, test_set):
    x, _ = test_set
    # at 32 px the last stage (layer4, stride 32) is 1 x 1: one cell cannot localise, so
    # the default is the deepest map with extent (layer3, 2 x 2)
    last = grad_cam(trained_cnn, x[:4], layer=trained_cnn.layer4)
    assert np.all(last == 0)  # a constant map normalises to zero
    np.testing.assert_allclose(grad_cam(trained_cnn, x[:4]),
                               grad_cam(trained_cnn, x[:4], layer=trained_cnn.layer3))
    # an explicit target changes the map; the model is left in the mode it was in
    trained_cnn.train()
    try:
        a = grad_cam(trained_cnn, x[:2], target=0)
        b = grad_cam(trained_cnn, x[:2], target=[1, 1])
        assert trained_cnn.training
    finally:
        trained_cnn.eval()
    assert not np.allclose(a, b)


def test_cnn_grad_cam_manual_formula_and_inverse():
    torch.manual_seed(0)
    model = create_model("cnn_test_tiny", 3, 64).eval()
    x = torch.randn(2, 3, 64, 64)
    cam = grad_cam(model, x, target=[2, 0])
    # by hand: layer4 (the last feature_info module, 2 x 2 at 64 px)
    feats = {}
    handle = model.layer4.register_forward_hook(lambda _m, _i, o: feats.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = feats["a"]
    g = torch.autograd.grad(logits[0, 2] + logits[1, 0], a)[0]
    manual = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach().numpy()
    expected = normalize01(upsample_to(manual, (64, 64)))
    np.testing.assert_allclose(cam, expected, atol=1e-5)
    inv = grad_cam(model, x, target=[2, 0], inverse=pad_to_square_inverse((40, 64)))
    assert inv.shape == (2, 40, 64)
    np.testing.assert_allclose(inv[1], pad_to_square_inverse((40, 64))(cam[1]), atol=1e-6)


class _Flat(nn.Module):
    """A linear classifier on raw pixels: no blocks, no feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * SIZE * SIZE, 2)

    def forward(self, x):
        return self.fc(self.flatten(x))


class _Embed(nn.Module):
    """A feature child before the head, but its output is a vector, not a map."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 8))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.embed(x))


@pytest.mark.parametrize("model_cls, words", [(_Flat, "no feature map"), (_Embed, "(2, 8)")])
def test_grad_cam_without_blocks_or_feature_map_raises(model_cls, words):
    x = torch.randn(2, 3, SIZE, SIZE)
    with pytest.raises(ModelError, match="Grad-CAM needs a timm ViT") as info:
        grad_cam(model_cls(), x)
    assert words in str(info.value)
