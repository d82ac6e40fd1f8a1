"""``vitdesk pretrain``: MAE pretraining of a ViT encoder on unlabelled slices, or
formula-driven supervised pretraining on generated images (``--formula``).

On ``--resume`` the settings come from the folder's last checkpoint; flags given again
must agree with it, except ``--epochs`` (raise it to train further) and ``--device``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from vitdesk.errors import ConfigError

_FLAGS = {"model": "model", "img_size": "img_size", "window": "window", "epochs": "epochs",
          "batch_size": "batch_size", "device": "device", "seed": "seed",
          "formula": "formula", "formula_classes": "formula_classes",
          "formula_per_class": "formula_per_class", "base_lr": "base_lr",
          "workers": "workers"}


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`PretrainConfig` for these flags (the saved one on ``--resume``)."""
    from vitdesk.engine.pretrain import PretrainConfig, saved_config

    cfg = PretrainConfig()
    saved = saved_config(args.out) if args.resume else None
    if saved is not None:
        cfg = saved
    cfg.data = args.data or ""
    cfg.out = args.out
    cfg.resume = bool(args.resume)
    for attr, name in _FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            setattr(cfg, name, value)
    ratio = getattr(args, "mask_ratio", None)
    if ratio is not None:
        cfg.mask_ratio = float(ratio)
    from vitdesk.engine.plan import plan_pretrain

    return plan_pretrain(cfg)


def run(args: argparse.Namespace) -> int:
    from vitdesk.console import ConsoleProgress
    from vitdesk.engine.pretrain import pretrain
    from vitdesk.jobs import CancelToken

    if not str(args.out).strip():
        raise ConfigError("--out is empty: give a new folder for the encoder")
    cfg = config_from_args(args)
    token = CancelToken()

    def on_sigint(signum: int, frame: Any) -> None:
        # first Ctrl-C: stop at the next step with checkpoints/last written;
        # a second one interrupts at once
        print("\nvitdesk: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)
        token.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        out = pretrain(cfg, token, [ConsoleProgress()])
    finally:
        signal.signal(signal.SIGINT, previous)
    print(Path(out))
    return 0
