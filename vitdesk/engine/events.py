"""Training events: small frozen dataclasses of plain data (no tensors, no Qt).

The trainer emits them to any number of listeners; each has ``describe()`` for the
console (:class:`vitdesk.console.ConsoleProgress` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageStarted:
    """A fine-tuning stage begins."""

    stage: int
    name: str
    epochs: int
    trainable_params: int

    def describe(self) -> str:
        return (f"stage {self.stage + 1} '{self.name}': {self.epochs} epoch(s), "
                f"{self.trainable_params:,} trainable parameters")


@dataclass(frozen=True)
class StepDone:
    """An optimizer step (emitted every ``log_every`` steps: each costs a device sync)."""

    stage: int
    epoch: int
    step: int
    global_step: int
    loss: float
    lr: float
    images_per_s: float

    def describe(self) -> str:
        return ""  # too frequent for the console; the GUI plots it


@dataclass(frozen=True)
class EpochEnded:
    """An epoch finished and was validated (val values are NaN without a val set)."""

    stage: int
    epoch: int
    global_step: int
    train_loss: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float

    def describe(self) -> str:
        return (f"stage {self.stage + 1} epoch {self.epoch + 1}: train loss "
                f"{self.train_loss:.4f}  val loss {self.val_loss:.4f}  val acc "
                f"{self.val_acc:.3f}  lr {self.lr:.2e}  ({self.seconds:.1f} s)")


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint (``kind`` last or best) was written atomically."""

    path: str
    kind: str

    def describe(self) -> str:
        return f"saved {self.kind} checkpoint" if self.kind == "best" else ""


@dataclass(frozen=True)
class TrainingDone:
    """The run finished (also after early stopping)."""

    best_val_acc: float
    best_val_loss: float
    run_dir: str

    def describe(self) -> str:
        return (f"done: best val acc {self.best_val_acc:.3f}, best val loss "
                f"{self.best_val_loss:.4f} -> {self.run_dir}")


@dataclass(frozen=True)
class TrainingFailed:
    """The run stopped on an error or a cancel (the last checkpoint is intact)."""

    message: str

    def describe(self) -> str:
        return f"training stopped: {self.message}"
