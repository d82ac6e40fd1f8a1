"""Safe loading of starting weights: a file, a run folder, an MAE card folder, hub, none.

No code in a weights file ever runs: ``.safetensors`` is read by safetensors and
torch files by ``torch.load(weights_only=True)``; there is no unsafe fallback.
Position embeddings are resampled when the image size differs and the classifier
head is reset to the new number of classes.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vitdesk.engine.models import create_model
from vitdesk.errors import CheckpointError, ConfigError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_PREFIXES = ("module.", "_orig_mod.", "model.", "encoder.", "backbone.", "student.")


@dataclass
class LoadReport:
    """What happened when weights were loaded (recorded in env.json)."""

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized_pos_embed: bool = False
    head_reset: bool = False

    def to_dict(self) -> dict:
        return {"source": self.source, "missing": self.missing[:50],
                "unexpected": self.unexpected[:50], "n_missing": len(self.missing),
                "n_unexpected": len(self.unexpected),
                "resized_pos_embed": self.resized_pos_embed, "head_reset": self.head_reset}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or a torch file (``weights_only=True``).

    Raises:
        CheckpointError: missing, corrupt or unsafe (code-carrying pickle) file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{p} is not a readable safetensors file ({exc}): re-export or re-download it"
            ) from None
    if p.suffix not in TORCH_SUFFIXES:
        raise CheckpointError(
            f"{p}: unknown weights format '{p.suffix}': use .safetensors, .pth, .pt or .bin"
        )
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{p} was refused: it holds Python objects beyond plain tensors, which could run "
            f"code ({first[:120]}); convert it to .safetensors on a trusted machine"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is corrupt or not a torch weights file ({exc})") from None
    return _extract_state_dict(obj, p)


def _extract_state_dict(obj: object, p: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()
            ):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(f"{p} holds no tensors: it is not a model weights file")


def resolve_weights_path(src: str | Path) -> Path:
    """A weights file from DIR_OR_FILE: a file, a vitdesk run folder or an MAE card folder."""
    p = Path(src).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointError(
            f"pretrained weights '{src}' not found: give a .safetensors/.pth file, a run "
            "folder, 'hub' or 'none'"
        )
    if (p / "card.json").is_file() and (p / "encoder.safetensors").is_file():
        return p / "encoder.safetensors"  # an MAE pretraining folder: its final encoder
    ck = p / "checkpoints"
    if ck.is_dir():
        for kind in ("best", "last"):
            meta = ck / f"{kind}.json"
            if meta.is_file():
                try:
                    info = json.loads(meta.read_text())
                    weights = ck / info["weights"]
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(f"{meta} is corrupt ({exc})") from None
                if "pretrain" in info:
                    # an MAE folder without card.json was interrupted: its encoder is partial
                    raise CheckpointError(
                        f"pretraining in {p} did not finish: resume it with "
                        f"'vitdesk pretrain --resume --out {p}' or point at another backbone"
                    )
                return weights
        raise CheckpointError(f"run folder {p} has no checkpoint: it never finished an epoch")
    # MAE card / export folder: prefer an encoder file, else the only weights file
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", *TORCH_SUFFIXES))
    for pref in ("encoder", "model", "weights"):
        hits = [f for f in files if f.stem.startswith(pref) and f.suffix == ".safetensors"]
        if hits:
            return hits[0]
    if len(files) == 1:
        return files[0]
    raise CheckpointError(
        f"{p} is not a run folder and holds {len(files)} weights files: point at one file"
    )


def _strip_prefixes(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if sum(k in model_keys for k in sd) >= len(sd) // 2:
            break
        for pref in _PREFIXES:
            if sum(k.startswith(pref) for k in sd) > len(sd) // 2:
                sd = {k[len(pref):]: v for k, v in sd.items() if k.startswith(pref)}
                break
        else:
            break
    return sd


def load_weights_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Load ``sd`` into ``model``: resize pos-embed, reset a mismatched head, report keys."""
    from timm.layers import resample_abs_pos_embed

    report = LoadReport(source=source)
    own = model.state_dict()
    sd = _strip_prefixes(dict(sd), set(own))
    pe = sd.get("pos_embed")
    if pe is not None and "pos_embed" in own and pe.shape != own["pos_embed"].shape:
        n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        grid = list(model.patch_embed.grid_size)
        try:
            sd["pos_embed"] = resample_abs_pos_embed(
                pe.float(), new_size=grid, num_prefix_tokens=n_prefix
            ).to(own["pos_embed"].dtype)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{source}: cannot resize pos_embed ({exc})") from None
        report.resized_pos_embed = True
    head_names = set()
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Module):
        head_ids = {id(p) for p in head.parameters()}
        head_names = {n for n, p in model.named_parameters() if id(p) in head_ids}
    mismatched = []
    for k in list(sd):
        if k in own and sd[k].shape != own[k].shape:
            if k in head_names:
                del sd[k]
                report.head_reset = True
            else:
                mismatched.append(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}")
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit this model ({len(mismatched)} shape mismatches, e.g. "
            f"{mismatched[0]}): use weights of the same architecture"
        )
    result = model.load_state_dict(sd, strict=False)
    report.missing = [k for k in result.missing_keys if k not in head_names]
    if any(k in head_names for k in result.missing_keys):
        report.head_reset = True
    report.unexpected = list(result.unexpected_keys)
    body = [k for k in own if k not in head_names]
    if len(report.missing) > len(body) // 2:
        raise CheckpointError(
            f"{source} does not fit this model: {len(report.missing)} of {len(body)} tensors "
            f"missing (e.g. {report.missing[0]}): use weights of the same architecture"
        )
    return report


def build_model(
    name: str,
    num_classes: int,
    img_size: int,
    pretrained: str = "none",
    drop_path_rate: float = 0.0,
    pool: str | None = None,
) -> tuple[nn.Module, LoadReport]:
    """Create the model and load its starting weights (``PATH``, ``hub`` or ``none``)."""
    src = (pretrained or "none").strip()
    if src.lower() == "none":
        model = create_model(name, num_classes, img_size, drop_path_rate, pool=pool)
        return model, LoadReport(source="none")
    if src.lower() == "hub":
        return _from_hub(name, num_classes, img_size, drop_path_rate, pool)
    path = resolve_weights_path(src)
    sd = read_state_dict(path)
    model = create_model(name, num_classes, img_size, drop_path_rate, pool=pool)
    return model, load_weights_into(model, sd, str(path))


def hub_cache_dir() -> str:
    """Where huggingface_hub keeps downloaded weights on this machine."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm
        return os.path.expanduser("~/.cache/huggingface/hub")
    return str(HF_HUB_CACHE)


def _hub_id(name: str) -> tuple[str | None, str | None, str]:
    """(hub repo id, file name override, url) of ``name``'s default pretrained weights."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None, None, ""
    return cfg.hf_hub_id, cfg.hf_hub_filename, cfg.url or ""


def cached_hub_file(name: str) -> Path | None:
    """The weights file of ``name`` in the local caches, or None. Never uses the network.

    Looks where timm would download to: the huggingface_hub cache (``model.safetensors``,
    then ``pytorch_model.bin``, or the model's own file name) and torch's hub cache
    (``checkpoints/`` of a plain ``.pth``/``.bin`` URL).
    """
    hub_id, filename, url = _hub_id(name)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
        for fname in names:
            hit = try_to_load_from_cache(repo, fname, revision=revision or None)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
    if url and url.rsplit("?", 1)[0].endswith(TORCH_SUFFIXES):
        hit = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if hit.is_file():
            return hit
    return None


def _from_hub(name: str, num_classes: int, img_size: int, drop_path_rate: float,
              pool: str | None = None) -> tuple[nn.Module, LoadReport]:
    from vitdesk.engine.models import TEST_MODELS
    from vitdesk.offline import go_offline

    if name in TEST_MODELS:
        raise ConfigError(f"hub weights: {name} is a test model without hub weights: start "
                          "from random weights ('none') or a weights file")
    # The workstation is offline. The entry points switch the hub libraries off before
    # they load; this covers callers that import vitdesk as a library.
    go_offline()
    # Find the file ourselves and hand timm the path: timm then loads it like any local
    # file (weights only) and never asks a server, cached or not.
    path = cached_hub_file(name)
    if path is None:
        hub_id = _hub_id(name)[0] or f"timm/{name}"
        raise CheckpointError(
            f"hub weights for {name} are not in the local cache: on a connected machine "
            f"download model.safetensors of '{hub_id}' and use that file as the starting "
            f"weights, or copy its hub cache folder into {hub_cache_dir()}"
        )
    try:
        model = create_model(name, num_classes, img_size, drop_path_rate, pretrained=True,
                             pool=pool, pretrained_cfg_overlay={"file": str(path)})
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"hub weights for {name} in the local cache ({path.name}) could not be loaded "
            f"({type(exc).__name__}: {str(exc)[:160]}): delete that cache folder and copy "
            "it again"
        ) from None
    return model, LoadReport(source=f"hub:{name}", head_reset=True)
