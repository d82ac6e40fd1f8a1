"""The convolutional-stem ViT: a timm VisionTransformer whose patchify layer is a few
stride-2 convolutions, so every ViT contract (MAE, attention maps, export) still holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitdesk.engine.models import ConvStem, create_model, patch_size
from vitdesk.errors import ModelError


def test_stem_reaches_the_patch_grid_with_the_embedding_width():
    m = create_model("vit_test_tiny_convstem", num_classes=2, img_size=64).eval()
    assert isinstance(m.patch_embed.proj, ConvStem) and patch_size(m) == 8
    assert tuple(m.patch_embed.grid_size) == (8, 8) and m.patch_embed.num_patches == 64
    tokens = m.patch_embed(torch.rand(2, 3, 64, 64))
    assert tokens.shape == (2, 64, 64)
    # three stride-2 3x3 convolutions: a pixel only reaches the tokens whose 15-px
    # receptive field covers it, unlike a global mixer
    x = torch.zeros(1, 3, 64, 64)
    y = x.clone()
    y[..., 0:4, 0:4] = 1.0
    diff = (m.patch_embed(y) - m.patch_embed(x)).abs().sum(-1).reshape(8, 8)
    assert diff[0, 0] > 0 and diff[4:, :].sum() == 0 and diff[:, 4:].sum() == 0
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 2)


def test_stem_refuses_a_patch_that_is_not_a_power_of_two():
    with pytest.raises(ModelError, match="power-of-two"):
        ConvStem(3, 64, 6)


def test_mae_pretrains_the_stem_and_fine_tuning_loads_it():
    from vitdesk.engine.mae import MaskedAutoencoder

    enc = create_model("vit_test_tiny_convstem", 1, 32)
    mae = MaskedAutoencoder(enc, decoder_dim=32, decoder_depth=1, decoder_heads=2,
                            mask_ratio=0.75)
    before = {k: v.clone() for k, v in mae.state_dict().items()}
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    mae(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0)).backward()
    opt.step()
    key = "encoder.patch_embed.proj.body.0.weight"
    assert not torch.equal(before[key], mae.state_dict()[key])
    ft = create_model("vit_test_tiny_convstem", 2, 32)
    missing, unexpected = ft.load_state_dict(mae.encoder_state_dict(), strict=False)
    assert set(missing) == {"head.weight", "head.bias"} and not unexpected


def test_attention_maps_cover_the_stem_grid():
    from vitdesk.analysis.attention import attention_maps

    m = create_model("vit_test_tiny_convstem", num_classes=2, img_size=32).eval()
    maps = attention_maps(m, torch.rand(1, 3, 32, 32))
    assert maps.rollout.shape[-2:] == (32, 32) and np.isfinite(maps.rollout).all()
    assert tuple(maps.grid) == (4, 4)


def test_shift_features_tap_the_stem_and_see_an_intensity_offset():
    from vitdesk.analysis.shift import extract_features

    torch.manual_seed(0)
    m = create_model("vit_test_tiny_convstem", num_classes=2, img_size=32).eval()
    x = torch.rand(6, 3, 32, 32)
    f = extract_features(m, [x])
    # pooled 64, patch tokens mean + SD 128, first stem convolution mean + SD 2 x 16
    assert f.shape == (6, 64 + 128 + 32)
    assert extract_features(m, [x], low_level=False).shape == (6, 64)  # pooled only
    g = extract_features(m, [x + 1.0])
    assert np.abs(g[:, 64:] - f[:, 64:]).max() > 1e-3  # the low-level part moved
    assert not any(h for h in (m.patch_embed._forward_hooks, m.patch_embed.proj.first_norm()
                               ._forward_hooks))  # hooks removed
