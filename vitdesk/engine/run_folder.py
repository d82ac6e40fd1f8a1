"""The layout of a run folder before and after its first checkpoint: what a run
writes, when a folder may be used, resumed or started again in place. Fine-tuning
(engine.run), pretraining (engine.pretrain) and the GUI's training form all ask here.
"""

from __future__ import annotations

from pathlib import Path

from vitdesk.engine import checkpoint as ckpt
from vitdesk.errors import CheckpointError, ConfigError

# What a training run writes into its folder before its first checkpoint.
RUN_FILES = ("config.toml", "split.json", "history.jsonl", "metrics.json", "env.json")


def dead_end_folder(out: Path) -> bool:
    """True for a run folder that a run left before its first checkpoint.

    It holds only what a run writes (a ``config.toml``, maybe the split, history and
    metrics) and no ``last`` or ``best`` checkpoint: nothing trained is in it, so a new
    run may take its place.
    """
    if not (out / "config.toml").is_file():
        return False
    folder = out / "checkpoints"
    if ckpt.checkpoint_exists(folder, "last") or ckpt.checkpoint_exists(folder, "best"):
        return False
    for p in out.iterdir():
        if p.name == "checkpoints" and p.is_dir():
            continue
        if p.name not in RUN_FILES and not (p.name.startswith(".") and p.name.endswith(".tmp")):
            return False  # something the user put there: not ours to replace
    return True


def check_out_folder(out: Path, resume: bool) -> str:
    """What to do with the output folder: ``new``, ``restart`` (a dead end) or ``resume``.

    Refuses a used folder unless resuming, and a resume of a folder that is no run. A
    folder left before its first checkpoint (:func:`dead_end_folder`) is started again
    in place, with or without ``--resume``.
    """
    if out.exists() and out.is_dir() and dead_end_folder(out):
        return "restart"
    if resume:
        if not ckpt.checkpoint_exists(out / "checkpoints", "last"):
            raise CheckpointError(
                f"cannot resume: {out} has no checkpoints/last.json; start without --resume"
            )
        return "resume"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"output folder {out} already exists and is not empty: choose a new --out, or add "
            "--resume to continue it"
        )
    return "new"


def clear_dead_end(out: Path) -> None:
    """Remove what a run left before its first checkpoint (see :func:`dead_end_folder`)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for p in out.glob(".*.tmp"):
        p.unlink(missing_ok=True)
    folder = out / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and (p.name.startswith(("last-", "best-", "."))):
                p.unlink(missing_ok=True)
