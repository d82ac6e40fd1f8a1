"""``vitdesk train``: build the run config from file + flags, then run the engine."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from vitdesk.config import RunConfig, load_config

STAGED_RANDOM_WARNING = (
    "warning: staged fine-tuning of a random backbone is meaningless (the frozen blocks "
    "hold no learned features): switching to --recipe full; pass --force-staged to keep it"
)


_SIMPLE = {
    "val": "data.val_source", "model": "model.name", "pretrained": "weights.pretrained",
    "img_size": "model.img_size", "window": "data.window", "batch_size": "data.batch_size",
    "device": "device", "seed": "seed", "teacher": "teacher.run",
    "temperature": "teacher.temperature", "alpha": "teacher.alpha",
    "unlabelled": "teacher.unlabelled", "patient_id": "data.patient_id",
}


def config_from_args(args: argparse.Namespace, warn: Any = None) -> RunConfig:
    """The run configuration: ``--config`` + flags; on ``--resume`` the run's own config.

    A resumed run keeps its ``config.toml``. The command may repeat the flags that
    started it (``--epochs 1,1,1`` that a random backbone turned into one stage of 3 is
    accepted per stage or as the total); a flag that would change what is trained is
    refused naming the field and both values. Data paths and the device may change.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    out = getattr(args, "out", None)
    stored_path = Path(out).expanduser() / "config.toml" if out else None
    if args.resume and stored_path is not None and stored_path.is_file():
        return _resume_config(args, load_config(stored_path), warn)
    cfg = load_config(args.config) if args.config else RunConfig()
    cfg = _apply_flags(cfg, args, warn, with_epochs=True)
    if out:
        cfg.out = out
    elif not args.config:
        cfg.out = str(Path("runs") / f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg.resolved().validate()


def _apply_flags(cfg: RunConfig, args: argparse.Namespace, warn: Any,
                 with_epochs: bool) -> RunConfig:
    """``cfg`` with the flags applied as a fresh run applies them."""
    from vitdesk.engine.models import is_cnn_name

    cfg.data.source = args.data
    for attr, dotted in _SIMPLE.items():
        value = getattr(args, attr, None)
        if value is not None:
            cfg.set(dotted, value)
    distill = getattr(args, "distill", None)
    if distill and not cfg.teacher.run:
        warn(f"warning: --distill {distill} has no effect without --teacher RUN")
    if distill and hasattr(cfg.teacher, "mode"):
        cfg.teacher.mode = distill  # recorded in config.toml where the config has the field
    if getattr(args, "recipe", None) and args.recipe != cfg.recipe.kind:
        cfg.recipe.kind = args.recipe
        cfg.recipe.stages = []  # the new recipe's default plan
    elif (not args.config and not getattr(args, "recipe", None)
          and is_cnn_name(cfg.model.name) and cfg.recipe.kind == "staged"):
        # CNNs default to the full recipe (there are no ViT blocks to unfreeze in stages)
        cfg.recipe.kind, cfg.recipe.stages = "full", []
    if getattr(args, "force_staged", False):
        cfg.recipe.force_staged = True
    epochs = getattr(args, "epochs", None)
    if cfg.staged_on_random_backbone():
        warn(STAGED_RANDOM_WARNING)
        total = None
        if epochs:
            try:
                total = sum(int(v) for v in str(epochs).split(",") if v.strip())
            except ValueError:
                total = None  # set_epochs below reports the bad value
        cfg.switch_to_full()
        if total is not None:
            epochs = str(total)
    if epochs and with_epochs:
        cfg.set_epochs(epochs)
    return cfg


def _resume_config(args: argparse.Namespace, stored: RunConfig, warn: Any) -> RunConfig:
    """The stored config of the run in ``--out``, once the flags agree with it."""
    from vitdesk.config import resume_differences
    from vitdesk.errors import ConfigError

    base = load_config(args.config) if args.config else RunConfig()
    said: list[str] = []
    requested = _apply_flags(base, args, said.append, with_epochs=False).resolved()
    if args.config:
        fields = None  # the same config file: every field must agree
    else:  # only what the flags set: the rest of a fresh config is defaults, not a request
        fields = {d for a, d in _SIMPLE.items() if getattr(args, a, None) is not None}
        if getattr(args, "distill", None):
            fields.add("teacher.mode")
        if getattr(args, "recipe", None) or STAGED_RANDOM_WARNING in said:
            fields.add("recipe.kind")  # a random backbone switched staged to full
        if getattr(args, "force_staged", False):
            fields |= {"recipe.force_staged", "recipe.kind"}
    epochs = getattr(args, "epochs", None)
    diffs = resume_differences(stored, requested, fields, str(epochs) if epochs else None)
    if diffs:
        raise ConfigError(
            f"cannot resume {args.out}: {'; '.join(diffs)}: repeat the run's settings (see "
            "its config.toml), or start a new run with another --out"
        )
    cfg = stored
    cfg.data.source = args.data
    if getattr(args, "val", None) is not None:
        cfg.data.val_source = args.val
    if getattr(args, "device", None) is not None:
        cfg.device = args.device
    cfg.out = args.out
    return cfg.resolved().validate()


def run(args: argparse.Namespace) -> int:
    from vitdesk.console import ConsoleProgress
    from vitdesk.engine.run import train
    from vitdesk.jobs import CancelToken

    cfg = config_from_args(args)
    token = CancelToken()

    def on_sigint(signum: int, frame: Any) -> None:
        # first Ctrl-C: stop at the next safe point with checkpoints/last written;
        # a second one interrupts at once
        print("\nvitdesk: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)
        token.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        out = train(cfg, token, [ConsoleProgress()], resume=bool(args.resume),
                    distill_mode=getattr(args, "distill", None))
    finally:
        signal.signal(signal.SIGINT, previous)
    print(out)
    return 0
