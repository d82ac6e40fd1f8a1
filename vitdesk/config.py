"""Typed run configuration: dataclasses, TOML load/save, CLI overrides, validation.

One :class:`RunConfig` describes a training run completely. It is validated once
(:meth:`RunConfig.validate`, raising :class:`ConfigError` naming the field and the
fix), resolved (:meth:`RunConfig.resolved`: the stage plan spelled out) and saved
as ``RUN/config.toml`` so a run can be reproduced from its folder alone.
No torch here: the config is read by light commands too.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitdesk.errors import ConfigError

ATTENTION_BACKENDS = ("auto", "sdpa", "eager", "flash")
AMP_MODES = ("auto", "off", "fp16", "bf16")
RECIPES = ("staged", "full", "head")
BALANCE = ("none", "sampler", "loss")
POOLS = ("auto", "token", "avg")
DEVICES = ("auto", "cpu", "cuda")
# Patch sizes of the registered test models (timm names carry theirs: "patch16").
TEST_MODEL_PATCH = {"vit_test_tiny": 8, "vit_test_tiny_distilled": 8,
                    "vit_test_tiny_convstem": 8}


@dataclass
class ModelConfig:
    """Which network and how it runs."""

    name: str = "vit_tiny_patch16_224"
    img_size: int = 224
    # A ViT's patch side; 0 = the model's own (its name's "patch16"). Another size is for
    # random weights only (vitdesk.engine.plan): small images need small patches.
    patch_size: int = 0
    drop_path: float = 0.1
    grad_checkpointing: bool = False
    attention: str = "auto"  # auto | sdpa | eager | flash
    ema: bool = False
    ema_decay: float = 0.9998
    # ViT classifier input: the class token or the mean of the patch tokens. auto = avg
    # from an MAE backbone (MAE never trains the class token; the paper fine-tunes with
    # avg) or random init (better on small sets), token for hub/file weights trained
    # with it; a distilled model always uses its two tokens. Resolved in config.toml.
    pool: str = "auto"


@dataclass
class WeightsConfig:
    """Where the starting weights come from: a file/run/MAE folder, ``hub`` or ``none``."""

    pretrained: str = "hub"


@dataclass
class DataConfig:
    """Data sources, windowing, batching and augmentation."""

    # Data paths as given. A run folder's config.toml holds them as keyed fingerprints
    # ("ref:..."; a folder name may name a patient), see vitdesk.data.source_refs.
    source: str = ""
    val_source: str = ""
    # A CSV patient_id column against the files' DICOM PatientID: "check" (must agree),
    # "csv" or "dicom" (which to trust); see vitdesk.data.label_checks.
    patient_id: str = "check"
    window: str = "soft_tissue"  # a WindowSpec label, e.g. "lung,mediastinum,bone"
    clahe: bool = False
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    # "i/k": this run is fold i of a k-fold cross-validation (vitdesk train --folds K):
    # test = fold i's patients, validation carved from the rest by the train:val ratio of
    # fractions. Empty: one split by fractions.
    fold: str = ""
    batch_size: int = 32
    workers: int = 0
    augment: bool = True
    hflip: bool = True
    rotate_deg: float = 10.0
    scale: float = 0.1  # random zoom +- this fraction
    intensity: float = 0.05  # random brightness/contrast jitter
    mixup: float = 0.0  # mixup alpha (0 = off)
    cutmix: float = 0.0  # cutmix alpha (0 = off)
    label_smoothing: float = 0.1
    balance: str = "none"  # none | sampler | loss


@dataclass
class StageConfig:
    """One stage of fine-tuning: what is trainable, for how long, at what LR."""

    name: str = "all"
    epochs: int = 1
    lr: float = 1e-4
    unfreeze: str = "all"  # head | top:N | all
    layer_decay: float = 1.0  # 1.0 = no layer-wise decay

    def top_blocks(self) -> int | None:
        """N of ``top:N``, else None."""
        m = re.fullmatch(r"top:(\d+)", self.unfreeze.strip())
        return int(m.group(1)) if m else None


@dataclass
class RecipeConfig:
    """The fine-tuning recipe; ``stages`` empty means the recipe's default plan."""

    kind: str = "staged"  # staged | full | head
    stages: list[StageConfig] = field(default_factory=list)
    top_blocks: int = 4  # N for the staged recipe's middle stage
    force_staged: bool = False


@dataclass
class OptimConfig:
    """AdamW and the per-step cosine schedule."""

    opt: str = "adamw"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.05
    accumulation: int = 1
    clip_grad: float = 1.0  # 0 = off
    warmup_fraction: float = 0.1  # of each stage's optimizer steps
    warmup_epochs: float = 0.0  # > 0 overrides warmup_fraction
    min_lr: float = 1e-6


@dataclass
class TeacherConfig:
    """Knowledge distillation from a trained run.

    ``mode``: soft (KL on logits softened by ``temperature``), hard (cross-entropy
    against the teacher's argmax) or token (DeiT distillation token trained on the
    teacher's argmax); empty picks token for a distilled student, else soft.
    ``unlabelled``: a SRC of unlabelled images (e.g. the rest of the study folder) the
    student also trains on, with the teacher term only: the teacher labels what the
    user never did, so the student learns from many more images than were labelled.
    """

    run: str = ""
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the distillation term; (1 - alpha) on the label loss
    mode: str = ""
    unlabelled: str = ""


@dataclass
class ContinualConfig:
    """Continual fine-tuning from a finished run (rules: :mod:`vitdesk.engine.plan`).

    ``continue_from``: the parent run folder (``config.toml`` records its folder name
    only); ``rehearsal``: earlier training slices replayed in every batch (0 = none);
    ``ewc``: the elastic weight consolidation lambda (0 = off).
    """

    continue_from: str = ""
    rehearsal: int = 0
    ewc: float = 0.0


@dataclass
class AdaptConfig:
    """Domain-adversarial adaptation (DANN) to an unlabelled target source."""

    source: str = ""  # unlabelled target images (a SRC); empty = off
    # the domain loss weight (the reversal schedule scales the gradient). 0.1, not Ganin et
    # al.'s 1.0: on bench/sites.py (tiny conv-stem ViT, scanner A -> B, seeds 0-2) DANN
    # minus source-only on held-out B patients was +0.302 / +0.161 / -0.159 at 0.1 and
    # +0.026 / -0.122 / -0.286 at 1.0, where the domain loss also cost source accuracy
    weight: float = 0.1


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    amp: str = "auto"  # auto | off | fp16 | bf16
    patience: int = 0  # early stopping on val loss, epochs without improvement (0 = off)
    device: str = "auto"
    seed: int = 0
    out: str = "runs/run"
    log_every: int = 10  # StepDone event every N optimizer steps (each costs a device sync)

    # ---- dict / TOML round trip -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        return _build(cls, d, where)

    # ---- overrides ----------------------------------------------------------------
    def set(self, dotted: str, value: Any) -> None:
        """Set ``"model.img_size"``-style fields, converting to the field's type."""
        obj: Any = self
        parts = dotted.split(".")
        for p in parts[:-1]:
            if not hasattr(obj, p):
                raise ConfigError(f"unknown config section '{p}' in '{dotted}'")
            obj = getattr(obj, p)
        name = parts[-1]
        names = {f.name: f for f in dataclasses.fields(obj)}
        if name not in names:
            raise ConfigError(
                f"unknown config field '{dotted}': known fields are {', '.join(names)}"
            )
        current = getattr(obj, name)
        setattr(obj, name, _coerce(current, value, dotted))

    def stage_plan(self) -> list[StageConfig]:
        """The stages this run trains (the recipe's default plan when none are given)."""
        if self.recipe.stages:
            return [dataclasses.replace(s) for s in self.recipe.stages]
        return default_stages(self.recipe.kind, self.recipe.top_blocks)

    def staged_on_random_backbone(self) -> bool:
        """True when the staged recipe would start from random weights (and is not forced).

        Freezing blocks that hold no learned features trains a random projection, so
        the CLI and the GUI switch such runs to full training (:meth:`switch_to_full`).
        """
        return (self.weights.pretrained.strip().lower() == "none"
                and self.recipe.kind == "staged" and not self.recipe.force_staged)

    def switch_to_full(self, epochs: int | None = None) -> None:
        """Replace the plan by one full stage of ``epochs`` (None: the full recipe's default)."""
        full = default_stages("full")[0]
        if epochs is not None:
            full.epochs = max(1, int(epochs))
        self.recipe.kind, self.recipe.stages = "full", [full]

    def resolved(self) -> RunConfig:
        """A copy with the stage plan spelled out (what ``config.toml`` records)."""
        cfg = RunConfig.from_dict(self.to_dict())
        cfg.recipe.stages = cfg.stage_plan()
        # A weights path relative to today's working directory means nothing tomorrow (the
        # report reads the backbone's card through it): record it absolute. Weights files
        # are not patient data.
        src = cfg.weights.pretrained.strip()
        if src.lower() not in ("hub", "none", "") and Path(src).expanduser().exists():
            cfg.weights.pretrained = str(Path(src).expanduser().resolve())
        return cfg

    def set_epochs(self, text: str) -> None:
        """Apply ``--epochs N`` (every stage) or ``N1,N2,N3`` (one per stage)."""
        try:
            values = [int(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise ConfigError(
                f"--epochs '{text}' is not N or N1,N2,N3 (whole numbers)"
            ) from None
        stages = self.stage_plan()
        if len(values) == 1:
            values = values * len(stages)
        if len(values) != len(stages):
            raise ConfigError(
                f"--epochs gives {len(values)} values but recipe '{self.recipe.kind}' has "
                f"{len(stages)} stage(s): give one value or {len(stages)}"
            )
        for s, n in zip(stages, values, strict=True):
            s.epochs = n
        self.recipe.stages = stages

    # ---- validation ------------------------------------------------------------------
    def validate(self) -> RunConfig:
        """Check every field; raise :class:`ConfigError` naming the field and the fix."""
        m, d, o = self.model, self.data, self.optim
        _choice("model.attention", m.attention, ATTENTION_BACKENDS)
        _choice("model.pool", m.pool, POOLS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("recipe.kind", self.recipe.kind, RECIPES)
        _choice("data.balance", d.balance, BALANCE)
        _choice("data.patient_id", d.patient_id, ("check", "csv", "dicom"))
        _choice("device", self.device, DEVICES)
        if not m.name.strip():
            raise ConfigError(
                "model.name is empty: give a timm model name, e.g. vit_tiny_patch16_224"
            )
        if m.img_size < 8:
            raise ConfigError(f"model.img_size={m.img_size} is too small: use at least 8")
        if m.patch_size < 0:
            raise ConfigError(f"model.patch_size={m.patch_size}: use 0 (the model's own) or "
                              "a patch side in pixels, e.g. 4 or 8")
        patch = m.patch_size or patch_size_of(m.name)
        if patch and m.img_size % patch:
            lo = m.img_size // patch * patch
            raise ConfigError(
                f"model.img_size={m.img_size} is not divisible by the patch size {patch} of "
                f"{m.name}: use {max(lo, patch)} or {lo + patch}"
            )
        _range("model.drop_path", m.drop_path, 0.0, 0.9)
        _range("model.ema_decay", m.ema_decay, 0.0, 1.0)
        if d.batch_size < 1:
            raise ConfigError(f"data.batch_size={d.batch_size}: use 1 or more")
        if d.workers < 0:
            raise ConfigError(f"data.workers={d.workers}: use 0 or more")
        if len(d.fractions) != 3 or any(f < 0 for f in d.fractions) or not math.isclose(
            sum(d.fractions), 1.0, abs_tol=1e-6
        ):
            raise ConfigError(
                f"data.fractions={d.fractions}: give three non-negative numbers "
                "(train, val, test) that sum to 1"
            )
        if d.fractions[0] <= 0:
            raise ConfigError("data.fractions: the train fraction must be above 0")
        if d.fold:
            _check_fold(d.fold, d.val_source)
        for name in ("mixup", "cutmix", "rotate_deg", "scale", "intensity"):
            if getattr(d, name) < 0:
                raise ConfigError(f"data.{name}={getattr(d, name)}: must be 0 or more")
        _range("data.label_smoothing", d.label_smoothing, 0.0, 0.5)
        try:
            from vitdesk.imaging.windowing import WindowSpec

            WindowSpec.parse(d.window)
        except ConfigError as exc:
            raise ConfigError(f"data.window='{d.window}': {exc}") from None
        stages = self.stage_plan()
        if not stages:
            raise ConfigError("recipe.stages is empty: give at least one stage")
        for i, s in enumerate(stages):
            where = f"recipe.stages[{i}] ({s.name})"
            if s.epochs < 0:
                raise ConfigError(f"{where}.epochs={s.epochs}: use 0 or more")
            if not (s.lr > 0 and math.isfinite(s.lr)):
                raise ConfigError(f"{where}.lr={s.lr}: use a positive learning rate")
            if s.unfreeze not in ("head", "all") and s.top_blocks() is None:
                raise ConfigError(
                    f"{where}.unfreeze='{s.unfreeze}': use head, top:N (e.g. top:4) or all"
                )
            _range(f"{where}.layer_decay", s.layer_decay, 1e-6, 1.0)
        if sum(s.epochs for s in stages) < 1:
            raise ConfigError("the recipe trains 0 epochs in total: set --epochs to 1 or more")
        if o.opt.lower() not in ("adamw", "adam", "sgd", "momentum", "lamb", "lion"):
            raise ConfigError(f"optim.opt='{o.opt}': use adamw (default), adam, sgd or lamb")
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas={o.betas}: give two numbers in [0, 1)")
        if o.accumulation < 1:
            raise ConfigError(f"optim.accumulation={o.accumulation}: use 1 or more")
        if o.weight_decay < 0 or o.clip_grad < 0 or o.min_lr < 0 or o.warmup_epochs < 0:
            raise ConfigError(
                "optim.weight_decay, clip_grad, min_lr and warmup_epochs must be 0 or more"
            )
        _range("optim.warmup_fraction", o.warmup_fraction, 0.0, 1.0)
        if self.patience < 0:
            raise ConfigError(f"patience={self.patience}: use 0 (off) or more")
        if self.log_every < 1:
            raise ConfigError(f"log_every={self.log_every}: use 1 or more")
        t = self.teacher
        if t.run:
            if t.temperature <= 0:
                raise ConfigError(f"teacher.temperature={t.temperature}: must be above 0")
            _range("teacher.alpha", t.alpha, 0.0, 1.0)
            if t.mode:
                _choice("teacher.mode", t.mode, ("soft", "hard", "token"))
        if t.unlabelled and not t.run:
            raise ConfigError(f"teacher.unlabelled='{t.unlabelled}' needs a teacher to label "
                              "those images: add --teacher RUN")
        if t.unlabelled and (self.data.mixup > 0 or self.data.cutmix > 0):
            raise ConfigError("teacher.unlabelled cannot be combined with mixup/cutmix (an "
                              "unlabelled image has no label to mix): set mixup = cutmix = 0")
        if not str(self.out).strip():
            raise ConfigError("out is empty: give a run folder with --out RUN")
        return self


def default_stages(kind: str, top_blocks: int = 4) -> list[StageConfig]:
    """The default plan of each recipe."""
    if kind == "head":
        return [StageConfig("head", 5, 1e-3, "head", 1.0)]
    if kind == "full":
        return [StageConfig("full", 10, 3e-4, "all", 0.75)]
    return [
        StageConfig("head", 2, 1e-3, "head", 1.0),
        StageConfig("top", 3, 3e-4, f"top:{top_blocks}", 1.0),
        StageConfig("all", 5, 1e-4, "all", 0.75),
    ]


def patch_size_of(name: str) -> int | None:
    """Patch size encoded in a model name (``patch16``), or of a registered test model."""
    if name in TEST_MODEL_PATCH:
        return TEST_MODEL_PATCH[name]
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


def run_folder_problem(folder: str | Path, what: str = "run") -> str | None:
    """Why ``folder`` is not a trained run folder (``config.toml`` + ``checkpoints/``),
    or None. ``what`` names its role in the message (``teacher run``, ``--baseline``)."""
    p = Path(folder).expanduser()
    if not p.is_dir():
        return f"{what} '{p}' not found: choose a trained run folder"
    if not (p / "config.toml").is_file():
        return (f"{what} '{p}' is not a run folder (no config.toml): choose a folder that a "
                "training run wrote")
    if not (p / "checkpoints").is_dir():
        return f"{what} '{p}' has no checkpoints/: choose a run that finished training"
    return None


MIN_GRID = 8  # tokens per side below which a ViT's patches swallow small findings


def coarse_grid_warning(name: str, img_size: int, patch_size: int = 0) -> str | None:
    """A warning when a ViT at ``img_size`` sees fewer than 8x8 patches (else None).

    With a 4x4 grid, a lesion or a ring's hole lies inside one patch and the ViT must
    find it through one linear patch embedding. Measured (bench exploration, ring vs
    disc at 32 px, 40 labels): 8-px patches 0.82-0.88 held-out accuracy, 4-px patches
    0.96, as good as a small CNN.
    """
    patch = patch_size or patch_size_of(name)
    if not patch or img_size // patch >= MIN_GRID:  # CNN names carry no patch size
        return None
    grid = img_size // patch
    return (f"{name} at {img_size} px sees a {grid}x{grid} grid of {patch}-px patches: "
            f"findings smaller than a patch are hard for it to see; use an image size of "
            f"{patch * MIN_GRID} px or more, or a model with smaller patches")


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML run configuration (missing fields take their defaults)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML ({exc}): fix the file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    return RunConfig.from_dict(data, where=str(p))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as TOML (readable by :func:`load_config`), atomically."""
    from vitdesk.fileio import atomic_write_text

    atomic_write_text(path, dumps_toml(cfg.to_dict()))


# ---- resume ------------------------------------------------------------------------------
# Fields a resumed run may take from the command instead of its config.toml: where the
# data and the run live and which device runs it do not change what is trained.
RESUME_FREE = frozenset({"data.source", "data.val_source", "out", "device", "model.pool",
                         "data.workers", "log_every"})
_PATH_FIELDS = frozenset({"weights.pretrained", "teacher.run", "teacher.unlabelled"})
_STAGE_KEYS = ("name", "lr", "unfreeze", "layer_decay")


def epochs_match(stages: list[StageConfig], text: str) -> bool:
    """True when ``--epochs text`` describes ``stages``: per stage, or as their total.

    The total form covers a staged recipe that was switched to one full stage (random
    backbone): ``--epochs 1,1,1`` then trained one stage of 3 epochs.
    """
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        return False
    have = [s.epochs for s in stages]
    if not values:
        return False
    if values == have or (len(values) == 1 and all(h == values[0] for h in have)):
        return True
    return sum(values) == sum(have)


def resume_differences(stored: RunConfig, requested: RunConfig,
                       fields: set[str] | None = None, epochs: str | None = None) -> list[str]:
    """How the command's configuration differs from a run's stored one, one phrase per field.

    Args:
        stored: the run's ``config.toml``.
        requested: the configuration the command would start a fresh run with (its epochs
            are ignored: ``epochs`` is compared with :func:`epochs_match` instead).
        fields: dotted fields the command set (None: every field); ``recipe.stages``
            compares the stage plan without epochs.
        epochs: the ``--epochs`` text, if given.
    """
    a, b = _flat(stored.to_dict()), _flat(requested.to_dict())
    out: list[str] = []
    for key in sorted(a):
        if key in RESUME_FREE or key == "recipe.stages" or (fields is not None
                                                            and key not in fields):
            continue
        if not _same(key, a[key], b.get(key)):
            out.append(f"{key} is {_show(a[key])} in the run but {_show(b.get(key))} here")
    if fields is None or "recipe.stages" in fields:
        plan_a = [[s[k] for k in _STAGE_KEYS] for s in a["recipe.stages"]]
        plan_b = [[s[k] for k in _STAGE_KEYS] for s in b["recipe.stages"]]
        if not _same("recipe.stages", plan_a, plan_b):
            out.append(f"recipe.stages is {_plan(a['recipe.stages'])} in the run but "
                       f"{_plan(b['recipe.stages'])} here")
    if epochs is not None and not epochs_match(stored.stage_plan(), epochs):
        have = [s.epochs for s in stored.stage_plan()]
        out.append(f"epochs are {','.join(map(str, have))} ({sum(have)} in total) in the run "
                   f"but --epochs {epochs} here")
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flat(v, name))
        else:
            out[name] = v
    return out


def _same(key: str, x: Any, y: Any) -> bool:
    if key in _PATH_FIELDS and isinstance(x, str) and isinstance(y, str):
        if x.strip().lower() in ("", "none", "hub") or y.strip().lower() in ("", "none", "hub"):
            return x.strip().lower() == y.strip().lower()
        if x.startswith("ref:") or y.startswith("ref:"):  # a run folder's data fingerprint
            from vitdesk.data.source_refs import same_source

            return same_source(x, y)
        return Path(x).expanduser().resolve() == Path(y).expanduser().resolve()
    if isinstance(x, float) or isinstance(y, float):
        try:
            return math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same("", p, q) for p, q in zip(x, y, strict=True))
    return x == y


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _plan(stages: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(f"{s['name']} ({s['unfreeze']}, lr {s['lr']:g})" for s in stages) + "]"


# ---- internals -----------------------------------------------------------------------
def _check_fold(fold: str, val_source: str) -> None:
    from vitdesk.data.splits import parse_fold
    from vitdesk.errors import DataError

    try:
        parse_fold(fold)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    if val_source:
        raise ConfigError(f"data.fold='{fold}' carves validation from each fold's training "
                          "patients: leave out data.val_source (--val)")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}='{value}' is not valid: choose one of {', '.join(allowed)}")


def _range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{name}={value} is out of range: use a value in [{lo:g}, {hi:g}]")


def _coerce(current: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to the type of ``current`` (the field default)."""
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(current, int) and not isinstance(current, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, str):
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
        if isinstance(current, list):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if current and isinstance(current[0], float):
                return [float(v) for v in value]
            return list(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}={value!r} has the wrong type: expected {type(current).__name__}"
        ) from None
    return value


def _build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table, got {type(d).__name__}")
    obj = cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in d.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown field '{key}': known fields are {', '.join(fields)}"
            )
        current = getattr(obj, key)
        sub = f"{where}.{key}" if where == "config" else f"{where}: {key}"
        if dataclasses.is_dataclass(current):
            setattr(obj, key, _build(type(current), value, key))
        elif key == "stages":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: stages must be an array of tables ([[recipe.stages]])")
            setattr(obj, key, [_build(StageConfig, s, f"stages[{i}]") for i, s in enumerate(value)])
        else:
            setattr(obj, key, _coerce(current, value, sub))
    return obj


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        esc = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{esc}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps_toml(d: dict[str, Any]) -> str:
    """A small TOML writer for nested dicts of scalars, lists and lists of tables."""
    lines: list[str] = []

    def table(prefix: str, t: dict[str, Any]) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict) and not _is_aot(v)}
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in t.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                lines.append("")
                lines.append(f"[{name}]")
                table(name, v)
            elif _is_aot(v):
                for item in v:
                    lines.append("")
                    lines.append(f"[[{name}]]")
                    table(name, item)

    table("", d)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
