"""Plain logic behind the Training tab (no Qt, no torch): plan text, defaults, progress/ETA.

Kept apart from the widgets so it is cheap to import and easy to test.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitdesk.config import RunConfig
from vitdesk.engine.cards import CARD, CARD_FORMAT
from vitdesk.engine.events import EpochEnded, StageStarted, StepDone, TrainingDone
from vitdesk.engine.plan import TEST_VIT_NAMES, describe_stage

# the ViTs, DeiT students for distillation, and CNN baselines / teachers (any other timm
# name can be typed in)
MODELS = ("vit_test_tiny", "vit_test_tiny_convstem", "vit_tiny_patch16_224",
          "vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_patch16_224",
          "deit_small_patch16_224", "vit_test_tiny_distilled",
          "deit_tiny_distilled_patch16_224", "cnn_test_tiny", "resnet18", "resnet50")


def native_img_size(model: str) -> int | None:
    """The resolution a timm name was trained at (``..._224`` -> 224; test model -> 32)."""
    if model in TEST_VIT_NAMES:
        return 32
    tail = model.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def plan_text(cfg: RunConfig) -> str:
    """One line per stage of the plan the engine will run, and the total."""
    stages = cfg.stage_plan()
    lines = [f"{i + 1}. {describe_stage(s)}" for i, s in enumerate(stages)]
    lines.append(f"total {sum(s.epochs for s in stages)} epoch(s)")
    return "\n".join(lines)


def default_run_folder(workspace: str | Path | None, now: float | None = None) -> Path:
    """WORKSPACE/runs/<timestamp> (or ~/vitdesk/runs/<timestamp> without a workspace)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = Path(workspace) if workspace else Path.home() / "vitdesk"
    return base / "runs" / stamp


@dataclass(frozen=True)
class Backbone:
    """A pretrained encoder (MAE or formula) found in a workspace (its ``card.json``)."""

    folder: str
    model: str
    img_size: int
    window: str
    epochs: int
    objective: str = "MAE"  # or the formula kind, e.g. "contours"

    def label(self) -> str:
        return (f"{self.objective} {Path(self.folder).name}: {self.model} {self.img_size}px, "
                f"{self.epochs} ep")


def find_backbones(workspace: str | Path | None) -> list[Backbone]:
    """Finished encoders in ``WORKSPACE/pretrain/*`` (unreadable cards are skipped)."""
    if not workspace:
        return []
    out = []
    for card in sorted((Path(workspace) / "pretrain").glob(f"*/{CARD}")):
        try:
            d = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if d.get("format") != CARD_FORMAT or not (card.parent / d.get("encoder", "")).is_file():
            continue
        out.append(Backbone(str(card.parent), str(d.get("model", "?")),
                            int(d.get("img_size", 0)), str(d.get("window_label", "")),
                            int(d.get("epochs", 0)),
                            str((d.get("formula") or {}).get("kind", "MAE"))))
    return out


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass
class RunProgress:
    """Follows the events of one run: where it is, images/s and the time left.

    Steps per epoch are learnt from the first finished epoch; the time per step
    from the wall clock since the first step seen (reset on pause), so the ETA
    includes validation and checkpointing.
    """

    stage_epochs: list[int]
    stage_names: list[str] = field(default_factory=list)
    stage: int = 0
    epoch: int = 0
    global_step: int = 0
    epochs_done: int = 0
    steps_per_epoch: int | None = None
    images_per_s: float = math.nan
    best_val_acc: float = math.nan
    best_val_loss: float = math.nan
    _anchor: tuple[float, int] | None = None
    _last_epoch_step: int | None = None
    _rate: float | None = None  # seconds per step

    @property
    def total_epochs(self) -> int:
        return sum(self.stage_epochs)

    def on_event(self, ev: Any, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        if isinstance(ev, StageStarted):
            self.stage, self.epoch = ev.stage, 0
        elif isinstance(ev, StepDone):
            self.stage, self.epoch, self.global_step = ev.stage, ev.epoch, ev.global_step
            if math.isfinite(ev.images_per_s):
                self.images_per_s = ev.images_per_s
            if self._anchor is None:
                self._anchor = (now, ev.global_step)
            elif ev.global_step > self._anchor[1]:
                self._rate = (now - self._anchor[0]) / (ev.global_step - self._anchor[1])
        elif isinstance(ev, EpochEnded):
            if self._last_epoch_step is not None and ev.global_step > self._last_epoch_step:
                self.steps_per_epoch = ev.global_step - self._last_epoch_step
            elif self.steps_per_epoch is None and self.epochs_done == 0 and ev.global_step > 0:
                self.steps_per_epoch = ev.global_step  # the run's first epoch
            self._last_epoch_step = ev.global_step
            self.stage, self.epoch, self.global_step = ev.stage, ev.epoch + 1, ev.global_step
            self.epochs_done += 1
        elif isinstance(ev, TrainingDone):
            self.best_val_acc, self.best_val_loss = ev.best_val_acc, ev.best_val_loss

    def add_past_epochs(self, rows: list[dict[str, Any]]) -> None:
        """Count the epochs of a resumed run's history."""
        self.epochs_done = len(rows)
        if rows:
            self._last_epoch_step = int(rows[-1].get("step", 0))
            self.global_step = self._last_epoch_step
            if len(rows) >= 2:
                self.steps_per_epoch = int(rows[-1]["step"]) - int(rows[-2]["step"]) or None

    def paused(self) -> None:
        """Forget the timing anchor: time spent paused is not training time."""
        self._anchor, self._rate = None, None

    def eta_seconds(self) -> float | None:
        if self.steps_per_epoch is None or self._rate is None:
            return None
        total = self.total_epochs * self.steps_per_epoch
        return max(0.0, (total - self.global_step) * self._rate)

    def fraction(self) -> float:
        return min(1.0, self.epochs_done / max(1, self.total_epochs))

    def status(self) -> str:
        name = (self.stage_names[self.stage] if self.stage < len(self.stage_names) else "")
        n_ep = self.stage_epochs[self.stage] if self.stage < len(self.stage_epochs) else 0
        parts = [f"stage {self.stage + 1}/{len(self.stage_epochs)} {name}".rstrip(),
                 f"epoch {min(self.epoch + 1, max(n_ep, 1))}/{n_ep}",
                 f"step {self.global_step}"]
        if math.isfinite(self.images_per_s):
            parts.append(f"{self.images_per_s:.0f} img/s")
        eta = self.eta_seconds()
        parts.append("ETA " + (format_seconds(eta) if eta is not None else "…"))
        return " · ".join(parts)


def format_seconds(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def epoch_line(ev: EpochEnded, stage_names: list[str]) -> str:
    """The log line of one epoch (short: the log is narrow)."""
    name = stage_names[ev.stage] if ev.stage < len(stage_names) else str(ev.stage + 1)
    val = ("" if math.isnan(ev.val_loss) else
           f" · val {ev.val_loss:.3f} · acc {ev.val_acc:.3f}")
    return (f"{name} {ev.epoch + 1}: loss {ev.train_loss:.3f}{val} · lr {ev.lr:.1e} · "
            f"{ev.seconds:.1f}s")


def history_point(row: dict[str, Any]) -> tuple[int, float, float, float]:
    """(step, train_loss, val_loss, val_acc) of one history line (NaN when absent)."""
    return (int(row.get("step", 0)), _nan(row.get("train_loss")), _nan(row.get("val_loss")),
            _nan(row.get("val_acc")))
