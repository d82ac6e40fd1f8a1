"""Continual fine-tuning: a rehearsal buffer and elastic weight consolidation (EWC).

A run continued from a finished parent (``continual.continue_from``) trains on new data
while two :class:`~vitdesk.engine.trainer.TrainHook` plug-ins keep what the parent learnt:

- :class:`RehearsalHook` replays slices of the parent's training split (the *rehearsal
  buffer*, ``rehearsal.npz`` in the parent folder: preprocessed arrays and class
  indices, no paths and no identifiers, but pixel data; the folder's README says so);
- :class:`EWCPenalty` adds ``lambda / 2 * sum_i F_i (theta_i - theta_old_i)^2`` with the
  diagonal Fisher information ``F`` of the parent on its training data (Kirkpatrick et
  al. 2017), stored as ``ewc_fisher.safetensors`` in the parent folder.

Both files are made on demand from the parent's training split, so any finished run can
be continued.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from vitdesk.engine.trainer import StepContext, TrainHook
from vitdesk.errors import CheckpointError
from vitdesk.fileio import atomic_write_text
from vitdesk.jobs import NEVER, CancelToken

REHEARSAL_FILE = "rehearsal.npz"
FISHER_FILE = "ewc_fisher.safetensors"
README_FILE = "README.txt"
FISHER_SAMPLES = 256  # slices of the earlier training data the Fisher is averaged over
_README = (
    "{file}: {n} preprocessed training slices of this run (model-input arrays, "
    "{size}x{size} px) and their class indices, for rehearsal when a later run continues "
    "from this one (vitdesk train --continue). It holds PIXEL DATA of the training images "
    "(no file paths, no identifiers): delete it before sharing this folder if the images "
    "may not leave the site.\n"
)


# ---- rehearsal buffer -----------------------------------------------------------------
def select_rehearsal(targets: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` indices of ``targets`` balanced by class where the classes allow it.

    Classes take turns (in class-index order, each in a seeded shuffled order); a class
    that runs out leaves its turns to the others. Deterministic for ``(targets, n,
    seed)``; unlabelled entries (-1) are never chosen. Sorted.
    """
    t = np.asarray(list(targets), dtype=np.int64)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(t == c))) for c in sorted(set(t[t >= 0]))]
    chosen: list[int] = []
    n = min(int(n), int((t >= 0).sum()))
    while len(chosen) < n:
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(int(pool.pop(0)))
    return sorted(chosen)


@dataclass
class RehearsalBuffer:
    """Preprocessed slices ``x`` (N, C, S, S) float16 and class indices ``y`` (N,)."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def save(self, folder: Path, seed: int = 0) -> Path:
        """``rehearsal.npz`` in ``folder`` (written atomically) and the README line."""
        return _save_buffer(self, folder, seed)

    @classmethod
    def load(cls, folder: Path) -> RehearsalBuffer:
        path = Path(folder) / REHEARSAL_FILE
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["x"], z["y"], [str(c) for c in z["classes"]])
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path} is unreadable ({exc}): delete it and continue "
                                  "again to rebuild it") from None


def _readme(folder: Path, n: int, size: int) -> None:
    path = folder / README_FILE
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = [ln for ln in old.splitlines(keepends=True) if not ln.startswith(REHEARSAL_FILE)]
    atomic_write_text(path, "".join(lines) + _README.format(file=REHEARSAL_FILE, n=n,
                                                             size=size))


def build_rehearsal(ds: Dataset, targets: Sequence[int], n: int, seed: int,
                    classes: Sequence[str], cancel: CancelToken = NEVER) -> RehearsalBuffer:
    """The buffer of ``n`` class-balanced slices of ``ds`` (un-augmented model inputs)."""
    idx = select_rehearsal(targets, n, seed)
    xs = []
    for i in idx:
        cancel.check()
        xs.append(np.asarray(torch.as_tensor(ds[i][0]), dtype=np.float16))
    x = np.stack(xs) if xs else np.zeros((0, 3, 1, 1), np.float16)
    y = np.asarray([int(targets[i]) for i in idx], dtype=np.int64)
    return RehearsalBuffer(x, y, list(classes))


class RehearsalHook(TrainHook):
    """Appends ``per_batch`` buffer slices to every training batch, drawn by
    ``(seed, batch index)`` so a resumed run replays the same slices."""

    def __init__(self, buffer: RehearsalBuffer, per_batch: int, seed: int) -> None:
        if len(buffer) == 0:
            raise ValueError("empty rehearsal buffer")
        self.x = torch.from_numpy(buffer.x.astype(np.float32))
        self.y = torch.from_numpy(buffer.y.astype(np.int64))
        self.per_batch = max(1, min(int(per_batch), len(buffer)))
        self.seed = int(seed)

    def extra_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 17 + int(step))
        idx = torch.randperm(len(self.y), generator=g)[: self.per_batch]
        return self.x[idx], self.y[idx]


# ---- EWC --------------------------------------------------------------------------------
def fisher_diagonal(model: nn.Module, ds: Dataset, indices: Sequence[int],
                    device: torch.device, cancel: CancelToken = NEVER
                    ) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean over slices of ``(d log p(y|x) / d theta)^2``.

    One slice per backward pass (the square of a batch gradient is not the mean of the
    squares); labels from ``ds``. Parameters only (not buffers), float32 on the CPU.
    """
    was = model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters()}
    for p in params.values():
        p.requires_grad_(True)
    acc = {n: torch.zeros_like(p, device="cpu", dtype=torch.float32) for n, p in params.items()}
    n_used = 0
    for i in indices:
        cancel.check()
        x, y = ds[i]
        if int(y) < 0:
            continue
        model.zero_grad(set_to_none=True)
        logits = model(torch.as_tensor(x)[None].to(device))
        if isinstance(logits, tuple):
            logits = logits[0]
        F.cross_entropy(logits.float(), torch.tensor([int(y)], device=device)).backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n] += p.grad.detach().float().cpu() ** 2
        n_used += 1
    model.zero_grad(set_to_none=True)
    model.train(was)
    return {n: a / max(1, n_used) for n, a in acc.items()}


def save_fisher(fisher: dict[str, torch.Tensor], folder: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(folder) / FISHER_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in fisher.items()}, str(tmp),
              metadata={"kind": "vitdesk-ewc-fisher-1"})
    tmp.replace(path)
    return path


def load_fisher(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(folder) / FISHER_FILE
    try:
        return load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}): delete it and continue again "
                              "to rebuild it") from None


class EWCPenalty(TrainHook):
    """``lam / 2 * sum F (theta - theta_old)^2`` over the parameters that have a Fisher."""

    def __init__(self, fisher: dict[str, torch.Tensor], theta_old: dict[str, torch.Tensor],
                 lam: float) -> None:
        self.lam = float(lam)
        keys = sorted(set(fisher) & set(theta_old))
        self.fisher = {k: fisher[k].detach().float() for k in keys}
        self.theta = {k: theta_old[k].detach().float().clone() for k in keys}

    def to(self, device: torch.device) -> EWCPenalty:
        self.fisher = {k: v.to(device) for k, v in self.fisher.items()}
        self.theta = {k: v.to(device) for k, v in self.theta.items()}
        return self

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The penalty for ``model``'s current parameters (with a graph)."""
        total = None
        for name, p in model.named_parameters():
            f = self.fisher.get(name)
            if f is None:
                continue
            term = (f * (p.float() - self.theta[name]) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.lam * total

    def loss(self, ctx: StepContext) -> torch.Tensor:
        return self.penalty(ctx.model)


# ---- the parent's files, on demand ---------------------------------------------------------
def parent_info(parent: Path) -> dict:
    """What :mod:`vitdesk.engine.run` records of the parent (no paths)."""
    info = {"run": parent.name}
    try:
        m = json.loads((parent / "metrics.json").read_text(encoding="utf-8"))
        info["best_val_acc"] = m.get("best_val_acc")
    except (OSError, ValueError):
        pass
    return info


@dataclass
class ContinualSetup:
    """What :func:`prepare_continual` hands the run: starting weights, hooks, record."""

    parent: Path
    weights: dict[str, torch.Tensor]
    hooks: list[TrainHook]
    info: dict


def _buffer_fits(buf: RehearsalBuffer, n: int, classes: Sequence[str], img_size: int,
                 seed: int, stored_seed: int | None) -> bool:
    return (len(buf) == n and buf.classes == list(classes) and buf.x.shape[-1] == img_size
            and stored_seed == seed)


def _stored_seed(folder: Path) -> int | None:
    try:
        with np.load(folder / REHEARSAL_FILE, allow_pickle=False) as z:
            return int(z["seed"]) if "seed" in z else None
    except (OSError, ValueError, KeyError):
        return None


def parent_training_data(parent: Path, loaded: object, earlier: object,
                         cancel: CancelToken = NEVER, listener: object = None
                         ) -> tuple[Dataset, list[int]]:
    """The parent's training split, preprocessed as the parent saw it (no augmentation).

    ``earlier``: a Dataset of it (tests, the GUI), the data source it was trained on, or
    None (the source the parent's ``split.json`` recorded, when this installation knows it).
    """
    from vitdesk.engine.trainer import dataset_targets
    from vitdesk.errors import DataError

    if isinstance(earlier, Dataset):
        return earlier, dataset_targets(earlier)
    from vitdesk.data.dataset import SliceDataset
    from vitdesk.data.splits import load_split

    try:
        recs = load_split(parent / "split.json", data_src=earlier)["train"]
    except (DataError, KeyError) as exc:
        raise DataError(f"continual: the training data of run '{parent.name}' is needed for "
                        f"its rehearsal buffer / Fisher information and was not found ({exc}):"
                        " give it with --earlier SRC") from None
    lr = loaded
    ds = SliceDataset(recs, lr.classes, lr.window, lr.img_size, lr.mean, lr.std, channels=3,
                      augment=None)
    return ds, list(ds.targets)


def prepare_continual(cfg: object, out: Path, classes: Sequence[str], device: torch.device,
                      load: Callable[[Path], object], *, earlier: object = None,
                      resume: bool = False,
                      cancel: CancelToken = NEVER, listeners: Sequence = ()
                      ) -> ContinualSetup:
    """Load the parent of ``cfg.continual.continue_from``, check it fits, and make the
    rehearsal and EWC hooks (their files in the parent folder are built on demand).
    ``load``: the run loader (:func:`vitdesk.engine.run.load_run`), given by the caller."""
    from vitdesk.engine.plan import check_parent_fit, parent_folder, parent_problem
    from vitdesk.errors import ConfigError
    from vitdesk.jobs import Notice, emit

    c = cfg.continual
    parent = parent_folder(c.continue_from, out)
    problem = parent_problem(parent)
    if problem:
        raise ConfigError(problem)
    lr = load(parent)
    if lr.classes != list(classes):
        raise ConfigError(f"continual.continue_from: run '{parent.name}' knows classes "
                          f"{lr.classes}, the new data {list(classes)}: continue with data of "
                          "the same classes")
    check_parent_fit(cfg, lr.cfg, parent.name)
    weights = {k: v.detach().clone() for k, v in lr.model.state_dict().items()}
    hooks: list[TrainHook] = []
    info: dict = {**parent_info(parent), "rehearsal": int(c.rehearsal), "ewc": float(c.ewc)}
    buffer = fisher = None
    if c.rehearsal > 0 and (parent / REHEARSAL_FILE).is_file():
        buffer = RehearsalBuffer.load(parent)
        if not _buffer_fits(buffer, c.rehearsal, lr.classes, lr.img_size, cfg.seed,
                            _stored_seed(parent)):
            buffer = None
    if c.ewc > 0 and (parent / FISHER_FILE).is_file():
        fisher = load_fisher(parent)
        if set(fisher) != {n for n, _ in lr.model.named_parameters()}:
            fisher = None
    if (c.rehearsal > 0 and buffer is None) or (c.ewc > 0 and fisher is None):
        ds, targets = parent_training_data(parent, lr, earlier, cancel, listeners)
        if c.rehearsal > 0 and buffer is None:
            buffer = build_rehearsal(ds, targets, c.rehearsal, cfg.seed, lr.classes, cancel)
            if not resume:
                _save_buffer(buffer, parent, cfg.seed)
                emit(list(listeners), Notice("train", (
                    f"rehearsal buffer: {len(buffer)} slices of run '{parent.name}' saved in "
                    f"its folder ({REHEARSAL_FILE}: pixel data, see its README.txt)")))
        if c.ewc > 0 and fisher is None:
            idx = select_rehearsal(targets, FISHER_SAMPLES, cfg.seed)
            fisher = fisher_diagonal(lr.model.to(device), ds, idx, device, cancel)
            save_fisher(fisher, parent)
    if buffer is not None:
        if len(buffer) < c.rehearsal:
            emit(list(listeners), Notice("train", (
                f"rehearsal: run '{parent.name}' has only {len(buffer)} training slices")))
        hooks.append(RehearsalHook(buffer, per_batch=max(1, cfg.data.batch_size // 2),
                                   seed=cfg.seed))
        info["rehearsal_slices"] = len(buffer)
    if fisher is not None:
        hooks.append(EWCPenalty(fisher, weights, c.ewc))
    return ContinualSetup(parent, weights, hooks, info)


def _save_buffer(buffer: RehearsalBuffer, folder: Path, seed: int) -> Path:
    path = Path(folder) / REHEARSAL_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, x=buffer.x.astype(np.float16), y=buffer.y.astype(np.int64),
                            classes=np.asarray(buffer.classes, dtype=np.str_),
                            seed=np.int64(seed))
    tmp.replace(path)
    _readme(Path(folder), len(buffer), int(buffer.x.shape[-1]))
    return path
