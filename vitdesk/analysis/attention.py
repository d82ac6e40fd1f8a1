"""Where a ViT looks: CLS attention per layer and head, attention rollout, Grad-CAM.

Attention probabilities are read with :class:`timm.utils.AttentionExtract` (forward
hooks on each block's ``attn.attn_drop``). Those hooks only fire on timm's eager
attention path, so the fused (SDPA) path is switched off for the extraction pass and
restored afterwards: training and inference keep the faster backend.

All maps come back as float32 numpy arrays. Maps at model-input size can be brought
back to the geometry of the displayed slice with an ``inverse`` callable, e.g.
:func:`pad_to_square_inverse`, which undoes the "pad to square, then resize"
preprocessing of ``vitdesk.data.dataset.preprocess_slice``;
``vitdesk.data.dataset.Letterbox(h, w, size).to_slice`` is an equivalent inverse
(a test checks they agree).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitdesk.errors import ModelError

InverseMap = Callable[[np.ndarray], np.ndarray]
HEAD_FUSIONS = ("mean", "max", "min")


# --------------------------------------------------------------------------- geometry


def upsample_to(map2d: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one 2-D map (or a stack ``(..., h, w)``) to ``shape`` (H, W)."""
    arr = np.asarray(map2d, dtype=np.float32)
    if arr.shape[-2:] == tuple(shape):
        return arr.copy()
    lead = arr.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(arr.reshape(-1, 1, *arr.shape[-2:])))
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *shape).numpy()


def pad_to_square_inverse(orig_shape: tuple[int, int]) -> InverseMap:
    """Inverse of "pad (centred) to a square of side max(H, W), then resize".

    The returned callable takes a map at model-input size (any square size) and
    returns it at ``orig_shape`` aligned with the original slice: it resizes back to
    the padded square, then cuts away the padding. Centred padding (the extra row or
    column going after) is the data package's documented geometry.
    """
    h, w = int(orig_shape[0]), int(orig_shape[1])
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2

    def inverse(map2d: np.ndarray) -> np.ndarray:
        square = upsample_to(map2d, (side, side))
        return square[..., top : top + h, left : left + w].copy()

    return inverse


def normalize01(maps: np.ndarray) -> np.ndarray:
    """Scale each 2-D map of a stack ``(..., H, W)`` to [0, 1] (constant maps become 0)."""
    arr = np.asarray(maps, dtype=np.float32)
    lo = arr.min(axis=(-2, -1), keepdims=True)
    hi = arr.max(axis=(-2, -1), keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return ((arr - lo) / span).astype(np.float32)


def overlay(
    image: np.ndarray, heat01: np.ndarray, alpha: float = 0.45, cmap: str = "jet"
) -> np.ndarray:
    """Blend a heat map over a grey [0, 1] image (H, W) or RGB image; returns uint8 RGB.

    ``image`` may be float in [0, 1] (grey or (H, W, 3)) or uint8. ``heat01`` is
    resized to the image when shapes differ and clipped to [0, 1]. ``cmap`` is any
    matplotlib colormap name.
    """
    from matplotlib import colormaps  # imported here: matplotlib is slow to import

    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = np.clip(img.astype(np.float32), 0.0, 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)  # (C, H, W) -> (H, W, C)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=2)
    heat = np.asarray(heat01, dtype=np.float32)
    if heat.shape != img.shape[:2]:
        heat = upsample_to(heat, img.shape[:2])
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    colour = colormaps[cmap](heat)[..., :3].astype(np.float32)
    out = (1.0 - alpha) * img + alpha * colour
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- extraction


def num_prefix_tokens(model: nn.Module) -> int:
    """Number of non-patch tokens (class, distillation, register) at the sequence start."""
    return int(getattr(model, "num_prefix_tokens", 1))


def token_grid(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Patch grid (rows, cols) the model makes of input ``x`` (B, C, H, W)."""
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        raise ModelError(
            f"{type(model).__name__} has no patch_embed: attention maps need a timm ViT"
        )
    if getattr(model, "dynamic_img_size", False) and hasattr(pe, "dynamic_feat_size"):
        return tuple(int(v) for v in pe.dynamic_feat_size(tuple(x.shape[-2:])))
    return tuple(int(v) for v in pe.grid_size)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily turn off fused attention so the softmax probabilities exist."""
    saved = []
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            saved.append((m, m.fused_attn))
            m.fused_attn = False
    try:
        yield
    finally:
        for m, value in saved:
            m.fused_attn = value


@torch.no_grad()
def extract_attention(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention probabilities of every block, each (B, heads, N, N), in block order."""
    from timm.utils import AttentionExtract

    was_training = model.training
    with eager_attention(model):
        try:
            extractor = AttentionExtract(model, method="hook", names=["*attn.attn_drop"])
        except RuntimeError as exc:
            raise ModelError(
                f"{type(model).__name__}: no attention modules found ({exc}); "
                "attention maps need a timm ViT/DeiT"
            ) from exc
        try:
            out = extractor(x)
        finally:
            for handle in extractor.hooks._handles:
                handle.remove()
            model.train(was_training)
    return [t.detach().float().cpu() for t in out.values()]


def cls_to_patch(attn: torch.Tensor, n_prefix: int, grid: tuple[int, int],
                 from_patches: bool = False) -> torch.Tensor:
    """Attention from the class token to each patch, reshaped to the grid.

    ``attn`` is (..., N, N). When the classifier reads the mean of the patch tokens
    (``from_patches``, timm ``global_pool='avg'``) or there is no prefix token, the
    attention each patch receives, averaged over the patch queries, is used instead:
    that is what the pooled output is made of. Returns (..., rows, cols).
    """
    if n_prefix > 0 and not from_patches:
        row = attn[..., 0, n_prefix:]
    else:
        row = attn[..., n_prefix:, n_prefix:].mean(dim=-2)
    return row.reshape(*row.shape[:-1], *grid)


def reads_patch_mean(model: nn.Module) -> bool:
    """True when the head reads the mean of the patch tokens, not the class token."""
    return getattr(model, "global_pool", "token") == "avg"


def fuse_heads(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Reduce the head dimension of (B, heads, N, N) with mean, max or min."""
    if head_fusion == "mean":
        return attn.mean(dim=1)
    if head_fusion == "max":
        return attn.amax(dim=1)
    if head_fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def rollout_matrix(
    attentions: list[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) over a stack of (B, heads, N, N) maps.

    Per layer: fuse heads, optionally zero the lowest ``discard_ratio`` of entries
    (never the class token's self-attention), add the residual as
    ``0.5 * A + 0.5 * I``, renormalise rows; then multiply layers, last on the left:
    ``R = A_L ... A_2 A_1``. Returns (B, N, N).
    """
    result = None
    for attn in attentions:
        a = fuse_heads(attn.float(), head_fusion)
        if discard_ratio > 0:
            flat = a.reshape(a.shape[0], -1)
            k = int(flat.shape[1] * discard_ratio)
            if k > 0:
                cls_self = flat[:, 0].clone()
                idx = flat.topk(k, dim=-1, largest=False).indices
                flat = flat.scatter(1, idx, 0.0)
                flat[:, 0] = cls_self  # never drop the class token's own attention
                a = flat.reshape(a.shape)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ModelError("attention rollout needs at least one attention map")
    return result


@dataclass(frozen=True)
class AttentionMaps:
    """Attention maps of a batch, all at ``size`` (the model input, or the inverse's).

    ``per_head`` is (B, layers, heads, H, W) raw CLS-to-patch attention;
    ``head_mean`` (B, layers, H, W); ``rollout`` (B, H, W) raw rollout row of the
    class token; ``grid`` the patch grid. Use :func:`normalize01` for display.
    """

    per_head: np.ndarray
    head_mean: np.ndarray
    rollout: np.ndarray
    grid: tuple[int, int]
    n_prefix: int
    head_fusion: str


def attention_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    inverse: InverseMap | None = None,
) -> AttentionMaps:
    """Per-layer/per-head CLS attention, head mean and rollout for a batch ``x``.

    For a model that classifies the mean patch token the maps follow the patch
    queries instead of the class token (see :func:`cls_to_patch`).

    Maps are upsampled to the input's (H, W), then passed through ``inverse`` (one
    2-D map at a time) when given, so they line up with the displayed slice.
    """
    if x.ndim != 4:
        raise ModelError(f"attention_maps expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    grid = token_grid(model, x)
    n_prefix = num_prefix_tokens(model)
    attns = extract_attention(model, x)
    stacked = torch.stack(attns, dim=1)  # (B, L, heads, N, N)
    pooled = reads_patch_mean(model)
    per_head = cls_to_patch(stacked, n_prefix, grid, pooled).numpy()
    roll = rollout_matrix(attns, head_fusion, discard_ratio)
    roll_map = cls_to_patch(roll, n_prefix, grid, pooled).numpy()
    size = tuple(int(s) for s in x.shape[-2:])

    def place(maps: np.ndarray) -> np.ndarray:
        up = upsample_to(maps, size)
        if inverse is None:
            return up
        flat = up.reshape(-1, *size)
        out = np.stack([inverse(m) for m in flat])
        return out.reshape(*up.shape[:-2], *out.shape[-2:])

    ph = place(per_head)
    return AttentionMaps(
        per_head=ph,
        head_mean=ph.mean(axis=2),
        rollout=place(roll_map),
        grid=grid,
        n_prefix=n_prefix,
        head_fusion=head_fusion,
    )


# --------------------------------------------------------------------------- Grad-CAM

# Children of a CNN from which on the features are pooled away: the fallback CAM
# layer is the last child before the first of these.
_POOL_NAMES = ("global_pool", "avgpool", "pool", "head", "fc", "classifier", "flatten")
_POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


def _default_cam_layer(model: nn.Module) -> nn.Module:
    # The last block's *input* tokens (its norm1 output), not its output: with class
    # token pooling the final patch tokens never reach the logits, so their gradient
    # is zero. Patch tokens entering the last attention do reach the CLS token.
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ModelError(f"{type(model).__name__} has no transformer blocks for Grad-CAM")
    last = blocks[-1]
    return getattr(last, "norm1", last)


def _no_cam_layer(model: nn.Module, why: str) -> ModelError:
    return ModelError(f"{type(model).__name__}: {why}; Grad-CAM needs a timm ViT (transformer "
                      "blocks) or a CNN with a convolutional feature map")


def cnn_cam_layers(model: nn.Module) -> list[nn.Module]:
    """Candidate Grad-CAM layers of a CNN, shallow to deep; the last is the default.

    timm CNNs list their feature maps in ``model.feature_info`` (dicts with a ``module``
    name); otherwise the last child before global pooling / the classifier is used.
    """
    info = getattr(model, "feature_info", None)
    names = []
    if isinstance(info, (list, tuple)):
        names = [e["module"] for e in info if isinstance(e, dict) and e.get("module")]
    layers = []
    for name in names:
        try:
            layers.append(model.get_submodule(name))
        except AttributeError:
            continue  # a stale name (e.g. a pruned or wrapped model): skip it
    if layers:
        return layers
    previous = None
    for name, child in model.named_children():
        if name in _POOL_NAMES or isinstance(child, _POOL_TYPES):
            if previous is None:
                break
            return [previous]
        previous = child
    raise _no_cam_layer(model, "no transformer blocks and no feature map before global pooling")


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | list[int] | None = None,
    *,
    layer: nn.Module | None = None,
    inverse: InverseMap | None = None,
) -> np.ndarray:
    """Grad-CAM for a ViT or a CNN: activations weighted by the class-logit gradient.

    ``target`` is the class index (one for all, one per image, or None for the
    predicted class). ViT (a model with ``patch_embed``): token features of ``layer``
    (default: the last block's norm1) are reshaped from (B, N, D) to the patch grid and
    weighted by their gradients averaged over patches. CNN: the feature map (B, C, h, w)
    of ``layer`` (default: the last ``feature_info`` module, or the last child before
    global pooling), weighted by the gradients averaged over h, w; when that map is
    1 x 1 at this input size (a small image), the deepest listed map with a spatial
    extent is used instead, since a single cell cannot localise anything.
    Either way the map is ReLU(sum_c w_c A_c), upsampled to the input size, normalised
    to [0, 1] per image and passed through ``inverse`` when given. Returns (B, H, W)
    float32.
    """
    vit = hasattr(model, "patch_embed")
    if layer is not None:
        layers = [layer]
    elif vit:
        layers = [_default_cam_layer(model)]
    else:
        layers = cnn_cam_layers(model)
    store: dict[int, torch.Tensor] = {}

    def make_hook(i: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _inp: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.retain_grad()
                store[i] = out  # the last call wins (a module reused in one forward)
        return hook

    was_training = model.training
    model.eval()
    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(layers)]
    try:
        with torch.enable_grad():
            inp = x.detach().clone().requires_grad_(True)  # grads flow even if params frozen
            logits = model(inp)
            if target is None:
                idx = logits.argmax(dim=1)
            elif isinstance(target, int):
                idx = torch.full((x.shape[0],), target, dtype=torch.long)
            else:
                idx = torch.as_tensor(list(target), dtype=torch.long)
            score = logits.gather(1, idx.view(-1, 1).to(logits.device)).sum()
            model.zero_grad(set_to_none=True)
            score.backward()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not store:
        raise _no_cam_layer(model, "the Grad-CAM layer produced no tensor output")
    size = tuple(int(s) for s in x.shape[-2:])
    act = store[max(store)]
    if act.ndim == 3 and (vit or layer is not None):
        cam = _token_cam(model, x, act)
    elif act.ndim == 4:
        spatial = [i for i in sorted(store) if store[i].ndim == 4
                   and store[i].shape[-2] * store[i].shape[-1] > 1]
        if act.shape[-2] * act.shape[-1] == 1 and spatial:
            act = store[spatial[-1]]
        cam = _map_cam(act)
    else:
        raise _no_cam_layer(model, f"the Grad-CAM layer gives shape {tuple(act.shape)}, "
                                   "not tokens (B, N, D) or a feature map (B, C, h, w)")
    cam = normalize01(upsample_to(cam, size))
    if inverse is not None:
        cam = np.stack([inverse(m) for m in cam])
    return cam.astype(np.float32)


def _token_cam(model: nn.Module, x: torch.Tensor, act: torch.Tensor) -> np.ndarray:
    """ViT Grad-CAM on the patch grid from token activations (B, N, D) with gradients."""
    grid = token_grid(model, x)
    n_prefix = num_prefix_tokens(model)
    grad = act.grad
    if grad is None:
        raise ModelError("Grad-CAM: the chosen layer does not reach the class logits")
    act, grad = act[:, n_prefix:].detach(), grad[:, n_prefix:].detach()
    weights = grad.mean(dim=1, keepdim=True)  # (B, 1, D)
    cam = F.relu((weights * act).sum(dim=-1))  # (B, patches)
    return cam.reshape(cam.shape[0], *grid).float().cpu().numpy()


def _map_cam(act: torch.Tensor) -> np.ndarray:
    """CNN Grad-CAM (B, h, w) from a feature map (B, C, h, w) with gradients."""
    grad = act.grad
    if grad is None:
        raise ModelError("Grad-CAM: the chosen layer does not reach the class logits")
    weights = grad.detach().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * act.detach()).sum(dim=1))  # (B, h, w)
    # scaled on the grid too: upsampling a constant (e.g. 1 x 1) map leaves float noise
    # that the final normalisation would blow up into a pattern
    return normalize01(cam.float().cpu().numpy())


@dataclass(frozen=True)
class SliceMaps:
    """Every map of one slice at the slice's own (H, W).

    ``per_head`` (layers, heads, H, W) raw CLS attention; ``rollout`` maps head fusion
    ("mean", "max", "min") to an (H, W) rollout; ``grad_cam`` (H, W) for ``target``.
    A CNN has no attention: ``per_head`` is (0, 0, H, W), ``rollout`` {} and
    ``has_attention`` False.
    """

    per_head: np.ndarray
    rollout: dict[str, np.ndarray]
    grad_cam: np.ndarray
    has_attention: bool = True


def slice_maps(model: nn.Module, x: torch.Tensor, target: int, inverse: InverseMap,
               cancel: object | None = None) -> SliceMaps:
    """Per-layer/head attention, rollouts (every head fusion) and Grad-CAM of one
    preprocessed slice ``x`` (1, C, S, S), mapped back to the slice with ``inverse``
    (e.g. ``Letterbox(h, w, S).to_slice``). ``cancel`` (a CancelToken) is checked
    between the passes."""
    from vitdesk.engine.models import is_cnn

    def check() -> None:
        if cancel is not None:
            cancel.check()

    vit = not is_cnn(model)
    if vit:
        attns = extract_attention(model, x)
        grid = token_grid(model, x)
        n_prefix = num_prefix_tokens(model)
        pooled = reads_patch_mean(model)
        check()
    cam = inverse(grad_cam(model, x, int(target))[0]).astype(np.float32)
    if not vit:
        return SliceMaps(np.zeros((0, 0, *cam.shape), np.float32), {}, cam, False)
    stacked = torch.stack(attns, dim=1)  # (1, L, heads, N, N)
    per_head_grid = cls_to_patch(stacked, n_prefix, grid, pooled)[0].numpy()  # (L, h, r, c)
    per_head = np.stack([[inverse(m) for m in layer] for layer in per_head_grid])
    rollout = {}
    for fusion in HEAD_FUSIONS:
        roll = rollout_matrix(attns, fusion)
        rollout[fusion] = inverse(cls_to_patch(roll, n_prefix, grid, pooled)[0].numpy())
    return SliceMaps(per_head.astype(np.float32), rollout, cam)
