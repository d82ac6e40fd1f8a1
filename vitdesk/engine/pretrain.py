"""Offline pretraining of a ViT encoder: MAE on the user's slices, or formula-driven.

Hospital workstations often cannot download ImageNet weights. :func:`pretrain` trains a
masked autoencoder (:mod:`vitdesk.engine.mae`) on every slice of a data source, labels
ignored, or (``formula = "contours" | "fractals"``) a classifier of generated formula
images (:mod:`vitdesk.engine.formula`, no data at all), and writes a folder that
``vitdesk train --pretrained DIR`` starts from:

``DIR/encoder.safetensors``
    the encoder weights, keys exactly those of the fine-tuning model minus its head;
``DIR/card.json``
    objective (``mae`` or ``formula``), model name, image size, patch size, window (none
    for formula images), data fingerprint, epochs, mask ratio or formula settings, loss
    per epoch, seconds, software versions (no paths, no patient data);
``DIR/history.jsonl``
    one line per epoch;
``DIR/checkpoints/``
    ``last`` for ``--resume`` (the engine's atomic checkpoint format). Its weights file
    holds the encoder only, with the same keys as ``encoder.safetensors``, so loading
    ``DIR`` as a run folder gives the same encoder; the decoder and the optimizer live
    in the checkpoint's state file (for formula runs: the formula classifier's head).

Everything random is a function of the seed: data order of ``(seed, epoch)``, masks of
``(seed, step)``, augmentation of ``(seed, epoch, index)``, so a cancelled run resumed
from its last checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from vitdesk.engine import checkpoint as ckpt
from vitdesk.engine.cards import CARD, CARD_FORMAT, read_card  # noqa: F401 - re-exported
from vitdesk.engine.device import (
    amp_dtype,
    amp_name,
    grad_scaler,
    resolve_device,
    software_versions,
)
from vitdesk.engine.events import CheckpointSaved, StepDone, TrainingFailed
from vitdesk.engine.formula import FormulaClassifier
from vitdesk.engine.history import HISTORY, HistoryWriter
from vitdesk.engine.mae import MaskedAutoencoder
from vitdesk.engine.pretrain_config import (  # re-exported: callers import them from here
    PretrainConfig,
    PretrainDone,
    PretrainEpochEnded,
    PretrainStarted,
)
from vitdesk.engine.run_folder import check_out_folder
from vitdesk.errors import Cancelled, CheckpointError, ConfigError, DataError
from vitdesk.imaging.windowing import WindowSpec
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

ENCODER = "encoder.safetensors"
_TASK = "pretrain"
# Settings a resumed run must share with its checkpoint (the rest may change).
_RESUME_FIXED = ("model", "img_size", "window", "clahe", "mask_ratio", "norm_pix_loss",
                 "decoder_dim", "decoder_depth", "decoder_heads", "batch_size", "seed",
                 "base_lr", "weight_decay", "warmup_epochs", "min_lr", "augment", "formula",
                 "formula_classes", "formula_per_class")



# ---- state ------------------------------------------------------------------------------
@dataclass
class PretrainState:
    """Where the run is: the next epoch and batch to do, the curve so far."""

    epoch: int = 0
    batch: int = 0  # batches of `epoch` already consumed (resume mid-epoch)
    global_step: int = 0
    loss_sum: float = 0.0  # of the current, unfinished epoch
    loss_count: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss of each finished epoch
    seconds: float = 0.0  # over all sessions


# ---- helpers ----------------------------------------------------------------------------
@dataclass
class PretrainData:
    """The unlabelled images (any Dataset of ``(x, y)``; ``y`` is ignored)."""

    dataset: Dataset
    fingerprint: str = ""
    n_patients: int = 0
    n_series: int = 0


def build_pretrain_data(cfg: PretrainConfig, mean: Sequence[float], std: Sequence[float],
                        cancel: CancelToken = NEVER, listeners: Sequence[Listener] = ()
                        ) -> PretrainData:
    """Every slice of ``cfg.data``, labelled or not, as one :class:`SliceDataset` (or the
    generated formula images when ``cfg.formula`` is set)."""
    from vitdesk.data.augment import AugmentConfig
    from vitdesk.data.build import fingerprint
    from vitdesk.data.dataset import SliceDataset
    from vitdesk.data.sources import load_records

    if cfg.formula:
        from vitdesk.engine.formula import FormulaDataset

        ds = FormulaDataset(cfg.formula, cfg.formula_classes, cfg.formula_per_class,
                            cfg.img_size, mean, std, cfg.seed)
        return PretrainData(ds, ds.fingerprint)
    if not str(cfg.data).strip():
        raise ConfigError("pretrain.data is empty: give the unlabelled images with --data SRC")
    records = load_records(cfg.data, cancel, list(listeners), require_labels=False)
    # labels are not used; dropping them keeps the fingerprint about pixels only
    records = [dataclasses.replace(r, label=None) for r in records]
    if not records:
        raise DataError(f"{cfg.data}: no images found: check --data")
    augment = None
    if cfg.augment:
        augment = AugmentConfig(hflip=True, rotate_deg=5.0, scale=(0.9, 1.2), translate=0.05,
                                hu_shift=0.0, hu_scale=0.0, image_jitter=0.0, seed=cfg.seed)
    ds = SliceDataset(records, [], WindowSpec.parse(cfg.window, clahe=cfg.clahe), cfg.img_size,
                      mean, std, channels=3, augment=augment)
    return PretrainData(ds, fingerprint(records), len({r.patient for r in records}),
                        len({r.series for r in records}))


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def _mask_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 7_919 + int(step) * 104_729 + 17) % (2**63))
    return g


def _warmup_steps(cfg: PretrainConfig, steps_per_epoch: int, total: int) -> int:
    return max(0, min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1))


def _build_optim(cfg: PretrainConfig, net: torch.nn.Module, steps_per_epoch: int):
    """AdamW (no decay on norms, biases, pos/cls embeddings, mask token) + per-step cosine."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    opt = create_optimizer_v2(net, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                              betas=tuple(cfg.betas))
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = _warmup_steps(cfg, steps_per_epoch, total)
    sched = CosineLRScheduler(
        # t_initial >= 2: timm warns that a 1-step cosine has no effect (tiny test runs)
        opt, t_initial=max(2, total - warm), lr_min=min(cfg.min_lr, cfg.lr), warmup_t=warm,
        warmup_lr_init=cfg.lr * 1e-3 if warm else cfg.lr, warmup_prefix=True,
        t_in_epochs=False,
    )
    return opt, sched


def _current_lr(opt: torch.optim.Optimizer) -> float:
    return float(max(g["lr"] for g in opt.param_groups))


def _history_row(ev: PretrainEpochEnded) -> dict:
    return {"epoch": ev.epoch, "step": ev.global_step, "loss": round(ev.loss, 6),
            "lr": ev.lr, "seconds": round(ev.seconds, 3)}


def _check_resume(cp: ckpt.Checkpoint, cfg: PretrainConfig, fp: str, out: Path) -> None:
    saved = cp.meta.get("config") or {}
    for key in _RESUME_FIXED:
        ours = cfg.recorded().get(key)
        if key in saved and saved[key] != ours:
            raise CheckpointError(
                f"cannot resume {out}: it was pretrained with {key}={saved[key]!r}, now "
                f"{key}={ours!r}; use the same setting or a new --out"
            )
    if fp and cp.meta.get("fingerprint") and cp.meta["fingerprint"] != fp:
        raise CheckpointError(
            f"cannot resume {out}: the images differ from those it was pretrained on "
            "(data fingerprint changed); use the same --data or a new --out"
        )
    done = len(cp.meta.get("pretrain_state", {}).get("losses", []))
    if done >= cfg.epochs:
        raise ConfigError(
            f"{out} has already finished {done} epoch(s): raise --epochs above {done} to "
            "continue it"
        )


def save_encoder(path: Path, weights: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Write encoder weights as safetensors atomically (string metadata only)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    ckpt.atomic_write_bytes(path, lambda p: save_file(flat, p, metadata=meta))


# ---- the run ----------------------------------------------------------------------------
def pretrain(
    cfg: PretrainConfig,
    cancel: CancelToken = NEVER,
    listeners: Sequence[Listener] = (),
    *,
    data: PretrainData | None = None,
) -> Path:
    """Pretrain an encoder with a masked autoencoder; returns the output folder.

    Args:
        cfg: the settings (validated here); ``cfg.resume`` continues ``cfg.out``.
        cancel: cooperative cancel/pause, checked before every optimizer step.
        listeners: receive :class:`PretrainStarted`, :class:`StepDone`,
            :class:`PretrainEpochEnded`, :class:`CheckpointSaved`, :class:`PretrainDone`
            (or :class:`TrainingFailed`) and :class:`vitdesk.jobs.Progress`.
        data: prebuilt images (tests, GUI); by default every slice of ``cfg.data``.

    Raises:
        ConfigError, DataError, ModelError, CheckpointError: before anything is written.
        Cancelled: after ``checkpoints/last`` was written.
    """
    from vitdesk.engine.models import (
        choose_attention_backend,
        count_trainable,
        create_model,
        model_norm_stats,
    )

    cfg.validate()
    out = Path(cfg.out).expanduser()
    check_out_folder(out, cfg.resume)
    device = resolve_device(cfg.device)
    window = WindowSpec.parse(cfg.window, clahe=cfg.clahe)
    mean, std = model_norm_stats(cfg.model)
    if data is None:
        data = build_pretrain_data(cfg, mean, std, cancel, listeners)
    n = len(data.dataset)
    if n == 0:
        raise DataError("no images to pretrain on: check --data")
    torch.manual_seed(cfg.seed)
    net: MaskedAutoencoder | FormulaClassifier
    if cfg.formula:
        # mean-token pooling, as fine-tuning from a card folder uses (model.pool = auto)
        net = FormulaClassifier(create_model(cfg.model, cfg.formula_classes, cfg.img_size,
                                             pool="avg"))
    else:
        net = MaskedAutoencoder(create_model(cfg.model, 1, cfg.img_size), cfg.decoder_dim,
                                cfg.decoder_depth, cfg.decoder_heads, cfg.mask_ratio,
                                cfg.norm_pix_loss)
    st = PretrainState()
    cp = None
    if cfg.resume:
        cp = ckpt.load_checkpoint(out / "checkpoints", "last")
        _check_resume(cp, cfg, data.fingerprint, out)
        try:
            net.load_state_dict({**{f"encoder.{k}": v for k, v in cp.weights.items()},
                                 **cp.state["decoder"]}, strict=True)
        except (RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise CheckpointError(
                f"checkpoint in {out} does not fit {cfg.model} ({first}): start a new --out"
            ) from None
        try:
            st = PretrainState(**cp.meta["pretrain_state"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{out}/checkpoints/last.json is corrupt ({exc}): start a "
                                  "new --out") from None
    # ---- everything is valid: now write -------------------------------------------------
    net.to(device)
    bs = cfg.batch_size
    steps_per_epoch = math.ceil(n / bs)
    opt, sched = _build_optim(cfg, net, steps_per_epoch)
    if cp is not None and cp.state.get("optimizer") is not None:
        opt.load_state_dict(cp.state["optimizer"])
    amp = amp_dtype(cfg.amp, device)
    scaler = grad_scaler(amp, device)
    out.mkdir(parents=True, exist_ok=True)
    history = HistoryWriter(out / HISTORY)
    if cfg.resume:
        history.truncate(st.global_step)
    sample = torch.stack([torch.as_tensor(data.dataset[i][0]) for i in range(min(bs, n))])
    attention = choose_attention_backend(net.encoder if cfg.formula else net, sample.to(device),
                                         cfg.attention, amp)
    opt.zero_grad(set_to_none=True)
    base_meta = {"pretrain": CARD_FORMAT, "model": cfg.model, "img_size": cfg.img_size,
                 "window": window.to_dict(), "fingerprint": data.fingerprint,
                 "config": cfg.recorded()}

    encoder_keys = {f"encoder.{k}" for k in net.encoder_state_dict()}

    def save_last() -> None:
        # "decoder": everything but the saved encoder (MAE decoder, or the formula head)
        state = {"optimizer": opt.state_dict(),
                 "decoder": {k: v for k, v in net.state_dict().items()
                             if k not in encoder_keys}}
        meta = dict(base_meta, pretrain_state=asdict(st), global_step=st.global_step)
        path = ckpt.save_checkpoint(out / "checkpoints", "last", net.encoder_state_dict(),
                                    meta, state)
        emit(listeners, CheckpointSaved(str(path), "last"))

    emit(listeners, PretrainStarted(cfg.epochs, st.epoch, n, count_trainable(net), cfg.lr,
                                    cfg.mask_ratio, cfg.formula))
    session_t0 = time.perf_counter()
    seconds_before = st.seconds
    sched.step_update(st.global_step)
    net.train()
    try:
        while st.epoch < cfg.epochs:
            t0 = time.perf_counter()
            if hasattr(data.dataset, "set_epoch"):
                data.dataset.set_epoch(st.epoch)  # per-epoch augmentation draws
            order = _epoch_order(n, cfg.seed, st.epoch)[st.batch * bs:]
            loader = DataLoader(data.dataset, batch_size=bs, sampler=order,
                                num_workers=cfg.workers, pin_memory=device.type == "cuda")
            log_t, log_n = time.perf_counter(), 0
            for x, y in loader:
                cancel.check()  # safe point: nothing of this batch applied yet
                x = x.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    if cfg.formula:
                        loss = net(x, y.to(device))
                    else:
                        loss = net(x, _mask_generator(cfg.seed, st.global_step, device))
                scaler.scale(loss).backward()
                if cfg.clip_grad > 0:
                    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                st.global_step += 1
                st.batch += 1
                sched.step_update(st.global_step)
                value = float(loss.detach())  # one sync per step: cheap next to the step
                if not math.isfinite(value):
                    raise DataError(
                        f"pretraining loss became {value} at step {st.global_step}: lower "
                        "--batch-size or the learning rate (pretrain.base_lr)"
                    )
                st.loss_sum += value * int(x.shape[0])
                st.loss_count += int(x.shape[0])
                log_n += int(x.shape[0])
                if listeners and (st.global_step % cfg.log_every == 0
                                  or st.batch == steps_per_epoch):
                    now = time.perf_counter()
                    emit(listeners, StepDone(0, st.epoch, st.batch, st.global_step, value,
                                             _current_lr(opt), log_n / max(now - log_t, 1e-9)))
                    emit(listeners, Progress(_TASK, st.batch, steps_per_epoch,
                                             f"epoch {st.epoch + 1}/{cfg.epochs} loss {value:.4f}"))
                    log_t, log_n = now, 0
            epoch_loss = st.loss_sum / max(st.loss_count, 1)
            st.losses.append(epoch_loss)
            st.epoch += 1
            st.batch, st.loss_sum, st.loss_count = 0, 0.0, 0
            st.seconds = seconds_before + time.perf_counter() - session_t0
            ev = PretrainEpochEnded(st.epoch - 1, cfg.epochs, st.global_step, epoch_loss,
                                    _current_lr(opt), time.perf_counter() - t0)
            history.append(_history_row(ev))
            emit(listeners, ev)
            save_last()
    except Cancelled:
        st.seconds = seconds_before + time.perf_counter() - session_t0
        save_last()
        emit(listeners, TrainingFailed("cancelled; continue with --resume"))
        raise
    except Exception as exc:
        emit(listeners, TrainingFailed(f"{type(exc).__name__}: {exc}"))
        raise
    # ---- results ----------------------------------------------------------------------
    enc = net.encoder
    card = {
        "format": CARD_FORMAT,
        "objective": "formula" if cfg.formula else "mae",
        "encoder": ENCODER,
        "model": cfg.model,
        "img_size": cfg.img_size,
        "patch_size": net.patch,
        "in_chans": net.in_chans,
        "embed_dim": int(enc.embed_dim),
        "depth": len(enc.blocks),
        # formula images are not CT: no window to keep identical at fine-tuning
        "window": None if cfg.formula else window.to_dict(),
        "window_label": "" if cfg.formula else window.label(),
        "mean": list(mean),
        "std": list(std),
        "data": {"fingerprint": data.fingerprint, "n_images": n,
                 "n_patients": data.n_patients, "n_series": data.n_series},
        "epochs": st.epoch,
        "steps": st.global_step,
        **({"formula": {"kind": cfg.formula, "classes": cfg.formula_classes,
                        "per_class": cfg.formula_per_class}} if cfg.formula else
           {"mask_ratio": cfg.mask_ratio, "norm_pix_loss": cfg.norm_pix_loss,
            "decoder": {"dim": cfg.decoder_dim, "depth": cfg.decoder_depth,
                        "heads": cfg.decoder_heads}}),
        "batch_size": bs,
        "lr": cfg.lr,
        "base_lr": cfg.base_lr,
        "weight_decay": cfg.weight_decay,
        "loss_per_epoch": [round(v, 6) for v in st.losses],
        "seconds": round(st.seconds, 2),
        "device": device.type,
        "amp": amp_name(amp),
        "attention": attention.get("backend"),
        "seed": cfg.seed,
        "software": software_versions(),
        "finished": True,
    }
    save_encoder(out / ENCODER, net.encoder_state_dict(),
                 {"format": CARD_FORMAT, "model": cfg.model, "img_size": str(cfg.img_size)})
    ckpt.atomic_write_text(out / CARD, json.dumps(card, indent=2))
    emit(listeners, PretrainDone(str(out), st.losses[-1], st.epoch, st.seconds))
    return out


def saved_config(out: str | Path) -> PretrainConfig | None:
    """The settings recorded in ``out/checkpoints/last.json`` (None when there is none).

    ``data`` and ``out`` are not recorded (paths may name patients): the caller sets them.
    """
    meta_path = Path(out).expanduser() / "checkpoints" / "last.json"
    if not meta_path.is_file():
        return None
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
        return PretrainConfig.from_dict(saved)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path} is corrupt ({exc}): start a new --out") from None
