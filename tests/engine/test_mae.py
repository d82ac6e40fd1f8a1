"""The masked autoencoder: masking, patch order, visible-only encoder, masked-only loss."""

from __future__ import annotations

import pytest
import torch

from vitdesk.engine.mae import (
    MaskedAutoencoder,
    n_visible,
    patchify,
    random_masking,
    unpatchify,
)
from vitdesk.engine.models import create_model
from vitdesk.errors import ConfigError


def _mae(img_size: int = 32, mask_ratio: float = 0.75) -> MaskedAutoencoder:
    torch.manual_seed(0)
    enc = create_model("vit_test_tiny", 1, img_size)
    return MaskedAutoencoder(enc, decoder_dim=32, decoder_depth=1, decoder_heads=4,
                             mask_ratio=mask_ratio)


@pytest.mark.parametrize(("ratio", "n", "keep"), [(0.75, 16, 4), (0.6, 16, 6), (0.5, 49, 24)])
def test_masking_keeps_exactly_the_configured_patches_per_image(ratio, n, keep):
    tokens = torch.randn(6, n, 8)
    m = random_masking(tokens, ratio, torch.Generator().manual_seed(1))
    assert m.visible.shape == (6, keep, 8)
    assert m.mask.sum(dim=1).tolist() == [n - keep] * 6
    for b in range(6):
        # the visible tokens are exactly the unmasked patches, taken from the input
        unmasked = torch.nonzero(m.mask[b] == 0).flatten()
        assert sorted(m.ids_keep[b].tolist()) == unmasked.tolist()
        assert torch.equal(m.visible[b], tokens[b, m.ids_keep[b]])
        # ids_restore inverts the shuffle
        shuffled = torch.cat([m.ids_keep[b], torch.nonzero(m.mask[b]).flatten()])
        assert len(set(shuffled.tolist())) == n
    # different images get different patches
    assert len({tuple(sorted(r.tolist())) for r in m.ids_keep}) > 1


def test_masking_is_deterministic_for_a_seed():
    tokens = torch.randn(4, 16, 8)
    a = random_masking(tokens, 0.75, torch.Generator().manual_seed(7))
    b = random_masking(tokens, 0.75, torch.Generator().manual_seed(7))
    c = random_masking(tokens, 0.75, torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_restore, b.ids_restore)
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 0.99])
def test_unusable_mask_ratios_are_refused(ratio):
    with pytest.raises(ConfigError, match="mask_ratio"):
        n_visible(16, ratio)  # 0.99 of 16 patches keeps round(0.16) = 0


def test_patchify_follows_the_vit_patch_order():
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, 8)
    assert p.shape == (2, 4 * 6, 8 * 8 * 3)
    # token r * grid_w + c is the patch at row r, column c (row-major, like patch_embed)
    r, c = 2, 5
    patch = x[:, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]
    assert torch.equal(p[:, r * 6 + c], patch.permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(unpatchify(p, 8, 3, (4, 6)), x)
    # the timm patch embedding sees the same patch at the same token
    enc = create_model("vit_test_tiny", 1, 32)
    y = torch.zeros(1, 3, 32, 32)
    y[:, :, 8:16, 24:32] = 1.0  # row 1, column 3 -> token 7
    with torch.no_grad():
        emb = enc.patch_embed(y) - enc.patch_embed(torch.zeros_like(y))
    assert torch.nonzero(emb.abs().sum(-1)[0]).flatten().tolist() == [7]
    assert torch.nonzero(patchify(y, 8).abs().sum(-1)[0]).flatten().tolist() == [7]


def test_encoder_sees_only_the_visible_patches():
    mae = _mae().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        latent, m = mae.forward_encoder(x, torch.Generator().manual_seed(3))
    assert latent.shape == (2, 1 + 4, 64)  # cls + 4 of 16 patches
    # change every hidden patch of image 0: the encoding must not move
    hidden = torch.nonzero(m.mask[0]).flatten().tolist()
    y = x.clone()
    for k in hidden:
        r, c = divmod(k, 4)
        y[0, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = torch.randn(3, 8, 8)
    with torch.no_grad():
        latent2, m2 = mae.forward_encoder(y, torch.Generator().manual_seed(3))
    assert torch.equal(m.mask, m2.mask)
    assert torch.allclose(latent, latent2, atol=1e-6)
    # while changing a visible patch does
    k = m.ids_keep[0, 0].item()
    r, c = divmod(k, 4)
    y[0, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 1.0
    with torch.no_grad():
        latent3, _ = mae.forward_encoder(y, torch.Generator().manual_seed(3))
    assert not torch.allclose(latent[0], latent3[0], atol=1e-4)


def test_loss_counts_only_hidden_patches_with_per_patch_normalised_targets():
    mae = _mae()
    x = torch.rand(3, 3, 32, 32)
    t = mae.target(x)
    assert torch.allclose(t.mean(-1), torch.zeros(3, 16), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(3, 16), atol=1e-3)
    mask = torch.zeros(3, 16)
    mask[:, :12] = 1.0
    pred = t.clone()
    pred[:, 12:] += 100.0  # visible patches wrong: no effect on the loss
    assert mae.loss(x, pred, mask).item() == pytest.approx(0.0, abs=1e-10)
    pred[:, :12] += 2.0  # hidden patches off by 2 everywhere: MSE 4
    assert mae.loss(x, pred, mask).item() == pytest.approx(4.0, rel=1e-5)


def test_encoder_keys_are_the_finetuning_models_minus_the_head():
    mae = _mae()
    ft = create_model("vit_test_tiny", 5, 32).state_dict()
    enc = mae.encoder_state_dict()
    assert set(ft) - set(enc) == {"head.weight", "head.bias"}
    assert set(enc) <= set(ft)
    assert all(enc[k].shape == ft[k].shape for k in enc)
    # the decoder position embedding is fixed sin-cos: no parameter, not saved
    names = {n for n, _ in mae.named_parameters()}
    assert "decoder_pos_embed" not in names and "decoder_pos_embed" not in mae.state_dict()
    assert mae.decoder_pos_embed.shape == (1, 17, 32)
    assert torch.equal(mae.decoder_pos_embed[0, 0], torch.zeros(32))  # cls gets no position
    assert "encoder.pos_embed" in mae.no_weight_decay()


def test_one_step_trains_encoder_and_decoder():
    mae = _mae()
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in mae.state_dict().items()}
    loss = mae(torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    after = mae.state_dict()
    for key in ("encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight",
                "encoder.pos_embed", "decoder_pred.weight", "mask_token"):
        assert not torch.equal(before[key], after[key]), key
