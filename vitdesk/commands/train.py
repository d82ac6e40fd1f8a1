"""``vitdesk train``: build the run config from file + flags, plan it, run the engine.

Every rule about the run (random backbone or CNN -> full, pooling, distillation mode,
teacher, resume) is :mod:`vitdesk.engine.plan`'s; this module only turns flags into a
requested config.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

from vitdesk.config import RunConfig, load_config
from vitdesk.engine.plan import Plan, apply_rules, inherit_parent, plan_resume, plan_run
from vitdesk.errors import ConfigError

_SIMPLE = {
    "val": "data.val_source", "model": "model.name", "pretrained": "weights.pretrained",
    "img_size": "model.img_size", "window": "data.window", "batch_size": "data.batch_size",
    "device": "device", "seed": "seed", "teacher": "teacher.run",
    "temperature": "teacher.temperature", "alpha": "teacher.alpha",
    "unlabelled": "teacher.unlabelled", "patient_id": "data.patient_id",
    "distill": "teacher.mode", "rehearsal": "continual.rehearsal", "ewc": "continual.ewc",
    "adapt": "adapt.source",
}


def requested_config(args: argparse.Namespace) -> RunConfig:
    """``--config`` (or the defaults) with the flags applied; no rule applied yet."""
    cfg = load_config(args.config) if args.config else RunConfig()
    if not args.config and getattr(args, "model", None) is None:
        cfg.model.name = "auto"  # no model named: the planner chooses
    cfg.data.source = args.data
    for attr, dotted in _SIMPLE.items():
        value = getattr(args, attr, None)
        if value is not None:
            cfg.set(dotted, value)
    if getattr(args, "recipe", None) and args.recipe != cfg.recipe.kind:
        cfg.recipe.kind = args.recipe
        cfg.recipe.stages = []  # the new recipe's default plan
    if getattr(args, "force_staged", False):
        cfg.recipe.force_staged = True
    if getattr(args, "continue_from", None):
        cfg.continual.continue_from = args.continue_from
    out = getattr(args, "out", None)
    if out:
        cfg.out = out
    elif not args.config:
        cfg.out = str(Path("runs") / f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The planned run: ``--config`` + flags through the plan; on ``--resume`` the run's
    own config, once the flags agree with it (:func:`vitdesk.engine.plan.plan_resume`).

    ``--model auto`` (the default when neither ``--model`` nor ``--config`` names one)
    lets the planner choose the model, image and patch size, batch and epochs for the
    data, this machine and ``--budget``: ``plan.reasons`` and ``plan.estimate`` say what
    it chose and how long it should take.
    """
    out = getattr(args, "out", None)
    stored_path = Path(out).expanduser() / "config.toml" if out else None
    if args.resume and stored_path is not None and stored_path.is_file():
        return _resume_plan(args, load_config(stored_path))
    epochs = getattr(args, "epochs", None)
    cfg = requested_config(args)
    if getattr(args, "earlier", None) and not cfg.continual.continue_from:
        raise ConfigError("--earlier names the data of the run to continue: use it with "
                          "--continue RUN")
    if cfg.continual.continue_from:  # the parent's model and window, unless a flag differs
        cfg = inherit_parent(cfg, cfg.continual.continue_from, explicit_fields(args))
    planned = _auto(args, cfg) if cfg.model.name == "auto" else None
    plan = plan_run(planned.cfg if planned else cfg,
                    epochs=str(epochs) if epochs else None, check_files=True)
    if planned is not None:
        plan.reasons, plan.estimate = planned.reasons, planned.estimate
        before = sum(s.epochs for s in planned.cfg.stage_plan())
        after = sum(s.epochs for s in plan.cfg.recipe.stages)
        if plan.estimate is not None and before and after != before:  # --epochs given
            plan.estimate = plan.estimate.scaled(after / before)
    return plan


def print_plan(plan: Plan, say: Any = None) -> None:
    """The planner's reasons and estimate, then the notices (stderr by default)."""
    say = say or (lambda msg: print(msg, file=sys.stderr))
    for line in plan.reasons:
        say(f"plan: {line}")
    if plan.estimate is not None:
        say(f"plan: estimate {plan.estimate.describe()}")
    for notice in plan.notices:
        say(f"warning: {notice}")


def explicit_fields(args: argparse.Namespace) -> set[str]:
    """The dotted fields the flags set (the planner keeps them as given)."""
    fields = {d for a, d in _SIMPLE.items() if getattr(args, a, None) is not None}
    if getattr(args, "epochs", None):
        fields.add("epochs")
    if getattr(args, "recipe", None):
        fields.add("recipe.kind")
    return fields


def _auto(args: argparse.Namespace, cfg: RunConfig) -> Any:
    from vitdesk.engine.plan import parse_budget
    from vitdesk.engine.probe import plan_auto

    budget = parse_budget(getattr(args, "budget", None))
    planned, _machine = plan_auto(cfg, budget_s=budget, explicit=explicit_fields(args))
    if getattr(args, "out", None) is None and not args.config:
        planned.cfg.out = str(Path("runs") / f"{planned.cfg.model.name}-"
                              f"{time.strftime('%Y%m%d-%H%M%S')}")
    return planned


def config_from_args(args: argparse.Namespace, warn: Any = None) -> RunConfig:
    """The planned config; its notices go to ``warn`` (stderr by default)."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    plan = plan_from_args(args)
    print_plan(plan, warn)
    return plan.cfg


def _resume_plan(args: argparse.Namespace, stored: RunConfig) -> Plan:
    """The stored config of the run in ``--out`` (the flags must agree with it).

    The command may repeat the flags that started it (``--epochs 1,1,1`` that a random
    backbone turned into one stage of 3 is accepted per stage or as the total).
    """
    base = requested_config(args)
    requested = apply_rules(base).cfg
    if args.config:
        fields = None  # the same config file: every field must agree
    else:  # only what the flags set: the rest of a fresh config is defaults, not a request
        fields = {d for a, d in _SIMPLE.items() if getattr(args, a, None) is not None}
        if getattr(args, "recipe", None) or requested.recipe.kind != base.recipe.kind:
            fields.add("recipe.kind")  # a rule switched staged to full
        if getattr(args, "force_staged", False):
            fields |= {"recipe.force_staged", "recipe.kind"}
    take: dict[str, Any] = {"data.source": args.data, "out": args.out}
    if getattr(args, "val", None) is not None:
        take["data.val_source"] = args.val
    if getattr(args, "device", None) is not None:
        take["device"] = args.device
    epochs = getattr(args, "epochs", None)
    return plan_resume(stored, requested, fields, str(epochs) if epochs else None,
                       take=take, run=str(args.out))


def run(args: argparse.Namespace) -> int:
    from vitdesk.console import ConsoleProgress
    from vitdesk.engine.run import train
    from vitdesk.jobs import CancelToken

    if getattr(args, "folds", None) is None and args.resume and args.out and (
            Path(args.out).expanduser() / "cv.json").is_file():
        from vitdesk.errors import ConfigError

        raise ConfigError(f"{args.out} holds a cross-validation: resume it with the --folds K "
                          "it was started with")
    plan = plan_from_args(args)
    print_plan(plan)
    token = CancelToken()

    def on_sigint(signum: int, frame: Any) -> None:
        # first Ctrl-C: stop at the next safe point with checkpoints/last written;
        # a second one interrupts at once
        print("\nvitdesk: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)
        token.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    est = plan.estimate
    folds = getattr(args, "folds", None)
    if folds is not None:
        try:
            return _cross_validate(plan, int(folds), token, bool(args.resume))
        finally:
            signal.signal(signal.SIGINT, previous)
    try:
        out = train(plan.cfg, token, [ConsoleProgress()], resume=bool(args.resume),
                    planned=True, estimate=None if est is None else dataclasses.asdict(est),
                    earlier=getattr(args, "earlier", None))
    finally:
        signal.signal(signal.SIGINT, previous)
    if est is not None:
        print(closing_line(out, est.seconds), file=sys.stderr)
    print(out)
    return 0


def _cross_validate(plan: Plan, k: int, token: Any, resume: bool) -> int:
    """``--folds K``: the plan, resolved once, trained and evaluated on every fold."""
    from vitdesk.analysis.cv import cross_validate
    from vitdesk.console import ConsoleProgress

    est = plan.estimate
    if est is not None:
        print(f"plan: {k} folds, about {k * est.seconds:.0f} s of training in all",
              file=sys.stderr)
    res = cross_validate(plan.cfg, k, token, [ConsoleProgress()], resume=resume,
                         estimate=None if est is None else dataclasses.asdict(est))
    print(f"{k}-fold cross-validation (patients grouped and stratified, seed {res.seed}); "
          "each fold scored on its own test patients:")
    print(res.table())
    for note in res.notes:
        print(f"note: {note}")
    print(Path(plan.cfg.out).expanduser() / "cv.json")
    return 0


def closing_line(run: Path, estimated_s: float) -> str:
    """Trained time against the plan's estimate (from the run's ``env.json``)."""
    import json

    try:
        actual = float(json.loads((Path(run) / "env.json").read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"trained (the plan estimated {estimated_s:.0f} s)"
    return (f"trained in {actual:.0f} s; the plan estimated {estimated_s:.0f} s "
            f"({(actual - estimated_s) / estimated_s:+.0%})")
