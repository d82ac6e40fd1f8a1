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
  a distilled student; a teacher must share image size and window;
- backbone cards (window, size) and a coarse ViT grid give notices;
- a resumed run keeps its ``config.toml``; a flag that would change it is refused.

The data-driven planner (image size, patch, batch, epochs from a fingerprint of the
data and a measured step time) lives in :mod:`vitdesk.engine.planner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitdesk.config import (
    RESUME_FREE,
    RunConfig,
    coarse_grid_warning,
    load_config,
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
TEST_VIT_NAMES = frozenset({"vit_test_tiny", "vit_test_tiny_distilled"})
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
    elif cfg.staged_on_random_backbone():
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
    coarse = coarse_grid_warning(name, cfg.model.img_size)
    if coarse:
        notices.append(coarse)
    return Plan(cfg.resolved(), notices)


def check_run(cfg: RunConfig, check_files: bool = True) -> None:
    """Validate a planned config; with ``check_files`` also its weights and teacher."""
    cfg.validate()
    if not check_files:
        return
    src = cfg.weights.pretrained.strip()
    if src.lower() == "hub" and cfg.model.name in TEST_VIT_NAMES | CNN_TEST_NAMES:
        raise ConfigError(f"{cfg.model.name} is a test model without hub weights: use "
                          "weights 'none' or a file")
    if src.lower() not in ("hub", "none") and not Path(src).expanduser().exists():
        raise ConfigError(f"weights '{src}' not found: choose a file or folder that exists")
    check_teacher_files(cfg)


def check_teacher_files(cfg: RunConfig) -> None:
    """The teacher run exists, is a run, and fits (image size, window); the unlabelled
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
            problem = teacher_mismatch(cfg, t.run, theirs.model.img_size, theirs.data.window)
            if problem:
                raise ConfigError(problem)
    if t.unlabelled and not Path(t.unlabelled).expanduser().exists():
        raise ConfigError(f"teacher.unlabelled '{t.unlabelled}' not found: choose a folder, "
                          "CSV or workspace of images")


def teacher_mismatch(cfg: RunConfig, run: str, img_size: int, window: str) -> str | None:
    """Why a teacher with this image size and window cannot teach ``cfg`` (else None)."""
    from vitdesk.imaging.windowing import WindowSpec

    if int(img_size) != int(cfg.model.img_size):
        return (f"teacher run {run} uses image size {img_size}, this run "
                f"{cfg.model.img_size}: use the same image size")
    try:
        same = WindowSpec.parse(window) == WindowSpec.parse(cfg.data.window)
    except ConfigError:
        return None  # an unreadable window is reported by validate() or the teacher's load
    if not same:
        return (f"teacher run {run} uses window '{window}', this run '{cfg.data.window}': "
                "use the same window")
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
