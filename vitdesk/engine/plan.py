"""Every rule about a run before it starts, in one place (no torch, no Qt).

``vitdesk train``, ``vitdesk pretrain``, the workbench's training form and
:func:`vitdesk.engine.run.train` all call :func:`plan_run` (or :func:`plan_resume`,
:func:`plan_pretrain`): the same inputs give the same resolved config and the same
notices in every front end, or one :class:`~vitdesk.errors.ConfigError` that names
the field and the fix. The rules:

- a staged recipe on random weights trains one full stage (frozen random blocks hold
  no features); so does a CNN (it has no ViT blocks to unfreeze in stages). The full
  stage trains as many epochs as the staged plan had in total. ``recipe.force_staged``
  keeps the stages.
- a CNN from random weights is never trained with frozen layers;
- ``model.pool = auto`` becomes token or avg by the weights source;
- ``teacher.mode`` empty becomes token for a distilled student, else soft; token needs
  a distilled student; a teacher must share the window (not the image size: it sees
  each slice at its own);
- backbone cards (window, size) and a coarse ViT grid give notices;
- a resumed run keeps its ``config.toml``; a flag that would change it is refused;
- a continued run (``continual.continue_from``) takes its parent's model, image size,
  patch, pooling and window (a flag that differs is refused, named), starts from the
  parent's weights (no ``weights.pretrained``), and the parent must have finished;
  rehearsal and EWC need a parent; ``adapt.source`` must exist and the model have one
  head (not ``*_distilled``).

The data-driven planner (image size, patch, batch, epochs from a fingerprint of the
data and a measured step time) lives in :mod:`vitdesk.engine.planner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vitdesk.config import (
    RESUME_FREE,
    TEST_MODEL_PATCH,
    RunConfig,
    StageConfig,
    coarse_grid_warning,
    load_config,
    patch_size_of,
    resume_differences,
    run_folder_problem,
)
from vitdesk.engine.cards import read_card
from vitdesk.errors import ConfigError

# Model families by name (engine.models builds them; the rules only need the names).
CNN_PREFIXES = (
    "resnet", "resnext", "seresnet", "seresnext", "ecaresnet", "wide_resnet", "resnetv2",
    "convnext", "efficientnet", "tf_efficientnet", "regnet", "mobilenetv2", "mobilenetv3",
    "tf_mobilenetv3", "densenet", "ghostnet", "mnasnet",
)
CNN_TEST_NAMES = frozenset({"cnn_test_tiny"})
TEST_VIT_NAMES = frozenset(TEST_MODEL_PATCH)  # the tiny test ViTs (config names them)
DISTILL_MODES = ("soft", "hard", "token")
# How each front end spells "keep the stages" (one sentence for both, so notices match).
KEEP_STAGES = ("set recipe.force_staged to keep the stages (--force-staged, or 'Keep "
               "staged without weights' in the workbench)")


def is_cnn_name(name: str) -> bool:
    """True for the convolutional families (and ``cnn_test_tiny``) by model name."""
    return name in CNN_TEST_NAMES or name.startswith(CNN_PREFIXES)


def is_distilled_name(name: str) -> bool:
    """True for a student with a DeiT distillation token, judged by its timm name."""
    return "distilled" in name


def distill_mode(model: str, mode: str = "") -> str:
    """The distillation mode a run uses: ``mode``, else token for a distilled student,
    else soft.

    Raises:
        ConfigError: an unknown mode, or token on a student without a distillation token.
    """
    mode = mode or ("token" if is_distilled_name(model) else "soft")
    if mode not in DISTILL_MODES:
        raise ConfigError(f"teacher.mode='{mode}' is not valid: choose one of "
                          f"{', '.join(DISTILL_MODES)}")
    if mode == "token" and not is_distilled_name(model):
        raise ConfigError(
            f"teacher.mode 'token' needs a *_distilled student and {model} has no "
            "distillation token: use a *_distilled model (e.g. "
            "deit_tiny_distilled_patch16_224, vit_test_tiny_distilled) or mode soft or hard")
    return mode


@dataclass
class Plan:
    """A resolved run configuration and what the user should be told about it."""

    cfg: RunConfig
    notices: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # what the planner chose, and why
    estimate: Any = None  # the planner's Estimate, when it planned


def describe_stage(s: StageConfig) -> str:
    """One stage in words (the workbench's plan box and ``vitdesk plan``)."""
    what = {"head": "head only", "all": "all blocks"}.get(
        s.unfreeze, f"top {s.top_blocks()} blocks" if s.top_blocks() else s.unfreeze)
    decay = f", layer decay {s.layer_decay:g}" if s.layer_decay < 1.0 else ""
    return f"{s.name}: {s.epochs} ep at lr {s.lr:.0e}, {what}{decay}"


def plan_lines(plan: Plan) -> list[str]:
    """The plan in words, one line each: what the planner chose and why, the run (model,
    image size, patches, weights, batch, recipe, epochs per stage), the estimate and the
    notices. ``vitdesk plan`` prints these lines and the workbench shows them."""
    cfg = plan.cfg
    m = cfg.model
    patch = m.patch_size or None
    lines = ["plan:" if plan.reasons else "plan (model given, nothing chosen):"]
    lines += [f"  {r}" for r in plan.reasons]
    lines.append(f"  run: {m.name} at {m.img_size} px"
                 + (f", {patch}-px patches" if patch else "")
                 + f", weights {cfg.weights.pretrained}, batch {cfg.data.batch_size}, "
                 f"recipe {cfg.recipe.kind}")
    for i, s in enumerate(cfg.recipe.stages):
        lines.append(f"    {i + 1}. {describe_stage(s)}")
    if plan.estimate is not None:
        lines.append(f"  estimate: {plan.estimate.describe()}")
    lines += [f"  note: {n}" for n in plan.notices]
    return lines


def parse_epochs(text: str | None) -> list[int] | None:
    """``--epochs N`` or ``N1,N2,N3`` as numbers (None when not given)."""
    if text is None or not str(text).strip():
        return None
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--epochs '{text}' is not N or N1,N2,N3 (whole numbers)") from None
    return values or None


def plan_run(cfg: RunConfig, *, epochs: str | None = None, check_files: bool = True) -> Plan:
    """Apply every rule to ``cfg`` (a copy) and validate the result.

    Args:
        cfg: the requested configuration (config file + flags, or the form).
        epochs: ``--epochs`` text (N for every stage, or one value per stage); None
            keeps the stages' own epochs.
        check_files: also check that the weights, teacher run and unlabelled source
            exist and fit (the engine checks the data itself).

    Raises:
        ConfigError: naming the field and the fix.
    """
    plan = apply_rules(cfg, epochs)
    check_run(plan.cfg, check_files)
    return plan


def apply_rules(cfg: RunConfig, epochs: str | None = None) -> Plan:
    """The rules of :func:`plan_run` without the final validation (a form shows the plan
    of a config that is not valid yet). Raises ConfigError only for a bad ``epochs`` or
    a rule that refuses the run."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    notices: list[str] = []
    values = parse_epochs(epochs)
    name = cfg.model.name
    if cfg.teacher.mode and not cfg.teacher.run:
        notices.append(f"teacher.mode '{cfg.teacher.mode}' has no effect without a teacher "
                       "run: choose one (--teacher RUN) or leave the mode out")
    switch = None
    if is_cnn_name(name) and cfg.recipe.kind == "staged" and not cfg.recipe.force_staged:
        switch = f"{name} is a CNN (there are no ViT blocks to unfreeze in stages)"
    elif cfg.staged_on_random_backbone() and not cfg.continual.continue_from:
        switch = ("staged fine-tuning of a random backbone is meaningless (the frozen blocks "
                  "hold no learned features)")
    if switch:
        if values is None:
            total = sum(s.epochs for s in cfg.stage_plan())
        else:  # N means N epochs for a one-stage recipe; N1,N2,N3 their total
            total = values[0] if len(values) == 1 else sum(values)
        cfg.switch_to_full(total)
        notices.append(f"{switch}: training one full stage of {max(1, total)} epoch(s) "
                       f"instead; {KEEP_STAGES}")
    elif values is not None:
        cfg.set_epochs(",".join(map(str, values)))
    cfg.recipe.stages = cfg.stage_plan()
    _check_cnn_recipe(cfg)
    cfg.model.pool = resolve_pool(cfg)
    if cfg.teacher.run:
        cfg.teacher.mode = distill_mode(name, cfg.teacher.mode)
    notices.extend(backbone_card_notices(cfg))
    c = cfg.continual
    if c.continue_from:
        extra = [f"a rehearsal buffer of {c.rehearsal} earlier slices" if c.rehearsal else "",
                 f"EWC lambda {c.ewc:g}" if c.ewc else ""]
        notices.append(f"continues run '{Path(c.continue_from).name}': starts from its weights "
                       "(weights 'none' here), with its model, image size and window"
                       + "".join(f", {e}" for e in extra if e))
    coarse = coarse_grid_warning(name, cfg.model.img_size, cfg.model.patch_size)
    if coarse:
        notices.append(coarse)
    return Plan(cfg.resolved(), notices)


def check_run(cfg: RunConfig, check_files: bool = True) -> None:
    """Validate a planned config; with ``check_files`` also its weights and teacher."""
    cfg.validate()
    check_continual_adapt(cfg, check_files)
    if not check_files:
        return
    src = cfg.weights.pretrained.strip()
    own = patch_size_of(cfg.model.name)
    if cfg.model.patch_size and (is_cnn_name(cfg.model.name) or not own):
        raise ConfigError(f"model.patch_size={cfg.model.patch_size}: {cfg.model.name} has no "
                          "patches to resize: use 0")
    if cfg.model.patch_size and cfg.model.patch_size != own and src.lower() == "hub":
        raise ConfigError(f"model.patch_size={cfg.model.patch_size}: hub weights of "
                          f"{cfg.model.name} have {own}-px patches: use 0, or weights 'none'")
    if src.lower() == "hub" and cfg.model.name in TEST_VIT_NAMES | CNN_TEST_NAMES:
        raise ConfigError(f"{cfg.model.name} is a test model without hub weights: use "
                          "weights 'none' or a file")
    if src.lower() not in ("hub", "none") and not Path(src).expanduser().exists():
        raise ConfigError(f"weights '{src}' not found: choose a file or folder that exists")
    check_teacher_files(cfg)


# ---- continual fine-tuning and domain adaptation ------------------------------------------
# What a continued run must share with its parent: the weights fit only this model, and
# the rehearsal buffer holds inputs preprocessed this way.
PARENT_FIELDS = ("model.name", "model.img_size", "model.patch_size", "model.pool",
                 "data.window", "data.clahe")


def _get(cfg: RunConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def parent_folder(value: str, run_dir: str | Path | None = None) -> Path:
    """The parent run of ``continual.continue_from``: a folder path, or (as ``config.toml``
    records it) a folder name beside ``run_dir``."""
    p = Path(value).expanduser()
    if p.is_dir() or run_dir is None or len(p.parts) != 1:
        return p
    return Path(run_dir).expanduser().parent / p.name


def parent_problem(parent: str | Path) -> str | None:
    """Why ``parent`` cannot be continued from (not a run, not finished), or None."""
    problem = run_folder_problem(parent, "continual.continue_from run")
    if problem:
        return problem
    p = Path(parent).expanduser()
    try:
        import json

        finished = json.loads((p / "metrics.json").read_text(encoding="utf-8")).get("finished")
    except (OSError, ValueError, AttributeError):
        finished = False
    if not finished or not (p / "checkpoints" / "best.json").is_file():
        return (f"continual.continue_from: run '{p.name}' has not finished training: "
                "finish it first (vitdesk train --resume --out RUN) or continue from another run")
    return None


def inherit_parent(cfg: RunConfig, parent: str | Path, explicit: set[str] | frozenset[str]
                   ) -> RunConfig:
    """``cfg`` with the parent's model and window (:data:`PARENT_FIELDS`) where the request
    did not set them; a field set to another value is refused, named.

    ``explicit``: dotted fields the user set (flags or form). A continued run starts from
    the parent's weights, so ``weights.pretrained`` must not be given.
    """
    problem = parent_problem(parent)
    if problem:
        raise ConfigError(problem)
    theirs = load_config(Path(parent).expanduser() / "config.toml")
    cfg = RunConfig.from_dict(cfg.to_dict())
    if "weights.pretrained" in explicit and cfg.weights.pretrained.strip().lower() != "none":
        raise ConfigError("weights.pretrained: a continued run starts from its parent's "
                          "weights: leave out --pretrained")
    for dotted in PARENT_FIELDS:
        if dotted in explicit:
            continue
        cfg.set(dotted, _get(theirs, dotted))
    cfg.weights.pretrained = "none"  # the parent's checkpoint is loaded instead
    check_parent_fit(cfg, theirs, Path(parent).name)
    return cfg


def check_parent_fit(cfg: RunConfig, theirs: RunConfig, name: str) -> None:
    """ConfigError naming the first of :data:`PARENT_FIELDS` that differs from the parent."""
    from vitdesk.imaging.windowing import WindowSpec

    for dotted in PARENT_FIELDS:
        ours, parent = _get(cfg, dotted), _get(theirs, dotted)
        if dotted == "data.window":
            try:
                same = WindowSpec.parse(ours) == WindowSpec.parse(parent)
            except ConfigError:
                same = ours == parent
        elif dotted == "model.pool" and "auto" in (ours, parent):
            same = True  # auto follows the parent (the run loads the parent's architecture)
        else:
            same = ours == parent
        if not same:
            raise ConfigError(
                f"{dotted}={ours!r} but the parent run '{name}' has {parent!r}: a continued "
                "run keeps its parent's model, image size and window (leave the flag out)")


def check_continual_adapt(cfg: RunConfig, check_files: bool = True) -> None:
    """The continual and adaptation fields: ranges, what needs what; with ``check_files``
    also the parent run (finished, same model and window) and the target source."""
    c, a = cfg.continual, cfg.adapt
    if c.rehearsal < 0:
        raise ConfigError(f"continual.rehearsal={c.rehearsal}: use 0 (off) or a number of "
                          "earlier slices, e.g. 200")
    if c.ewc < 0:
        raise ConfigError(f"continual.ewc={c.ewc}: use 0 (off) or a positive lambda, e.g. 100")
    if (c.rehearsal or c.ewc) and not c.continue_from:
        what = "continual.rehearsal" if c.rehearsal else "continual.ewc"
        raise ConfigError(f"{what} needs a parent run to remember: add --continue RUN")
    if a.source and a.weight <= 0:
        raise ConfigError(f"adapt.weight={a.weight}: use a positive weight, e.g. 0.1")
    if not check_files:
        return
    if c.continue_from:
        problem = parent_problem(c.continue_from)
        if problem:
            raise ConfigError(problem)
        if cfg.weights.pretrained.strip().lower() != "none":
            raise ConfigError("weights.pretrained: a continued run starts from its parent's "
                              "weights: leave out --pretrained")
        try:
            theirs = load_config(Path(c.continue_from).expanduser() / "config.toml")
        except ConfigError:
            theirs = None  # loading the parent reports it
        if theirs is not None:
            check_parent_fit(cfg, theirs, Path(c.continue_from).name)
    if a.source:
        if is_distilled_name(cfg.model.name):
            raise ConfigError(f"adapt.source: {cfg.model.name} has two heads; adapt a plain "
                              "ViT (without _distilled)")
        if not Path(a.source).expanduser().exists():
            raise ConfigError(f"adapt.source '{a.source}' not found: choose a folder, CSV or "
                              "workspace of the target site's images")


def check_teacher_files(cfg: RunConfig) -> None:
    """The teacher run exists, is a run, and fits (its window); the unlabelled
    source exists. Raises ConfigError naming the problem."""
    t = cfg.teacher
    if t.run:
        problem = run_folder_problem(t.run, "teacher run")
        if problem:
            raise ConfigError(problem)
        try:
            theirs = load_config(Path(t.run).expanduser() / "config.toml")
        except ConfigError:
            theirs = None  # unreadable: loading the teacher reports it
        if theirs is not None:
            problem = teacher_mismatch(cfg, t.run, theirs.data.window)
            if problem:
                raise ConfigError(problem)
    if t.unlabelled and not Path(t.unlabelled).expanduser().exists():
        raise ConfigError(f"teacher.unlabelled '{t.unlabelled}' not found: choose a folder, "
                          "CSV or workspace of images")


def teacher_mismatch(cfg: RunConfig, run: str, window: str) -> str | None:
    """Why a teacher with this window cannot teach ``cfg`` (else None). Its image size
    may differ: it sees each slice at its own (engine.distill.TeacherAtOwnSize)."""
    from vitdesk.imaging.windowing import WindowSpec

    try:
        same = WindowSpec.parse(window) == WindowSpec.parse(cfg.data.window)
    except ConfigError:
        return None  # an unreadable window is reported by validate() or the teacher's load
    if not same:
        return (f"teacher run {run} uses window '{window}', this run '{cfg.data.window}' "
                "(data.window): use the same window")
    return None


def _check_cnn_recipe(cfg: RunConfig) -> None:
    """A CNN from random weights with frozen layers trains random features: refuse it."""
    if not is_cnn_name(cfg.model.name) or cfg.recipe.force_staged:
        return
    frozen = any(s.unfreeze != "all" for s in cfg.stage_plan())
    if frozen and cfg.weights.pretrained.strip().lower() == "none":
        raise ConfigError(
            f"recipe '{cfg.recipe.kind}' freezes layers of {cfg.model.name} but its weights "
            "are random (weights.pretrained='none'): use --recipe full for a CNN from scratch"
        )


def resolve_pool(cfg: RunConfig) -> str:
    """``model.pool`` with ``auto`` decided by the weights source (see ModelConfig.pool)."""
    m = cfg.model
    if m.pool != "auto" or is_cnn_name(m.name):
        return m.pool  # a CNN pools its feature map: nothing to choose
    if is_distilled_name(m.name):
        return "token"  # DeiT's heads read the class and distillation tokens
    src = str(cfg.weights.pretrained).strip()
    if src.lower() == "none":
        return "avg"
    if src.lower() == "hub":
        return "token"
    p = Path(src).expanduser()
    folder = p if p.is_dir() else p.parent
    if read_card(folder):
        # an MAE encoder never trained its class token; formula encoders were trained
        # with mean pooling
        return "avg"
    if (folder / "config.toml").is_file():
        try:
            theirs = load_config(folder / "config.toml").model.pool
        except ConfigError:
            theirs = "auto"
        return theirs if theirs in ("token", "avg") else "token"  # runs before pool: token
    return "token"


def backbone_card_notices(cfg: RunConfig) -> list[str]:
    """Notices when a pretrained backbone saw another window or image size.

    The encoder learnt the intensity statistics of its window: fine-tuning on other
    windows throws part of that away, so the user should know.
    """
    src = str(cfg.weights.pretrained)
    if src in ("none", "hub") or not Path(src).expanduser().exists():
        return []
    card = read_card(Path(src).expanduser())
    if not card:
        return []
    from vitdesk.imaging.windowing import WindowSpec

    out = []
    if card.get("window"):  # formula backbones saw no CT window
        theirs = WindowSpec.from_dict(card["window"])
        try:
            ours = WindowSpec.parse(cfg.data.window)
        except ConfigError:
            ours = None  # validate() names the bad window
        if ours is not None and theirs.windows != ours.windows:
            out.append(f"the backbone was pretrained with window '{theirs.label()}' but this "
                       f"run uses '{ours.label()}': use --window {theirs.label()} to keep them "
                       "identical")
    if int(card.get("img_size", cfg.model.img_size)) != int(cfg.model.img_size):
        out.append(f"the backbone was pretrained at {card['img_size']} px and this run uses "
                   f"{cfg.model.img_size} px: position embeddings are resized")
    return out


def plan_resume(stored: RunConfig, requested: RunConfig, fields: set[str] | None,
                epochs: str | None, *, take: dict[str, Any], run: str) -> Plan:
    """The stored config of run folder ``run``, once the request agrees with it.

    Args:
        stored: the run's ``config.toml``.
        requested: what the command would start a fresh run with (planned).
        fields: dotted fields the command set (None: every field must agree).
        epochs: the ``--epochs`` text, if given (per stage or as the total).
        take: free fields (:data:`~vitdesk.config.RESUME_FREE`) the command sets anew,
            e.g. ``{"data.source": SRC, "out": RUN}``.

    Raises:
        ConfigError: every differing field with both values, and what to do.
    """
    diffs = resume_differences(stored, requested, fields, epochs)
    if diffs:
        raise ConfigError(
            f"cannot resume {run}: {'; '.join(diffs)}: repeat the run's settings (see its "
            "config.toml), or start a new run with another --out")
    cfg = RunConfig.from_dict(stored.to_dict())
    for dotted, value in take.items():
        if dotted not in RESUME_FREE:
            raise ConfigError(f"{dotted} cannot change when resuming: start a new run")
        cfg.set(dotted, value)
    cfg = cfg.resolved()
    cfg.validate()
    return Plan(cfg, [])


def plan_pretrain(cfg: Any) -> Any:
    """The pretraining rules: MAE on ``data`` or formula images without data, then the
    config's own validation. Returns ``cfg`` validated."""
    if cfg.formula and cfg.data:
        raise ConfigError("--formula generates its own images: leave out --data (or drop "
                          "--formula for MAE on the images of --data)")
    if not cfg.formula and not cfg.data:
        raise ConfigError("give the unlabelled images with --data SRC, or --formula "
                          "contours|fractals to pretrain without data")
    return cfg.validate()


# ---- the planner: data fingerprint + machine + budget -> the run --------------------------
# Candidate ViTs from small to large, each with the learning rate it trains at from random
# weights (full recipe). vit_test_tiny_convstem is 2 blocks of 64 dims behind a small
# convolutional stem: what a 2-core CPU trains in minutes (the stem took the quick demo's
# ViT from 0.12-0.17 AUC below its CNN baseline to within 0.05); vit_tiny is timm's
# smallest real ViT (12 blocks of 192).
AUTO_MODELS = (("vit_test_tiny_convstem", 1e-3), ("vit_tiny_patch16_224", 5e-4),
               ("vit_small_patch16_224", 3e-4))
PATCHES = (2, 4, 8, 16)
SMALL_LABELLED = 5000  # labelled images below which a CNN beats a ViT trained on them alone
MIN_EPOCHS = 20  # a ViT from random weights needs this many passes to learn anything
# The trainer writes ``last`` (weights + optimizer state) at a stage's end, on cancel and
# at most this often in between: on a small set an epoch lasts less than the write.
LAST_CHECKPOINT_S = 30.0
FORWARD_SHARE = 0.35  # an eval forward pass against a training step (forward, backward, AdamW)


@dataclass(frozen=True)
class RunCosts:
    """What a run pays beside its optimizer steps, measured on this machine and data
    (:func:`vitdesk.engine.probe.measure_run_costs`); all in seconds."""

    epoch_writes: float = 0.0  # history + metrics, and the best checkpoint's share
    last_checkpoint: float = 0.0  # one ``last`` write
    first_read: float = 0.0  # one image read from disk (the first epoch; then cached)
    train_item: float = 0.0  # one augmented training image from the cache
    val_item: float = 0.0  # one validation image from the cache


@dataclass(frozen=True)
class Fingerprint:
    """What the planner knows of a dataset (no paths, no identifiers)."""

    images: int
    patients: int
    classes: dict[str, int]  # labelled images per class
    native_px: int  # median longer side of the images, in pixels
    kind: str = "image"  # dicom | image

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.classes.items())
        what = "DICOM slices" if self.kind == "dicom" else "images"
        return (f"{self.images} {what} of {self.patients} patients, "
                f"{len(self.classes)} classes ({counts}), native {self.native_px} px")


@dataclass(frozen=True)
class Estimate:
    """The planner's estimate of a run, from a step time measured on this machine."""

    step_seconds: float
    steps: int
    seconds: float
    peak_memory_mb: float

    def scaled(self, factor: float) -> Estimate:
        """The estimate of the same run trained ``factor`` times as many epochs."""
        steps = max(1, round(self.steps * factor))
        return Estimate(self.step_seconds, steps, self.seconds * steps / max(1, self.steps),
                        self.peak_memory_mb)

    def describe(self) -> str:
        return (f"about {_duration(self.seconds)} ({self.steps} steps at "
                f"{self.step_seconds * 1000:.0f} ms), peak memory about "
                f"{self.peak_memory_mb:.0f} MB")


@dataclass
class DataPlan:
    """What :func:`plan_for_data` chose, why, and how long it should take."""

    cfg: RunConfig
    reasons: list[str]
    estimate: Estimate | None = None


def parse_budget(text: str | float | int | None) -> float | None:
    """``20m``, ``90s``, ``1h30m`` or plain seconds -> seconds (None when not given)."""
    if text is None or str(text).strip() == "":
        return None
    import re

    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
        if not parts or "".join(f"{a}{b}" for a, b in parts) != s.replace(" ", ""):
            raise ConfigError(f"--budget '{text}' is not a duration: use e.g. 90s, 20m or "
                              "1h30m")
        seconds = sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)
    if seconds <= 0:
        raise ConfigError(f"--budget '{text}': use a positive duration")
    return seconds


# ViTs whose patchify layer is a convolutional stem (engine/models.ConvStem): the stem
# already sees every pixel, so a finer token grid only costs (patch 4 instead of 8 on the
# quick demo's sample: 2x the time, accuracy 0.794 vs 0.825, AUC 0.892 vs 0.917)
CONV_STEM_NAMES = frozenset({"vit_test_tiny_convstem"})


def choose_geometry(native_px: int, own_patch: int | None, random_init: bool,
                    conv_stem: bool = False) -> tuple[int, list[int], list[str]]:
    """Image size and the patch sizes to consider for images of ``native_px``, finest
    first, with the reasons.

    The input is not upsampled beyond the native resolution (upsampling adds pixels, not
    detail) and is capped at 224 px. A ViT from random weights may take any patch that
    gives a grid of 8x8 to 16x16 tokens: at least 8x8 so a small finding is not lost
    inside one patch, at most 16x16 because finer grids cost more than they give on a
    workstation (the planner takes the finest one the budget allows). Weights with their
    own patch keep it, and the image grows to 8 patches a side if it must.
    """
    img = max(16, min(224, native_px) // 8 * 8)
    why = [f"image size {img} px: native {native_px} px, not upsampled"
           + (" (capped at 224)" if native_px > 224 else "")]
    if random_init or not own_patch:
        patches = [p for p in PATCHES
                   if img % p == 0 and MIN_GRID_PLAN <= img // p <= MAX_GRID]
        if patches and conv_stem:
            return img, patches[-1:], why  # the coarsest grid of at least 8x8
        if patches:
            return img, patches, why
    p = int(own_patch or 16)
    if img // p < MIN_GRID_PLAN:
        img = p * MIN_GRID_PLAN
        why.append(f"image size raised to {img} px: the weights' {p}-px patches need an "
                   f"{MIN_GRID_PLAN}x{MIN_GRID_PLAN} grid")
    return img // p * p, [p], why


def patch_reason(img: int, patch: int, own: int | None, finer: bool,
                 conv_stem: bool = False) -> str:
    """Why this patch: its grid, and whether the budget ruled out a finer one."""
    if not patch:
        return "no patches (a CNN)"
    grid = f"a {img // patch}x{img // patch} grid"
    if conv_stem:
        return (f"patch {patch} px: {grid}, the coarsest of at least {MIN_GRID_PLAN}x"
                f"{MIN_GRID_PLAN} (the convolutional stem sees every pixel, so a finer grid "
                "would only cost time)")
    why = (f"the model's own, {grid}" if own and patch == own else
           f"{grid}, at least {MIN_GRID_PLAN}x{MIN_GRID_PLAN} so small findings are not lost "
           "inside one patch")
    return f"patch {patch} px: {why}" + ("; a finer grid does not fit the budget" if finer
                                          else "")


MIN_GRID_PLAN = 8
MAX_GRID = 16


def choose_batch(train_images: int) -> int:
    """A power of two near 1/16 of the training images, 8 to 64: small sets want steps."""
    target = max(8, min(64, train_images // 16))
    return 1 << (target.bit_length() - 1)


def plan_for_data(cfg: RunConfig, fp: Fingerprint, *, budget_s: float | None,
                  step_seconds: Any, explicit: set[str] | frozenset[str] = frozenset(),
                  device: str = "cpu", memory_mb: float | None = None,
                  epoch_overhead_s: float = 0.0, costs: RunCosts | None = None) -> DataPlan:
    """Fill in the model, image and patch size, batch, epochs and recipe for ``fp``.

    Args:
        cfg: the requested configuration (``model.name`` may be ``auto``).
        fp: the dataset fingerprint (:func:`data_fingerprint`).
        budget_s: wall-clock budget for training in seconds (None: 10 minutes).
        step_seconds: ``(model, img_size, patch, batch) -> (seconds per step, peak MB)``,
            measured on this machine (:func:`vitdesk.engine.probe.measure_step`).
        explicit: dotted fields the user set (``model.img_size``...): kept as given.
        device: where the run trains (cpu or cuda), for the choice of model.
        memory_mb: memory the run may use (None: not checked).
        epoch_overhead_s: measured seconds per epoch outside the steps (checkpoint and
            history writes), added to ``costs.epoch_writes``.
        costs: the rest of what a run pays beside its steps (image reads and
            augmentation, validation, checkpoint writes); None: steps only.
    """
    cfg = RunConfig.from_dict(cfg.to_dict())
    budget = budget_s or 600.0
    why: list[str] = [f"data: {fp.describe()}"]
    weights = cfg.weights.pretrained.strip().lower()
    auto = cfg.model.name == "auto"
    if auto and "weights.pretrained" not in explicit:
        cfg.weights.pretrained, weights = "none", "none"
        why.append("weights: none (no pretrained backbone chosen; random init, full recipe)")
    random_init = weights == "none"
    train_images = max(1, int(fp.images * cfg.data.fractions[0]))
    val_images = int(fp.images * cfg.data.fractions[1])
    costs = costs or RunCosts()
    costs = replace(costs, epoch_writes=costs.epoch_writes + epoch_overhead_s)
    batch = cfg.data.batch_size if "data.batch_size" in explicit else choose_batch(train_images)
    steps_per_epoch = max(1, -(-train_images // batch))
    candidates = AUTO_MODELS if auto else ((cfg.model.name, None),)
    labelled = sum(fp.classes.values())
    small = random_init and labelled < SMALL_LABELLED
    if auto and small:
        candidates = AUTO_MODELS[:1]  # a wider ViT from random weights overfits a small set
    elif auto and device != "cuda":
        candidates = AUTO_MODELS[:2]  # a ViT-S from scratch is a GPU job
    def option(name: str, lr: float | None, img: int, p: int, geo_why: list[str],
               finer: bool) -> tuple:
        step, peak = step_seconds(name, img, p, batch)
        per_epoch = epoch_seconds(step, steps_per_epoch, batch, train_images, val_images,
                                  costs)
        fixed = (train_images + val_images) * costs.first_read + costs.last_checkpoint
        # 10 % spare for a busy machine; ``last`` is written every LAST_CHECKPOINT_S
        epochs = int((budget * 0.9 - fixed) / (per_epoch
                                               + per_epoch / LAST_CHECKPOINT_S
                                               * costs.last_checkpoint))
        reason = patch_reason(img, p, patch_size_of(name), finer,
                              conv_stem=name in CONV_STEM_NAMES and random_init)
        return (name, lr, img, p, [*geo_why, reason], step, peak, epochs)

    chosen = fallback = None
    for name, lr in candidates:
        own = patch_size_of(name)
        if "model.img_size" in explicit:
            img = cfg.model.img_size
            patches = [cfg.model.patch_size or own or 0]
            geo_why = [f"image size {img} px (given)"]
        else:
            img, patches, geo_why = choose_geometry(fp.native_px, own, random_init,
                                                    conv_stem=name in CONV_STEM_NAMES)
        fit = None
        for k, p in enumerate(patches):
            o = option(name, lr, img, p, geo_why, finer=k > 0)
            if memory_mb and o[6] > memory_mb:
                continue
            if fallback is None or (name == candidates[0][0] and k == len(patches) - 1):
                fallback = o  # the cheapest: smallest model, coarsest grid
            if o[7] >= MIN_EPOCHS:
                fit = o
                break
        if fit is None:
            break  # a larger model fits even less
        chosen = fit
        if not auto or fit[7] < MIN_EPOCHS * 3:
            break  # a larger model would get fewer than MIN_EPOCHS
    chosen = chosen or fallback
    if chosen is None:
        raise ConfigError(f"no model fits in {memory_mb:.0f} MB at batch {batch}: set "
                          "--batch-size lower")
    name, lr, img, p, geo_why, step, peak, epochs = chosen
    cfg.model.name, cfg.model.img_size = name, img
    own = patch_size_of(name)
    cfg.model.patch_size = 0 if p == own else p
    if auto:
        why.append(f"model: {name} " + (
            f"(the smallest ViT: {labelled} labelled images are too few for a wider one "
            "from random weights)" if small and epochs >= MIN_EPOCHS else
            f"(the largest that trains at least {MIN_EPOCHS} epochs in the budget)"
            if epochs >= MIN_EPOCHS else
            f"(the smallest candidate: the budget allows {max(epochs, 0)} epochs; "
            f"{MIN_EPOCHS} or more learn better, so give a larger --budget)"))
    else:
        why.append(f"model: {name} (given)")
    why.extend(geo_why)
    cfg.data.batch_size = batch
    why.append(f"batch {batch}: {steps_per_epoch} steps per epoch over {train_images} "
               "training images")
    if "epochs" not in explicit:
        epochs = max(3, min(300, epochs))
        if random_init:
            cfg.recipe.kind = "full"
            cfg.recipe.stages = [StageConfig("full", epochs, lr or 5e-4, "all", 1.0)]
            cfg.data.label_smoothing = 0.05
        else:
            total = sum(s.epochs for s in cfg.stage_plan()) or 1
            scale = epochs / total
            stages = cfg.stage_plan()
            for s in stages:
                s.epochs = max(1, round(s.epochs * scale))
            cfg.recipe.stages = stages
        why.append(f"epochs {sum(s.epochs for s in cfg.stage_plan())}: what fits the "
                   f"{_duration(budget)} budget at the measured step time")
    counts = list(fp.classes.values())
    if counts and min(counts) > 0 and max(counts) / min(counts) > 1.5 \
            and "data.balance" not in explicit:
        cfg.data.balance = "loss"
        why.append(f"class-balanced loss: the classes are {max(counts) / min(counts):.1f}:1")
    n_epochs = sum(s.epochs for s in cfg.stage_plan())
    steps = steps_per_epoch * n_epochs
    est = Estimate(step, steps, run_seconds(
        step, steps_per_epoch, batch, train_images, val_images, costs,
        [s.epochs for s in cfg.stage_plan()]), peak)
    return DataPlan(cfg, why, est)


def epoch_seconds(step: float, steps_per_epoch: int, batch: int, train_images: int,
                  val_images: int, costs: RunCosts) -> float:
    """One epoch once the images are cached: the steps with their images' augmentation,
    validation (forward passes and its images) and the per-epoch writes."""
    val_batches = -(-val_images // batch)
    return (steps_per_epoch * step + train_images * costs.train_item
            + val_batches * step * FORWARD_SHARE + val_images * costs.val_item
            + costs.epoch_writes)


def run_seconds(step: float, steps_per_epoch: int, batch: int, train_images: int,
                val_images: int, costs: RunCosts, stage_epochs: list[int]) -> float:
    """A whole run: its epochs, the first read of every image, and the ``last``
    checkpoints (one per stage, and one per LAST_CHECKPOINT_S of training)."""
    per = epoch_seconds(step, steps_per_epoch, batch, train_images, val_images, costs)
    train = per * sum(stage_epochs) + (train_images + val_images) * costs.first_read
    writes = sum(1 for e in stage_epochs if e > 0) + int(train // LAST_CHECKPOINT_S)
    return train + writes * costs.last_checkpoint


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def data_fingerprint(src: str, *, patient_id: str = "check", sample: int = 16,
                     sampled: list | None = None) -> Fingerprint:
    """Count the images, patients and classes of ``src`` and measure the native size of a
    few images (header reads only for DICOM). ``sampled``, when given, receives those
    few records (the probe times their reading and augmentation)."""
    from collections import Counter

    from vitdesk.data.sources import load_records

    records = load_records(src, patient_id=patient_id)
    classes = Counter(r.label for r in records if r.label is not None)
    step = max(1, len(records) // sample)
    sides = []
    for r in records[::step][:sample]:
        if sampled is not None:
            sampled.append(r)
        side = _native_side(r.path, r.kind)
        if side:
            sides.append(side)
    sides.sort()
    native = sides[len(sides) // 2] if sides else 224
    kind = "dicom" if records and records[0].kind == "dicom" else "image"
    return Fingerprint(len(records), len({r.patient for r in records}),
                       dict(sorted(classes.items())), int(native), kind)


def _native_side(path: str, kind: str) -> int | None:
    try:
        if kind == "dicom":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["Rows", "Columns"])
            return max(int(ds.Rows), int(ds.Columns))
        from PIL import Image

        with Image.open(path) as im:
            return max(im.size)
    except Exception:  # noqa: BLE001 - an unreadable file does not decide the size
        return None



def teacher_reason(fp: Fingerprint) -> str | None:
    """Why the plan trains a CNN teacher and distils it into the ViT, or None.

    On a small labelled set a small CNN from scratch beats a ViT (its convolutions
    assume locality; the ViT must learn it from the data): DeiT's distillation hands
    that bias over.
    """
    labelled = sum(fp.classes.values())
    if labelled >= SMALL_LABELLED:
        return None
    return (f"distillation: {labelled} labelled images is a small set, where a CNN from "
            "scratch learns faster than a ViT: the CNN is trained first and teaches the "
            "ViT (its predicted classes as targets, DeiT's hard distillation)")
