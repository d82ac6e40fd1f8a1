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


def config_from_args(args: argparse.Namespace, warn: Any = None) -> RunConfig:
    """The run configuration: ``--config`` (or the run's own config on ``--resume``) + flags."""
    from vitdesk.engine.models import is_cnn_name

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    out = getattr(args, "out", None)
    if args.config:
        cfg = load_config(args.config)
    elif args.resume and out and (Path(out) / "config.toml").is_file():
        cfg = load_config(Path(out) / "config.toml")
    else:
        cfg = RunConfig()
    cfg.data.source = args.data
    simple = {
        "val": "data.val_source", "model": "model.name", "pretrained": "weights.pretrained",
        "img_size": "model.img_size", "window": "data.window", "batch_size": "data.batch_size",
        "device": "device", "seed": "seed", "teacher": "teacher.run",
        "temperature": "teacher.temperature", "alpha": "teacher.alpha",
        "unlabelled": "teacher.unlabelled",
    }
    for attr, dotted in simple.items():
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
    elif (not args.config and not args.resume and not getattr(args, "recipe", None)
          and is_cnn_name(cfg.model.name) and cfg.recipe.kind == "staged"):
        # CNNs default to the full recipe (there are no ViT blocks to unfreeze in stages)
        cfg.recipe.kind, cfg.recipe.stages = "full", []
    if getattr(args, "force_staged", False):
        cfg.recipe.force_staged = True
    epochs = getattr(args, "epochs", None)
    if not args.resume and cfg.staged_on_random_backbone():
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
    if epochs:
        cfg.set_epochs(epochs)
    if out:
        cfg.out = out
    elif not args.config:
        cfg.out = str(Path("runs") / f"{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
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
