"""Masked-autoencoder pretraining model (He et al., 2022) around a timm ViT encoder.

The encoder is the very ``VisionTransformer`` that :func:`vitdesk.engine.models.create_model`
builds for fine-tuning (its head removed), so its ``state_dict`` keys are the fine-tuning
model's keys minus the head and the pretrained encoder loads into a classifier as is.

Idea of the method, as implemented here:

* every image is cut into N patches; a per-image random permutation (argsort of uniform
  noise) keeps exactly ``round(N * (1 - mask_ratio))`` patches and hides the rest;
* the encoder sees only the visible patches (plus its prefix tokens). Position
  embeddings are added *before* the masking, through timm's own ``_pos_embed``, so each
  visible token still knows where it came from;
* a light decoder embeds the encoded tokens to its own width, puts a shared learned mask
  token at every hidden position (``ids_restore`` undoes the shuffle), adds fixed 2-D
  sin-cos position embeddings, runs a few small transformer blocks and predicts the
  pixels of every patch;
* the loss is the mean squared error on the hidden patches only, against pixels
  normalised per patch (``norm_pix_loss``), which the paper found gives better features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitdesk.errors import ConfigError


@dataclass(frozen=True)
class MaskedBatch:
    """Result of :func:`random_masking` for a batch of token sequences."""

    visible: torch.Tensor  # (B, keep, D) tokens kept, in shuffled order
    mask: torch.Tensor  # (B, N) 1.0 = hidden, 0.0 = visible, in the original patch order
    ids_restore: torch.Tensor  # (B, N) puts shuffled tokens back in patch order
    ids_keep: torch.Tensor  # (B, keep) patch indices of the visible tokens


def n_visible(n_patches: int, mask_ratio: float) -> int:
    """Patches kept per image: ``round(N * (1 - mask_ratio))``, at least 1, at most N - 1."""
    if not 0.0 < mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio={mask_ratio}: use a value strictly between 0 and 1 "
                          "(0.75 is the usual choice)")
    keep = int(round(n_patches * (1.0 - mask_ratio)))
    if keep < 1 or keep >= n_patches:
        raise ConfigError(
            f"mask_ratio={mask_ratio} keeps {keep} of {n_patches} patches: the encoder needs "
            "at least one visible and the loss at least one hidden patch; choose another ratio"
        )
    return keep


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> MaskedBatch:
    """Keep a different random subset of patch tokens per image.

    Args:
        tokens: (B, N, D) patch tokens (no prefix tokens).
        mask_ratio: fraction of patches to hide.
        generator: RNG for the noise (same device as ``tokens``); a seeded generator
            gives the same masks every time.
    """
    b, n, d = tokens.shape
    keep = n_visible(n, mask_ratio)
    noise = torch.rand(b, n, device=tokens.device, generator=generator)
    # ascending noise: the first `keep` positions of the shuffle are the visible patches
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(b, n, device=tokens.device, dtype=tokens.dtype)
    mask[:, :keep] = 0.0
    mask = torch.gather(mask, 1, ids_restore)
    return MaskedBatch(visible, mask, ids_restore, ids_keep)


def patchify(imgs: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch*patch*C), patches in row-major order (the ViT's order)."""
    b, c, h, w = imgs.shape
    if h % patch or w % patch:
        raise ConfigError(f"image {h}x{w} is not divisible by the patch size {patch}")
    gh, gw = h // patch, w // patch
    x = imgs.reshape(b, c, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, py, px, c
    return x.reshape(b, gh * gw, patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, chans: int, grid: tuple[int, int]
               ) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(b, gh, gw, patch, patch, chans)
    x = x.permute(0, 5, 1, 3, 2, 4)  # b, c, gh, py, gw, px
    return x.reshape(b, chans, gh * patch, gw * patch)


def sincos_pos_embed(grid: tuple[int, int], dim: int, n_prefix: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (1, n_prefix + gh*gw, dim); prefix tokens get zeros."""
    from timm.layers import build_sincos2d_pos_embed

    if dim % 4:
        raise ConfigError(f"decoder_dim={dim}: the 2-D sin-cos embedding needs a multiple of 4")
    pe = build_sincos2d_pos_embed(list(grid), dim=dim)  # (gh*gw, dim), row-major like patches
    return torch.cat([torch.zeros(n_prefix, dim), pe], dim=0).unsqueeze(0)


class MaskedAutoencoder(nn.Module):
    """MAE = a timm ViT encoder (``self.encoder``) + a light pixel decoder.

    Args:
        encoder: a timm ``VisionTransformer`` (its classifier head is removed here).
        decoder_dim: width of the decoder tokens (a multiple of 4 and of the heads).
        decoder_depth: number of decoder transformer blocks.
        decoder_heads: attention heads per decoder block.
        mask_ratio: fraction of patches hidden from the encoder.
        norm_pix_loss: normalise each target patch by its own mean and std.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        for attr in ("patch_embed", "_pos_embed", "blocks", "norm", "num_prefix_tokens"):
            if not hasattr(encoder, attr):
                raise ConfigError(
                    f"{type(encoder).__name__} is not a timm VisionTransformer (no {attr}): "
                    "MAE pretraining supports ViT/DeiT models"
                )
        if getattr(encoder, "dynamic_img_size", False):
            raise ConfigError("MAE pretraining needs a fixed image size (dynamic_img_size=False)")
        if decoder_dim % decoder_heads:
            raise ConfigError(f"decoder_dim={decoder_dim} is not divisible by "
                              f"decoder_heads={decoder_heads}")
        if hasattr(encoder, "reset_classifier"):
            encoder.reset_classifier(0)  # head -> Identity: the saved keys are the body's
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        n_visible(self.num_patches, self.mask_ratio)  # fail early on an unusable ratio
        self.norm_pix_loss = bool(norm_pix_loss)
        ps = encoder.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, tuple | list) else ps)
        self.in_chans = int(encoder.patch_embed.proj.in_channels)
        self.grid = tuple(int(g) for g in encoder.patch_embed.grid_size)
        self.n_prefix = int(encoder.num_prefix_tokens)
        width = int(encoder.embed_dim)

        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        # fixed, not learned: a buffer, and not saved (it is rebuilt from the geometry)
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed(self.grid, decoder_dim, self.n_prefix),
            persistent=False,
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * self.in_chans)
        self._init_decoder()

    @property
    def num_patches(self) -> int:
        g = self.encoder.patch_embed.grid_size
        return int(g[0] * g[1])

    def _init_decoder(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW must not decay: the encoder's (pos/cls) plus the mask token."""
        enc = getattr(self.encoder, "no_weight_decay", lambda: set())()
        return {f"encoder.{k}" for k in enc} | {"mask_token"}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder weights with the fine-tuning model's key names (no head)."""
        return {k: v for k, v in self.encoder.state_dict().items() if not k.startswith("head.")}

    # ---- forward ------------------------------------------------------------------
    def forward_encoder(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, MaskedBatch]:
        """Encode the visible patches; returns (B, prefix + keep, width) and the mask."""
        enc = self.encoder
        x = enc.patch_embed(imgs)
        x = enc._pos_embed(x)  # prefix tokens + position embeddings, before masking
        prefix, patches = x[:, : self.n_prefix], x[:, self.n_prefix:]
        masked = random_masking(patches, self.mask_ratio, generator)
        x = torch.cat([prefix, masked.visible], dim=1)
        x = enc.norm_pre(x)
        x = enc.blocks(x)
        return enc.norm(x), masked

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch's pixels: (B, N, patch*patch*C)."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        prefix, visible = x[:, : self.n_prefix], x[:, self.n_prefix:]
        fill = self.mask_token.expand(b, n - visible.shape[1], -1)
        full = torch.cat([visible, fill], dim=1)
        full = torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, full], dim=1) + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, self.n_prefix:]

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Per-patch pixel targets, normalised per patch when ``norm_pix_loss``."""
        t = patchify(imgs, self.patch).float()
        if self.norm_pix_loss:
            mean = t.mean(dim=-1, keepdim=True)
            var = t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1.0e-6).sqrt()
        return t

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the hidden patches only."""
        per_patch = ((pred.float() - self.target(imgs)) ** 2).mean(dim=-1)
        mask = mask.float()
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def reconstruct(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predicted patches (B, N, P), mask (B, N)) for one batch."""
        latent, masked = self.forward_encoder(imgs, generator)
        pred = self.forward_decoder(latent, masked.ids_restore)
        return self.loss(imgs, pred, masked.mask), pred, masked.mask

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """The training loss of a batch (a scalar tensor)."""
        return self.reconstruct(imgs, generator)[0]
