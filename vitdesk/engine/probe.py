"""The machine side of the planner: cores, memory, GPU, and a measured training step.

:func:`measure_step` times a few real optimizer steps of a model at a given image size,
patch and batch on this machine, so :func:`vitdesk.engine.plan.plan_for_data` estimates
from what this machine does, not from a table.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitdesk.config import RunConfig
from vitdesk.engine.plan import DataPlan, Fingerprint, Plan, RunCosts


@dataclass(frozen=True)
class Machine:
    """What the planner needs to know about the machine."""

    device: str  # cpu | cuda
    cores: int
    memory_mb: float | None
    gpu: str | None = None
    gpu_memory_mb: float | None = None

    def describe(self) -> str:
        text = f"{self.cores} CPU cores"
        if self.memory_mb:
            text += f", {self.memory_mb / 1024:.0f} GB memory"
        if self.gpu:
            text += f", {self.gpu} ({(self.gpu_memory_mb or 0) / 1024:.0f} GB)"
        return text + f"; training on {self.device}"


def probe_machine(device: str = "auto") -> Machine:
    """Cores, memory and the GPU (if any and asked for)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        memory = None
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    gpu = gpu_mem = None
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu, gpu_mem = props.name, props.total_memory / 2**20
    return Machine("cuda" if cuda else "cpu", os.cpu_count() or 1, memory, gpu, gpu_mem)


@functools.lru_cache(maxsize=32)
def measure_step(name: str, img_size: int, patch: int, batch: int, device: str = "cpu",
                 steps: int = 5, warmup: int = 2, threads: int | None = None
                 ) -> tuple[float, float]:
    """(seconds per optimizer step, peak memory in MB) of ``name`` from random weights.

    ``threads``: the torch CPU threads to time with (None: the current number); a part
    of the cache key, since a step on two threads of a busy 2-core machine can take ten
    times as long as on one.

    ``warmup`` untimed steps (allocator and thread pools settle), then the median of
    ``steps`` timed steps (forward, backward, AdamW). Peak memory is measured on CUDA;
    on a CPU it is the process's peak resident size after these steps (libraries, model,
    optimizer and activations together), or the estimate from the weights and
    activations when that is larger.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _time_steps(name, img_size, patch, batch, device, steps, warmup)
    finally:
        torch.set_num_threads(before)


def _time_steps(name: str, img_size: int, patch: int, batch: int, device: str, steps: int,
                warmup: int) -> tuple[float, float]:
    from vitdesk.config import patch_size_of
    from vitdesk.engine.models import create_model

    own = patch_size_of(name)
    kwargs = {"patch_size": patch} if patch and patch != own else {}
    dev = torch.device(device)
    model = create_model(name, 2, img_size, **kwargs).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    y = torch.randint(0, 2, (batch,), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = max(_cpu_peak_mb(model, batch, img_size, patch or own or 16), _rss_peak_mb())
    return times[len(times) // 2], peak


def measure_checkpoint_costs(out: str | Path, name: str, img_size: int, patch: int
                             ) -> tuple[float, float]:
    """(seconds per epoch for the history, metrics and best-checkpoint writes, seconds
    for one ``last`` checkpoint with its optimizer state), written atomically (fsync) as
    the run writes them, on the disk of ``out``. The best checkpoint is counted at a
    third of the epochs (about how often validation improves on a short run)."""
    import shutil
    import tempfile

    from vitdesk.config import patch_size_of
    from vitdesk.engine import checkpoint as ckpt
    from vitdesk.engine.models import create_model
    from vitdesk.fileio import atomic_write_text

    own = patch_size_of(name)
    kwargs = {"patch_size": patch} if patch and patch != own else {}
    model = create_model(name, 2, img_size, **kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(1, 3, img_size, img_size)).sum().backward()
    opt.step()
    parent = Path(out).expanduser().absolute()
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    folder = Path(tempfile.mkdtemp(prefix=".vitdesk-probe-", dir=parent))
    try:
        last, epoch = [], []
        for i in range(3):
            t0 = time.perf_counter()
            ckpt.save_checkpoint(folder, "last", model.state_dict(), {"global_step": i},
                                 {"optimizer": opt.state_dict(), "rng": ckpt.rng_state()})
            t1 = time.perf_counter()
            ckpt.save_checkpoint(folder, "best", model.state_dict(), {"global_step": i})
            t2 = time.perf_counter()
            for f in ("history.jsonl", "metrics.json"):
                atomic_write_text(folder / f, "{}\n" * (i + 1))
            last.append(t1 - t0)
            epoch.append((t2 - t1) / 3 + time.perf_counter() - t2)
        return sorted(epoch)[1], sorted(last)[1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure_item_costs(cfg: RunConfig, records: list, img_size: int
                       ) -> tuple[float, float, float]:
    """(seconds to read one image from disk, to make one augmented training image from
    the cache, one validation image from the cache), timed on ``records`` (a few of the
    run's images) through the run's own dataset, windows and augmentation."""
    if not records:
        return 0.0, 0.0, 0.0
    from vitdesk.data.dataset import SliceDataset
    from vitdesk.engine.models import model_norm_stats
    from vitdesk.engine.plan import AUTO_MODELS
    from vitdesk.engine.run import _augment_config
    from vitdesk.imaging.windowing import WindowSpec

    name = cfg.model.name if cfg.model.name != "auto" else AUTO_MODELS[0][0]
    mean, std = model_norm_stats(name)
    classes = sorted({r.label for r in records if r.label is not None})
    recs = [r for r in records if r.label is not None]
    window = WindowSpec.parse(cfg.data.window, clahe=cfg.data.clahe)
    train = SliceDataset(recs, classes, window, img_size, mean, std,
                         augment=_augment_config(cfg))
    val = SliceDataset(recs, classes, window, img_size, mean, std)
    n = max(1, len(recs))

    def timed(ds: SliceDataset, epoch: int) -> float:
        ds.set_epoch(epoch)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        return (time.perf_counter() - t0) / n

    first = timed(train, 0)  # reads the files and fills the cache
    timed(val, 0)
    item = min(timed(train, 1), timed(train, 2))
    val_item = min(timed(val, 1), timed(val, 2))
    return max(0.0, first - item), item, val_item


def _rss_peak_mb() -> float:
    """This process's peak resident size so far (0 where the platform does not say)."""
    try:
        import resource
        import sys

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 2**20 if sys.platform == "darwin" else kb / 1024  # macOS: bytes
    except (ImportError, OSError):
        return 0.0


def _cpu_peak_mb(model: torch.nn.Module, batch: int, img: int, patch: int) -> float:
    """Weights, gradients and two AdamW moments, plus the activations a ViT keeps for
    backward (about 30 floats per token and width per block, and its attention maps)."""
    params = sum(p.numel() for p in model.parameters())
    tokens = (img // patch) ** 2 + 1
    blocks = getattr(model, "blocks", None)
    depth = len(blocks) if blocks is not None else 4
    width = int(getattr(model, "embed_dim", 64))
    heads = int(getattr(blocks[0].attn, "num_heads", 4)) if blocks is not None else 0
    acts = batch * depth * (30 * tokens * width + 3 * heads * tokens * tokens)
    return (4 * params + acts) * 4 / 2**20 + 200  # + the interpreter and libraries


def plan_auto(cfg: RunConfig, *, budget_s: float | None, explicit: set[str],
              fingerprint: Fingerprint | None = None) -> tuple[DataPlan, Machine]:
    """The planner on this machine: fingerprint ``cfg.data.source``, probe the machine,
    measure the candidates' steps and fill in the run (:func:`plan_for_data`)."""
    from vitdesk.config import patch_size_of
    from vitdesk.engine.plan import (
        AUTO_MODELS,
        CONV_STEM_NAMES,
        choose_geometry,
        data_fingerprint,
        plan_for_data,
    )

    machine = probe_machine(cfg.device)
    sampled: list = []
    fp = fingerprint or data_fingerprint(cfg.data.source, patient_id=cfg.data.patient_id,
                                         sampled=sampled)
    threads = torch.get_num_threads()

    def step(name: str, img: int, patch: int, batch: int) -> tuple[float, float]:
        return measure_step(name, img, patch, batch, machine.device, threads=threads)

    first = AUTO_MODELS[0][0] if cfg.model.name == "auto" else cfg.model.name
    img, patches, _why = choose_geometry(fp.native_px, patch_size_of(first), True,
                                         conv_stem=first in CONV_STEM_NAMES)
    try:
        writes, last = measure_checkpoint_costs(cfg.out, first, img, patches[-1])
        read, item, val_item = measure_item_costs(
            cfg, sampled, cfg.model.img_size if "model.img_size" in explicit else img)
        costs = RunCosts(writes, last, read, item, val_item)
        planned = plan_for_data(cfg, fp, budget_s=budget_s, step_seconds=step,
                                explicit=explicit, device=machine.device, costs=costs,
                                memory_mb=(machine.gpu_memory_mb if machine.device == "cuda"
                                           else machine.memory_mb))
    finally:
        torch.set_num_threads(threads)
    return planned, machine


def plan_with_budget(cfg: RunConfig, budget: str | float | None, *,
                     cancel: Any = None, listener: Any = None) -> Plan:
    """What ``vitdesk plan --data SRC --budget B`` prints, for ``cfg`` (the workbench's
    form): the planner chooses the model, sizes, batch and epochs (``model.name`` auto),
    then every rule of :func:`vitdesk.engine.plan.plan_run` applies.

    Raises:
        ConfigError: a bad budget, or a run the rules refuse.
    """
    from vitdesk.engine.plan import parse_budget, plan_run

    budget_s = parse_budget(budget)
    cfg = RunConfig.from_dict(cfg.to_dict())
    cfg.model.name = "auto"
    planned, _machine = plan_auto(cfg, budget_s=budget_s, explicit=set())
    plan = plan_run(planned.cfg, check_files=True)
    plan.reasons, plan.estimate = planned.reasons, planned.estimate
    return plan
