"""The trainer: staged fine-tuning of a ViT on any torch Dataset of ``(x, y)``.

A plain object without Qt. It emits :mod:`vitdesk.engine.events` to any number of
listeners and calls ``cancel.check()`` before every optimizer step (cancel and
pause). Data order is a function of ``(seed, epoch)`` and every piece of state
(optimizer, schedule, scaler, EMA, RNGs, position in the epoch) goes into the
``last`` checkpoint, so ``resume`` continues exactly where the run stopped.
Under ``torchrun`` it shards data per rank, wraps the model in DDP and all-reduces
metrics; only rank 0 writes files and emits events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from vitdesk.config import RunConfig, StageConfig
from vitdesk.engine import checkpoint as ckpt
from vitdesk.engine.device import amp_dtype, grad_scaler
from vitdesk.engine.distill import Distiller, TeacherAtOwnSize  # noqa: F401 - re-exported
from vitdesk.engine.events import (
    CheckpointSaved,
    EpochEnded,
    StageStarted,
    StepDone,
    TrainingDone,
    TrainingFailed,
)
from vitdesk.engine.models import count_trainable
from vitdesk.engine.plan import LAST_CHECKPOINT_S
from vitdesk.engine.plan import distill_mode as plan_distill_mode
from vitdesk.engine.recipe import (
    apply_stage,
    build_optimizer,
    build_scheduler,
    current_lr,
    steps_per_epoch,
)
from vitdesk.errors import Cancelled, DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, emit


# ---- distributed ----------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Rank and world size (1 process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def all_reduce_sum(values: Sequence[float], dist: DistInfo, device: torch.device) -> list[float]:
    """Sum plain numbers over ranks (a no-op for one process)."""
    if not dist.active:
        return [float(v) for v in values]
    import torch.distributed as tdist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


# ---- data order -------------------------------------------------------------------------
class EpochSampler(Sampler[int]):
    """Indices for one epoch as a pure function of ``(seed, epoch)``, sharded by rank.

    ``weights`` switches to class-balanced sampling with replacement. ``start`` skips
    the first indices of this rank's shard (resuming in the middle of an epoch).
    Padding to a multiple of the world size follows DistributedSampler.
    """

    def __init__(self, n: int, seed: int, dist: DistInfo = DistInfo(),
                 weights: torch.Tensor | None = None, shuffle: bool = True) -> None:
        self.n, self.seed, self.dist, self.weights, self.shuffle = n, seed, dist, weights, shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.weights is not None:
            idx = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        world = self.dist.world
        total = math.ceil(len(idx) / world) * world
        idx += idx[: total - len(idx)]
        return idx[self.dist.rank::world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.dist.world) - self.start)

    def shard_len(self) -> int:
        return math.ceil(self.n / self.dist.world)


def dataset_targets(ds: Dataset) -> list[int]:
    """Integer labels of a dataset without decoding images where possible (-1: none)."""
    if isinstance(ds, torch.utils.data.ConcatDataset):
        return [t for part in ds.datasets for t in dataset_targets(part)]
    for attr in ("targets", "labels"):
        t = getattr(ds, attr, None)
        if t is not None:
            return [int(v) for v in (t.tolist() if hasattr(t, "tolist") else t)]
    tensors = getattr(ds, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        return [int(v) for v in tensors[1].tolist()]
    records, classes = getattr(ds, "records", None), getattr(ds, "classes", None)
    if records is not None and classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        return [index.get(r.label, -1) for r in records]
    if isinstance(ds, torch.utils.data.Subset):
        inner = dataset_targets(ds.dataset)
        return [inner[i] for i in ds.indices]
    return [int(ds[i][1]) for i in range(len(ds))]


# ---- losses ---------------------------------------------------------------------------


def class_weights(targets: list[int], n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (absent classes get 0)."""
    counts = np.bincount([t for t in targets if t >= 0], minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(w, dtype=torch.float32)


# ---- hooks: extra batches and loss terms ------------------------------------------------
@dataclass
class StepContext:
    """What a loss term sees of one training step (on the training device)."""

    model: nn.Module  # the unwrapped model (DDP's module)
    x: torch.Tensor  # the batch as fed to the model (after mixup, extra rows included)
    target: torch.Tensor  # integer labels before mixup (-1: no label)
    logits: torch.Tensor | tuple
    step: int  # batch index over the whole run (data order, deterministic on resume)
    progress: float  # optimizer updates done / planned, 0..1 (schedules such as DANN's)


class TrainHook:
    """A plug-in of the training step; the trainer knows none by name.

    ``extra_batch`` rows are appended to each training batch (e.g. a rehearsal buffer);
    ``loss`` terms are added to the loss (EWC, a domain classifier); ``parameters`` are
    trained with the model, in an optimizer group of their own at ``lr_scale`` times the
    stage's learning rate without weight decay. Every method is optional.
    """

    lr_scale: float = 1.0

    def extra_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rows ``(x, y)`` to append to the batch of ``step`` (CPU tensors), or None."""
        return None

    def loss(self, ctx: StepContext) -> torch.Tensor | None:
        """A term added to this step's loss, or None."""
        return None

    def parameters(self) -> list[nn.Parameter]:
        """Parameters of the hook itself that train with the model."""
        return []

    def to(self, device: torch.device) -> TrainHook:
        """Move what the hook holds to the training device."""
        return self

    def state_dict(self) -> dict[str, Any]:
        """What the ``last`` checkpoint keeps of the hook (its trained parameters)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume."""


# ---- state ----------------------------------------------------------------------------
@dataclass
class TrainState:
    """Where the run is: the next stage/epoch/batch to do, and the running bests."""

    stage: int = 0
    epoch: int = 0  # next epoch within the stage
    batch: int = 0  # batches of this epoch already consumed (resume mid-epoch)
    global_step: int = 0  # optimizer updates over the whole run
    stage_step: int = 0  # optimizer updates in the current stage (the schedule's t)
    epochs_done: int = 0  # over the whole run: the data-order epoch index
    epoch_loss_sum: float = 0.0
    epoch_count: int = 0
    best_val_loss: float = math.inf
    best_val_acc: float = math.nan
    bad_epochs: int = 0
    finished: bool = False


class Trainer:
    """Runs the stage plan of ``cfg`` on ``model``; see the module docstring."""

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        train_ds: Dataset,
        val_ds: Dataset | None,
        classes: Sequence[str],
        device: torch.device,
        run_dir: Path | None,
        listeners: Sequence[Listener] = (),
        cancel: CancelToken = NEVER,
        dist: DistInfo = DistInfo(),
        teacher: nn.Module | None = None,
        meta: dict[str, Any] | None = None,
        distill_mode: str | None = None,
        unlabelled_ds: Dataset | None = None,
        hooks: Sequence[TrainHook] = (),
    ) -> None:
        self.cfg = cfg
        self.hooks = [h.to(device) for h in hooks]
        self.stages: list[StageConfig] = cfg.stage_plan()
        self.model = model.to(device)
        if unlabelled_ds is not None and len(unlabelled_ds):
            if teacher is None:
                raise ValueError("unlabelled training images need a teacher to label them")
            # labelled first, then the teacher-only images (target -1): one epoch sees both
            train_ds = torch.utils.data.ConcatDataset([train_ds, unlabelled_ds])
        self.train_ds, self.val_ds = train_ds, val_ds
        self.classes = list(classes)
        self.device = device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.listeners = list(listeners) if dist.main else []
        self.cancel = cancel
        self.dist = dist
        self.meta = dict(meta or {})
        self.state = TrainState()
        self.amp_dtype = amp_dtype(cfg.amp, device)
        self.scaler = grad_scaler(self.amp_dtype, device)
        d = cfg.data
        n_cls = len(self.classes)
        targets = dataset_targets(train_ds) if d.balance != "none" else []
        weights = None
        if d.balance == "sampler":
            cw = class_weights(targets, n_cls)
            # an unlabelled image is drawn as often as an average labelled one
            mean_w = float(np.mean([float(cw[t]) for t in targets if t >= 0] or [1.0]))
            weights = torch.tensor([float(cw[t]) if t >= 0 else mean_w for t in targets])
        self.sampler = EpochSampler(len(train_ds), cfg.seed, dist, weights=weights)
        self.loss_weights = (class_weights(targets, n_cls).to(device)
                             if d.balance == "loss" else None)
        self.mixup = None
        if d.mixup > 0 or d.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=d.mixup, cutmix_alpha=d.cutmix,
                               label_smoothing=d.label_smoothing, num_classes=n_cls)
        self.distiller = None
        if teacher is not None:
            mode = plan_distill_mode(cfg.model.name, distill_mode or cfg.teacher.mode)
            self.distiller = Distiller(teacher.to(device), cfg.teacher.temperature,
                                       cfg.teacher.alpha, mode)
            if hasattr(self.model, "set_distilled_training"):
                # training forward returns (cls, dist): dist learns from the teacher
                self.model.set_distilled_training(True)
        self.ema = None
        if cfg.model.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.model.ema_decay, device=device)
        if cfg.model.grad_checkpointing and hasattr(self.model, "set_grad_checkpointing"):
            self.model.set_grad_checkpointing(True)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self._resume_state: dict[str, Any] | None = None
        self._last_saved = time.perf_counter()  # when ``last`` was written (or the run began)

    # ---- data ------------------------------------------------------------------------
    def _loader(self, ds: Dataset, sampler: Sampler, seed_epoch: int) -> DataLoader:
        d = self.cfg.data
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + seed_epoch)
        return DataLoader(ds, batch_size=d.batch_size, sampler=sampler, num_workers=d.workers,
                          pin_memory=self.device.type == "cuda", drop_last=False, generator=g,
                          persistent_workers=False)

    def _val_indices(self) -> list[int]:
        return list(range(len(self.val_ds)))[self.dist.rank::self.dist.world]

    # ---- losses ---------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ls = self.cfg.data.label_smoothing
        logits = logits.float()
        if target.ndim == 2:  # soft targets (mixup / cutmix)
            logp = F.log_softmax(logits, dim=-1)
            if self.loss_weights is not None:
                per = -(target * logp * self.loss_weights).sum(-1)
                return per.sum() / (target * self.loss_weights).sum().clamp_min(1e-8)
            return (-(target * logp).sum(-1)).mean()
        labelled = target >= 0
        if not bool(labelled.all()):
            # teacher-only images (target -1) add nothing here; a batch without any label
            # gives 0 with a graph so the teacher term still trains the student
            if not bool(labelled.any()):
                return logits.sum() * 0.0
            logits, target = logits[labelled], target[labelled]
        # torch's fused label smoothing: the same loss as timm's LabelSmoothingCrossEntropy
        # (checked in tests), with class weights, in one kernel
        return F.cross_entropy(logits, target, weight=self.loss_weights, label_smoothing=ls)

    # ---- resume ---------------------------------------------------------------------
    def load_resume(self, cp: ckpt.Checkpoint) -> None:
        """Restore model weights and run state from a ``last`` checkpoint."""
        self.model.load_state_dict(cp.weights)
        self.state = TrainState(**cp.meta["train_state"])
        self._resume_state = cp.state

    def _restore_stage_state(self) -> None:
        rs = self._resume_state
        if not rs:
            return
        if rs.get("optimizer") is not None:
            self.optimizer.load_state_dict(rs["optimizer"])
        if rs.get("scheduler") is not None:
            self.scheduler.load_state_dict(rs["scheduler"])
        if rs.get("scaler"):
            self.scaler.load_state_dict(rs["scaler"])
        if self.ema is not None and rs.get("ema") is not None:
            self.ema.module.load_state_dict(rs["ema"])
        for hook, hs in zip(self.hooks, rs.get("hooks") or [], strict=False):
            if hs:
                hook.load_state_dict(hs)
        if rs.get("rng") is not None:
            ckpt.set_rng_state(rs["rng"])
        self._resume_state = None

    # ---- checkpoints ----------------------------------------------------------------
    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _meta(self) -> dict[str, Any]:
        return dict(self.meta, classes=self.classes, train_state=asdict(self.state),
                    global_step=self.state.global_step)

    def save_last(self) -> None:
        if self.run_dir is None or not self.dist.main:
            return
        state = {
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "rng": ckpt.rng_state(),
            "hooks": [h.state_dict() for h in self.hooks],
        }
        path = ckpt.save_checkpoint(self.run_dir / "checkpoints", "last",
                                    self.model.state_dict(), self._meta(), state)
        self._last_saved = time.perf_counter()
        emit(self.listeners, CheckpointSaved(str(path), "last"))

    def _save_best(self) -> None:
        if self.run_dir is None or not self.dist.main:
            return
        path = ckpt.save_checkpoint(self.run_dir / "checkpoints", "best",
                                    self._eval_model().state_dict(), self._meta())
        emit(self.listeners, CheckpointSaved(str(path), "best"))

    # ---- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Validation loss (plain cross-entropy) and accuracy, all-reduced over ranks."""
        if self.val_ds is None or len(self.val_ds) == 0:
            return math.nan, math.nan
        model = self._eval_model()
        was = model.training
        model.eval()
        loader = DataLoader(torch.utils.data.Subset(self.val_ds, self._val_indices()),
                            batch_size=self.cfg.data.batch_size, shuffle=False,
                            num_workers=self.cfg.data.workers,
                            # own generator: validation must not draw from the global RNG
                            generator=torch.Generator().manual_seed(self.cfg.seed),
                            pin_memory=self.device.type == "cuda")
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        n = 0
        for x, y in loader:
            self.cancel.check()
            x = x.to(self.device, non_blocking=True)
            y = torch.as_tensor(y).to(self.device, non_blocking=True).long()
            keep = y >= 0
            with torch.autocast(self.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                logits = model(x)
            logits = logits.float()[keep]
            y = y[keep]
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum().double()
            n += int(y.numel())
        model.train(was)
        total_loss, total_correct, total_n = all_reduce_sum(
            [loss_sum.item(), correct.item(), n], self.dist, self.device)
        if total_n == 0:
            return math.nan, math.nan
        return total_loss / total_n, total_correct / total_n

    # ---- training -------------------------------------------------------------------
    def _wrap(self) -> nn.Module:
        if not self.dist.active:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # rebuilt per stage: DDP records the trainable parameters when it is built
        return DDP(self.model, device_ids=ids)

    def fit(self) -> TrainState:
        """Train every remaining stage; returns the final state."""
        try:
            self._fit()
        except Cancelled:
            if self.optimizer is not None:
                self.save_last()
            emit(self.listeners, TrainingFailed("cancelled; resume with --resume"))
            raise
        except Exception as exc:
            emit(self.listeners, TrainingFailed(f"{type(exc).__name__}: {exc}"))
            raise
        self.state.finished = True
        best_acc = self.state.best_val_acc
        emit(self.listeners, TrainingDone(float(best_acc), float(self.state.best_val_loss),
                                          str(self.run_dir) if self.run_dir else ""))
        return self.state

    def _fit(self) -> None:
        cfg, st = self.cfg, self.state
        accum = cfg.optim.accumulation
        n_batches = math.ceil(self.sampler.shard_len() / cfg.data.batch_size)
        if n_batches == 0:
            raise DataError("the training set is empty: add labelled images")
        spe = steps_per_epoch(n_batches, accum)
        self._total_steps = max(1, spe * sum(s.epochs for s in self.stages))
        self._n_batches = n_batches
        for si in range(st.stage, len(self.stages)):
            stage = self.stages[si]
            if si != st.stage:  # entering a new stage
                st.stage, st.epoch, st.batch, st.stage_step = si, 0, 0, 0
                st.bad_epochs = 0
            apply_stage(self.model, stage)
            self.optimizer = build_optimizer(self.model, stage, cfg.optim)
            for hook in self.hooks:  # before the scheduler: it records every group's lr
                params = [p for p in hook.parameters() if p.requires_grad]
                if params:
                    self.optimizer.add_param_group({"params": params, "weight_decay": 0.0,
                                                    "lr": stage.lr * hook.lr_scale})
            self.scheduler = build_scheduler(self.optimizer, stage, spe, cfg.optim)
            self._restore_stage_state()
            self.scheduler.step_update(st.stage_step)
            net = self._wrap()
            emit(self.listeners, StageStarted(si, stage.name, stage.epochs,
                                              count_trainable(self.model)))
            stop_stage = False
            while st.epoch < stage.epochs and not stop_stage:
                stop_stage = self._epoch(net, si, n_batches, accum)
            st.stage, st.epoch, st.batch = si + 1, 0, 0
            st.stage_step = 0

    def _epoch(self, net: nn.Module, si: int, n_batches: int, accum: int) -> bool:
        cfg, st = self.cfg, self.state
        t0 = time.perf_counter()
        self.sampler.set_epoch(st.epochs_done, start=st.batch * cfg.data.batch_size)
        if hasattr(self.train_ds, "set_epoch"):  # per-sample augmentation RNG of this epoch
            self.train_ds.set_epoch(st.epochs_done)
        loader = self._loader(self.train_ds, self.sampler, st.epochs_done)
        net.train()
        dev = self.device
        loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
        seen = 0
        log_t, log_n = time.perf_counter(), 0
        it = iter(loader)
        m = st.batch
        amp_on = self.amp_dtype is not None
        while m < n_batches:
            group_start = m - m % accum
            group_len = min(accum, n_batches - group_start)
            if m == group_start:
                # safe point: nothing of this group consumed yet (RNG, data, grads)
                try:
                    self.cancel.check()
                except Cancelled:
                    st.batch = m
                    self._flush_epoch_loss(loss_acc, seen)
                    raise
            x, y = next(it)
            run_batch = st.epochs_done * n_batches + m  # the same index on resume
            for hook in self.hooks:
                extra = hook.extra_batch(run_batch)
                if extra is not None:
                    x = torch.cat([torch.as_tensor(x), extra[0].to(torch.as_tensor(x).dtype)])
                    y = torch.cat([torch.as_tensor(y).long(), extra[1].long()])
            x = x.to(dev, non_blocking=True)
            y = torch.as_tensor(y).to(dev, non_blocking=True).long()
            bs = int(y.shape[0])
            x_in, target = x, y
            if self.mixup is not None:
                if bs % 2 == 0:
                    x_in, target = self.mixup(x, y)
                else:  # timm's Mixup needs an even batch: smooth one-hot targets instead
                    from timm.data.mixup import mixup_target

                    target = mixup_target(y, len(self.classes), 1.0,
                                          cfg.data.label_smoothing)
            last_in_group = (m - group_start) == group_len - 1
            sync_ctx = (net.no_sync() if self.dist.active and not last_in_group
                        else _nullcontext())
            with sync_ctx:
                with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=amp_on):
                    logits = net(x_in)
                    # a distilled student returns (cls, dist): labels train the cls head
                    loss = self._loss(logits[0] if isinstance(logits, tuple) else logits,
                                      target)
                    if self.distiller is not None:
                        loss = self.distiller(x_in, logits, loss)
                    if self.hooks:
                        ctx = StepContext(self.model, x_in, y, logits, run_batch,
                                          st.global_step / self._total_steps)
                        for hook in self.hooks:
                            term = hook.loss(ctx)
                            if term is not None:
                                loss = loss + term
                self.scaler.scale(loss / group_len).backward()
            loss_acc += loss.detach().double() * bs
            seen += bs
            m += 1
            log_n += bs
            if last_in_group:
                self._optimizer_step()
                st.global_step += 1
                st.stage_step += 1
                self.scheduler.step_update(st.stage_step)
                if self.ema is not None:
                    self.ema.update(self.model, step=st.global_step)
                if self.listeners and (st.global_step % cfg.log_every == 0 or m == n_batches):
                    now = time.perf_counter()
                    emit(self.listeners, StepDone(si, st.epoch, st.stage_step, st.global_step,
                                                  float(loss.item()), current_lr(self.optimizer),
                                                  log_n / max(now - log_t, 1e-9)))
                    log_t, log_n = now, 0
        self._flush_epoch_loss(loss_acc, seen)
        st.batch = n_batches  # a cancel during validation resumes at validation, not training
        train_sum, train_n = all_reduce_sum([st.epoch_loss_sum, st.epoch_count], self.dist, dev)
        train_loss = train_sum / max(train_n, 1)
        val_loss, val_acc = self.evaluate()
        lr = current_lr(self.optimizer)
        seconds = time.perf_counter() - t0
        st.epoch += 1
        st.epochs_done += 1
        st.batch = 0
        st.epoch_loss_sum, st.epoch_count = 0.0, 0
        crit = val_loss if not math.isnan(val_loss) else train_loss
        improved = crit < st.best_val_loss - 1e-12
        if improved:
            st.best_val_loss = crit
            st.best_val_acc = val_acc
            st.bad_epochs = 0
        else:
            st.bad_epochs += 1
        emit(self.listeners, EpochEnded(si, st.epoch - 1, st.global_step, float(train_loss),
                                        float(val_loss), float(val_acc), lr, seconds))
        if improved:
            self._save_best()
        stage_stop = cfg.patience > 0 and st.bad_epochs >= cfg.patience
        # ``last`` (weights + optimizer state, fsynced) costs more than a short epoch:
        # written at a stage's end and at most every LAST_CHECKPOINT_S in between; a
        # cancel writes it at once (fit), so a stopped run always resumes where it stopped
        if (stage_stop or st.epoch >= self.stages[si].epochs
                or time.perf_counter() - self._last_saved >= LAST_CHECKPOINT_S):
            self.save_last()
        if stage_stop:
            st.bad_epochs = 0  # the next stage gets its own patience
        return stage_stop

    def _flush_epoch_loss(self, loss_acc: torch.Tensor, seen: int) -> None:
        if seen:
            self.state.epoch_loss_sum += float(loss_acc.item())
            self.state.epoch_count += seen

    def _optimizer_step(self) -> None:
        clip = self.cfg.optim.clip_grad
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
