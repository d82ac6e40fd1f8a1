"""A training run end to end: validate, build, train, write the run folder; load it back.

Run folder: ``config.toml`` (resolved), ``history.jsonl``, ``checkpoints/`` (last,
best), ``metrics.json``, ``env.json``, ``split.json``. Everything (config, data,
model, weights, teacher, resume checkpoint) is validated before the first byte is
written, so a failing run never clobbers a previous one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vitdesk.config import RunConfig, load_config, save_config
from vitdesk.data.source_refs import for_run_folder
from vitdesk.engine import checkpoint as ckpt
from vitdesk.engine.calibration import calibrate_run
from vitdesk.engine.device import amp_name, resolve_device, software_versions
from vitdesk.engine.distill import TeacherAtOwnSize
from vitdesk.engine.events import EpochEnded, TrainingDone
from vitdesk.engine.history import HISTORY, HistoryWriter
from vitdesk.engine.models import (
    adapt_state_dict,
    choose_attention_backend,
    create_model,
    is_distilled,
    model_norm_stats,
)
from vitdesk.engine.plan import (
    backbone_card_notices,
    plan_run,
    resolve_pool,  # noqa: F401 - the engine's name for it (tests, older callers)
    teacher_mismatch,
)
from vitdesk.engine.plan import distill_mode as plan_distill_mode
from vitdesk.engine.run_folder import check_out_folder, clear_dead_end
from vitdesk.engine.trainer import DistInfo, Trainer, dataset_targets
from vitdesk.engine.weights import (
    LoadReport,
    build_model,
    load_weights_into,
    read_state_dict,
    resolve_weights_path,
)
from vitdesk.errors import CheckpointError, ConfigError, DataError
from vitdesk.fileio import atomic_write_text
from vitdesk.imaging.windowing import WindowSpec
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, emit


@dataclass
class TrainData:
    """Datasets for a run when the caller builds them (tests, GUI): any ``(x, y)`` Datasets."""

    train: Dataset
    val: Dataset | None
    classes: list[str]
    test: Dataset | None = None
    splits: dict[str, Any] | None = None
    fingerprint: str = ""
    unlabelled: Dataset | None = None  # teacher-only images (``teacher.unlabelled``)
    target: Dataset | None = None  # unlabelled target-site images (``adapt.source``)


@dataclass
class LoadedRun:
    """A trained run ready for inference."""

    model: nn.Module
    cfg: RunConfig
    classes: list[str]
    window: WindowSpec
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    run_dir: Path = field(default_factory=Path)


# ---- listeners ---------------------------------------------------------------------------
class EpochHistory:
    """Listener: a fine-tuning epoch's row in ``history.jsonl`` (see HistoryWriter)."""

    def __init__(self, writer: HistoryWriter) -> None:
        self.writer = writer

    def __call__(self, ev: Any) -> None:
        if isinstance(ev, EpochEnded):
            self.writer.append({
                "stage": ev.stage, "epoch": ev.epoch, "step": ev.global_step,
                "train_loss": _num(ev.train_loss), "val_loss": _num(ev.val_loss),
                "val_acc": _num(ev.val_acc), "lr": ev.lr, "seconds": round(ev.seconds, 3)})


class MetricsWriter:
    """Writes ``metrics.json`` (best and final values) after every epoch and at the end."""

    def __init__(self, path: Path, classes: Sequence[str],
                 extra: dict[str, Any] | None = None) -> None:
        self.path, self.classes = path, list(classes)
        self.extra = dict(extra or {})  # e.g. the teacher run and distillation mode
        self.epochs: list[EpochEnded] = []
        if path.is_file():  # resumed run: keep what was recorded
            try:
                self.previous = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                self.previous = {}
            if not isinstance(self.previous, dict):
                self.previous = {}
        else:
            self.previous = {}

    def __call__(self, ev: Any) -> None:
        if isinstance(ev, EpochEnded):
            self.epochs.append(ev)
            self._write(done=False)
        elif isinstance(ev, TrainingDone):
            self._write(done=True, best=ev)

    def _write(self, done: bool, best: TrainingDone | None = None) -> None:
        last = self.epochs[-1] if self.epochs else None
        data = dict(self.previous)
        data.update(self.extra)
        data.update({
            "classes": self.classes,
            "finished": done,
            "epochs_this_session": len(self.epochs),
        })
        if last is not None:
            data["final"] = {"stage": last.stage, "epoch": last.epoch, "step": last.global_step,
                             "train_loss": _num(last.train_loss), "val_loss": _num(last.val_loss),
                             "val_acc": _num(last.val_acc)}
        if best is not None:
            data["best_val_acc"] = _num(best.best_val_acc)
            data["best_val_loss"] = _num(best.best_val_loss)
        atomic_write_text(self.path, json.dumps(data, indent=2))


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


# ---- helpers -----------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dist_from_env() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world=world)


def _init_dist(dist: DistInfo, device: torch.device) -> bool:
    import torch.distributed as tdist

    if not dist.active or tdist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def _augment_config(cfg: RunConfig) -> Any:
    """The data package's AugmentConfig from our flags (fields matched by name)."""
    if not cfg.data.augment:
        return None
    from vitdesk.data.augment import AugmentConfig

    d = cfg.data
    # per-sample augmentation RNG is seeded from (seed, epoch, index) by the data package
    ours = {"hflip": d.hflip, "rotate_deg": d.rotate_deg, "scale": d.scale,
            "intensity": d.intensity, "seed": cfg.seed}
    names = {f.name for f in dataclasses.fields(AugmentConfig)}
    return AugmentConfig(**{k: v for k, v in ours.items() if k in names})


def _build_data(cfg: RunConfig, mean: tuple, std: tuple, cancel: CancelToken,
                listeners: Sequence[Listener]) -> TrainData:
    from vitdesk.data.build import build_datasets  # lazy: the data package is heavy

    b = build_datasets(
        cfg.data.source, cfg.data.val_source or None, window=WindowSpec.parse(
            cfg.data.window, clahe=cfg.data.clahe),
        img_size=cfg.model.img_size, mean=mean, std=std, channels=3, seed=cfg.seed,
        fractions=tuple(cfg.data.fractions), augment=_augment_config(cfg),
        cancel=cancel, listener=list(listeners), patient_id=cfg.data.patient_id,
        fold=cfg.data.fold or None,
    )
    return TrainData(b.train, b.val, list(b.classes), test=b.test, splits=b.splits,
                     fingerprint=b.fingerprint)


def _build_unlabelled(cfg: RunConfig, data: TrainData, mean: tuple, std: tuple,
                      cancel: CancelToken, listeners: Sequence[Listener]) -> Dataset:
    """The ``teacher.unlabelled`` images, minus validation/test patients and labelled slices.

    Every slice of the source is read, labels ignored. A patient of the validation or
    test split is dropped so the student never sees it, even unlabelled; a slice that is
    already a labelled training slice is not added twice.
    """
    from vitdesk.data.dataset import SliceDataset
    from vitdesk.data.sources import load_records

    src = cfg.teacher.unlabelled
    try:
        records = load_records(src, cancel, list(listeners), require_labels=False,
                               min_classes=0)
    except DataError as exc:
        raise DataError(f"teacher.unlabelled: {exc}") from None
    held_out: set[str] = set()
    labelled: set[tuple[str, int]] = set()
    for name, recs in (data.splits or {}).items():
        for r in recs:
            if name == "train":
                labelled.add((str(Path(r.path).resolve()), r.frame))
            else:
                held_out.add(r.patient)
    keep = [dataclasses.replace(r, label=None) for r in records
            if r.patient not in held_out
            and (str(Path(r.path).resolve()), r.frame) not in labelled]
    dropped = len(records) - len(keep)
    if not keep:
        raise DataError(f"teacher.unlabelled {src}: no image is left once validation/test "
                        "patients and labelled slices are removed: point it at other images")
    if dropped:
        emit(list(listeners), Notice("train", (
            f"unlabelled images: {len(keep)} of {len(records)} used ({dropped} belong to "
            "validation/test patients or are labelled training slices)")))
    return SliceDataset(keep, list(data.classes), WindowSpec.parse(
        cfg.data.window, clahe=cfg.data.clahe), cfg.model.img_size, mean, std,
        augment=_augment_config(cfg))


def _check_data(data: TrainData) -> None:
    if len(data.classes) < 2:
        raise DataError(
            f"found {len(data.classes)} class(es) ({', '.join(data.classes) or 'none'}): a "
            "classifier needs at least 2 labelled classes"
        )
    if data.train is None or len(data.train) == 0:
        raise DataError("the training split is empty: add labelled images")
    present = {t for t in dataset_targets(data.train) if t >= 0}
    if len(present) < 2:
        names = [data.classes[t] for t in sorted(present)]
        raise DataError(
            f"the training split holds only class {', '.join(names) or 'none'}: label "
            "examples of at least 2 classes"
        )


def _env_info(cfg: RunConfig, device: torch.device, attention: dict, dist: DistInfo,
              weights_report: dict, amp: str) -> dict:
    info = {
        **software_versions(), "os": platform.system(), "machine": platform.machine(),
        "seed": cfg.seed, "device": str(device), "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": dist.world, "amp": amp, "attention": attention,
        "weights": weights_report,
    }
    return info


# ---- the run -----------------------------------------------------------------------------
def _recorded_pool(run: Path) -> str:
    """The pool a run was built with: its checkpoint's architecture must be rebuilt."""
    try:
        return load_config(run / "config.toml").model.pool
    except ConfigError:
        return "auto"


def _check_backbone_card(cfg: RunConfig, listeners: Sequence[Listener]) -> None:
    """Emit :func:`vitdesk.engine.plan.backbone_card_notices` as notices."""
    for text in backbone_card_notices(cfg):
        emit(list(listeners), Notice("train", text))


def train(
    cfg: RunConfig,
    cancel: CancelToken = NEVER,
    listeners: Sequence[Listener] = (),
    *,
    data: TrainData | None = None,
    resume: bool = False,
    distill_mode: str | None = None,
    planned: bool = False,
    estimate: dict[str, float] | None = None,
    earlier: str | Dataset | None = None,
) -> Path:
    """Train ``cfg`` and return the run folder.

    Args:
        cfg: the run configuration (validated here).
        cancel: cooperative cancel/pause token, checked before every optimizer step.
        listeners: callables receiving the events of :mod:`vitdesk.engine.events`.
        data: prebuilt datasets; by default built from ``cfg.data`` with
            :func:`vitdesk.data.build.build_datasets`.
        resume: continue ``cfg.out`` from ``checkpoints/last``.
        distill_mode: ``soft``, ``hard`` or ``token`` with a teacher; overrides
            ``cfg.teacher.mode`` (default: :func:`vitdesk.engine.plan.distill_mode`; on
            resume the run's recorded mode).
        planned: ``cfg`` came out of :func:`vitdesk.engine.plan.plan_run` and its notices
            were shown; otherwise it is planned here and the notices go to ``listeners``.
        estimate: the planner's estimate (``seconds``, ``peak_memory_mb``, ...), kept in
            ``env.json`` beside the measured ``train_seconds``.
        earlier: with ``continual.continue_from``: the parent's training data (a source
            or a Dataset) for its rehearsal buffer and Fisher information when the parent
            folder lacks them; None: the source its ``split.json`` recorded.

    Raises:
        ConfigError, DataError, ModelError, CheckpointError: before anything is written.
        Cancelled: after ``checkpoints/last`` was written.
    """
    cfg.resolved().validate()  # a bad field is named before the folder is looked at
    out = Path(cfg.out).expanduser()
    folder_mode = check_out_folder(out, resume)
    if folder_mode == "restart":
        emit(list(listeners), Notice("train", (
            f"{out} holds no checkpoint (its run stopped before the first one): "
            + ("nothing to resume, " if resume else "") + "starting it again in place")))
        resume = False
    if distill_mode:
        cfg = RunConfig.from_dict(cfg.to_dict())
        cfg.teacher.mode = distill_mode
    notices: list[str] = []
    if planned or resume:  # a resumed run keeps its recorded config: no rule re-applies
        cfg = cfg.resolved().validate()
    else:
        plan = plan_run(cfg)
        cfg, notices = plan.cfg, plan.notices
    if resume:
        cfg.model.pool = _recorded_pool(out)
    dist = _dist_from_env()
    device = resolve_device(cfg.device, dist.rank if dist.active else 0)
    if cfg.model.attention == "flash":
        _check_flash(device)
    seed_everything(cfg.seed)
    mean, std = model_norm_stats(cfg.model.name)
    if data is None:
        data = _build_data(cfg, mean, std, cancel, listeners)
    _check_data(data)
    # on resume the checkpoint holds the weights: the original source may be gone
    model, report = _build_student(cfg, len(data.classes), resume)
    if not resume:
        for text in notices:
            emit(list(listeners), Notice("train", text))
        if is_distilled(model) and report.source not in ("none",) and report.missing:
            emit(list(listeners), Notice("train", (
                f"distilled student: {len(report.missing)} tensors start fresh "
                f"({', '.join(report.missing[:6])})")))
    resume_cp = None
    if resume:
        resume_cp = ckpt.load_checkpoint(out / "checkpoints", "last")
        if list(resume_cp.meta.get("classes", [])) != list(data.classes):
            raise CheckpointError(
                f"cannot resume {out}: it was trained on classes {resume_cp.meta.get('classes')}"
                f" but the data has {data.classes}"
            )
    teacher = None
    mode = None
    if cfg.teacher.run:
        recorded = (resume_cp.meta.get("teacher") or {}).get("mode") if resume_cp else None
        mode = plan_distill_mode(cfg.model.name, distill_mode or recorded or cfg.teacher.mode)
        teacher = _load_teacher(cfg, data.classes, device, mean, std)
        if cfg.teacher.unlabelled and data.unlabelled is None:
            data = dataclasses.replace(
                data, unlabelled=_build_unlabelled(cfg, data, mean, std, cancel, listeners))
    hooks: list[Any] = []
    more: dict[str, Any] = {}  # metrics.json / env.json records of continual and adapt
    if cfg.continual.continue_from:
        from vitdesk.engine.continual import prepare_continual

        cont = prepare_continual(cfg, out, data.classes, device,
                                 lambda p: load_run(p, device="cpu"), earlier=earlier,
                                 resume=resume, cancel=cancel, listeners=listeners)
        if not resume:  # the resume checkpoint holds the weights
            model.load_state_dict(cont.weights)
        hooks += cont.hooks
        more["continual"] = cont.info
    adapt = None
    if cfg.adapt.source or data.target is not None:
        from vitdesk.engine.dann import prepare_adapt

        adapt = prepare_adapt(cfg, data, model, mean, std,
                              _first_batch(data.train, cfg, torch.device("cpu")),
                              cancel=cancel, listeners=listeners)
        hooks.append(adapt.hook)
        more["adapt"] = adapt.info
    # ---- everything is valid: now write -------------------------------------------------
    created_pg = _init_dist(dist, device)
    try:
        meta = {"model": cfg.model.name, "img_size": cfg.model.img_size,
                "mean": list(mean), "std": list(std), "window": cfg.data.window}
        extra: dict[str, Any] = dict(more)
        if teacher is not None:
            extra["teacher"] = {"run": str(cfg.teacher.run), "mode": mode,
                                "temperature": cfg.teacher.temperature,
                                "alpha": cfg.teacher.alpha, "model": _teacher_name(cfg),
                                "img_size": int(getattr(teacher, "size", cfg.model.img_size))}
            if data.unlabelled is not None:
                extra["teacher"]["unlabelled_images"] = len(data.unlabelled)
            meta["teacher"] = extra["teacher"]
        run_listeners: list[Listener] = []
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            if folder_mode == "restart":
                clear_dead_end(out)
            history = HistoryWriter(out / HISTORY)
            if resume:
                history.truncate(resume_cp.meta["global_step"])
            else:
                # data paths as keyed fingerprints: a folder name may name a patient
                save_config(_parent_by_name(for_run_folder(cfg)), out / "config.toml")
                _write_split(out / "split.json", data)
            run_listeners = [EpochHistory(history),
                             MetricsWriter(out / "metrics.json", data.classes, extra)]
        trainer = Trainer(cfg, model, data.train, data.val, data.classes, device, out,
                          listeners=[*run_listeners, *listeners], cancel=cancel, dist=dist,
                          teacher=teacher, meta=meta, distill_mode=mode,
                          unlabelled_ds=data.unlabelled if teacher is not None else None,
                          hooks=hooks)
        if resume_cp is not None:
            trainer.load_resume(resume_cp)
        sample = _first_batch(data.train, cfg, device)
        attention = choose_attention_backend(model, sample, cfg.model.attention,
                                             trainer.amp_dtype)
        if dist.main:
            env = _env_info(cfg, device, attention, dist, report.to_dict(),
                            amp_name(trainer.amp_dtype))
            env["resumed"] = resume
            env.update(extra)
            if estimate:
                env["plan_estimate"] = dict(estimate)
            atomic_write_text(out / "env.json", json.dumps(env, indent=2))
        seed_everything(cfg.seed)  # the attention timing must not shift the run's RNG
        t0 = time.perf_counter()
        trainer.fit()
        if dist.main:
            env["train_seconds"] = round(time.perf_counter() - t0, 2)
            atomic_write_text(out / "env.json", json.dumps(env, indent=2))
            _calibrate_after_training(out, device, cancel)  # calibration.json (validation)
            if adapt is not None:
                _adapt_figures(out, data, adapt, device)
    finally:
        if created_pg:
            import torch.distributed as tdist

            tdist.destroy_process_group()
    return out


def _parent_by_name(cfg: RunConfig) -> RunConfig:
    """The parent run by its folder name only: its path is the user's and may say more."""
    if cfg.continual.continue_from:
        cfg.continual.continue_from = Path(cfg.continual.continue_from).name
    return cfg


def _adapt_figures(out: Path, data: TrainData, adapt: Any, device: torch.device) -> None:
    """Source test and target accuracy of the adapted run into ``metrics.json`` (the
    target's labels, when it has any, are used here only, never for training)."""
    from vitdesk.engine.dann import accuracy

    model = load_run(out, device=str(device)).model
    figures: dict[str, Any] = dict(adapt.info)
    if data.test is not None and len(data.test):
        figures["source_test_acc"] = _num(accuracy(model, data.test, device))
    if adapt.labelled is not None:
        figures["target_acc"] = _num(accuracy(model, adapt.labelled, device))
        figures["target_note"] = "on the unlabelled target slices adapted on (transductive)"
    try:
        doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = {}
    doc["adapt"] = figures
    atomic_write_text(out / "metrics.json", json.dumps(doc, indent=2))


def _calibrate_after_training(run_dir: Path, device: torch.device,
                              cancel: CancelToken = NEVER) -> Any:
    """The end-of-training step: calibrate the best checkpoint; a failure here only
    leaves the run uncalibrated (evaluate fits it later), it never fails the training."""
    from vitdesk.errors import Cancelled, VitdeskError

    try:
        return calibrate_run(load_run(run_dir, device=str(device)), cancel=cancel)
    except Cancelled:
        raise
    except (VitdeskError, OSError, ValueError, RuntimeError):
        return None


def _check_flash(device: torch.device) -> None:
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None or device.type != "cuda":
        raise ConfigError(
            "model.attention='flash' needs a CUDA GPU and the flash-attn package "
            "(pip install vitdesk[gpu]): use attention = 'auto'"
        )


def _first_batch(ds: Dataset, cfg: RunConfig, device: torch.device) -> torch.Tensor:
    n = min(cfg.data.batch_size, len(ds))
    xs = [ds[i][0] for i in range(n)]
    return torch.stack([torch.as_tensor(x) for x in xs]).to(device)


def _write_split(path: Path, data: TrainData) -> None:
    if data.splits:
        from vitdesk.data.splits import save_split

        save_split(data.splits, path)
        return
    sizes = {"train": len(data.train), "val": len(data.val) if data.val is not None else 0,
             "test": len(data.test) if data.test is not None else 0}
    atomic_write_text(path, json.dumps({"sizes": sizes, "classes": data.classes,
                                             "fingerprint": data.fingerprint}, indent=2))


def _build_student(cfg: RunConfig, n_classes: int, resume: bool) -> tuple[nn.Module, LoadReport]:
    """The model and its starting weights; ViT weights are adapted to a distilled model."""
    src = "none" if resume else (cfg.weights.pretrained or "none").strip()
    m = cfg.model
    if src.lower() == "none" and m.patch_size:  # the plan allows a patch size only here
        return (create_model(m.name, n_classes, m.img_size, m.drop_path, pool=m.pool,
                             patch_size=m.patch_size), LoadReport(source="none"))
    if src.lower() in ("none", "hub") or ("distilled" not in m.name and not m.patch_size):
        return build_model(m.name, n_classes, m.img_size, src, m.drop_path, pool=m.pool)
    path = resolve_weights_path(src)
    sd = read_state_dict(path)
    model = create_model(m.name, n_classes, m.img_size, m.drop_path, pool=m.pool,
                         patch_size=m.patch_size or None)
    # an MAE encoder has one prefix position and no dist token/head: those start fresh
    return model, load_weights_into(model, adapt_state_dict(model, sd), str(path))


def _teacher_name(cfg: RunConfig) -> str | None:
    try:
        return load_config(Path(cfg.teacher.run).expanduser() / "config.toml").model.name
    except (ConfigError, OSError):
        return None


def _load_teacher(cfg: RunConfig, classes: list[str], device: torch.device,
                  mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """The teacher run's model, seeing each batch at its own image size and
    normalisation (``mean``/``std``: the student's)."""
    t = load_run(cfg.teacher.run, device=str(device))
    if t.classes != list(classes):
        raise ConfigError(
            f"teacher run {cfg.teacher.run} has classes {t.classes}, the data has {classes}: "
            "distil from a teacher trained on the same classes"
        )
    problem = teacher_mismatch(cfg, cfg.teacher.run, t.cfg.data.window)
    if problem:
        raise ConfigError(problem)
    if (int(t.img_size) == int(cfg.model.img_size) and tuple(t.mean) == tuple(mean)
            and tuple(t.std) == tuple(std)):
        return t.model
    return TeacherAtOwnSize(t.model, t.img_size, mean, std, t.mean, t.std)


def load_run(run_dir: str | Path, device: str = "cpu", kind: str = "best",
             listener: Listener | None = None) -> LoadedRun:
    """Load a trained run (best checkpoint, else last) in eval mode.

    A corrupt ``best`` falls back to an intact ``last`` with a ``Notice`` to ``listener``
    (a warning when there is none); ``kind="last"`` loads ``last`` only.
    """
    run = Path(run_dir).expanduser()
    cfg_path = run / "config.toml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run} is not a vitdesk run folder (no config.toml)")
    cfg = load_config(cfg_path)
    folder = run / "checkpoints"

    def notice(msg: str) -> None:
        if listener is None:
            warnings.warn(msg, stacklevel=3)
        else:
            emit(listener, Notice("load run", msg))

    if kind == "best":
        cp, kind = ckpt.load_best_or_last(folder, with_state=False, notice=notice)
    else:
        cp = ckpt.load_checkpoint(folder, kind, with_state=False)
    classes = list(cp.meta.get("classes") or [])
    if len(classes) < 1:
        raise CheckpointError(f"{folder}/{kind}.json names no classes: the run is incomplete")
    model = create_model(cfg.model.name, len(classes), cfg.model.img_size, pool=cfg.model.pool,
                         patch_size=cfg.model.patch_size or None)
    try:
        model.load_state_dict(cp.weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint of {run} does not match its config ({exc})") from None
    dev = resolve_device(device) if device == "auto" else torch.device(device)
    model.to(dev).eval()
    mean = tuple(cp.meta.get("mean") or model_norm_stats(cfg.model.name)[0])
    std = tuple(cp.meta.get("std") or model_norm_stats(cfg.model.name)[1])
    window = WindowSpec.parse(cfg.data.window, clahe=cfg.data.clahe)
    return LoadedRun(model, cfg, classes, window, cfg.model.img_size, mean, std, run)
