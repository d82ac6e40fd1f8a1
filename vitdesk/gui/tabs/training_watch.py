"""A training run that learned nothing: validation accuracy stuck at the majority rate.

A classifier that answers the largest class for every slice scores exactly that class's
share of the validation set, epoch after epoch, and its curve looks like a plateau, not
a failure. The validation labels are in the run folder's ``split.json`` (written before
the first step), so the share is known while the run goes on; two epochs in a row at it
are flagged. Plain Python, no Qt: the Training tab shows the text.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

PATIENCE = 2  # consecutive epochs at the majority rate before the flag


def val_class_shares(run_dir: str | Path) -> tuple[dict[str, float], int] | None:
    """({class: share of the validation slices}, n) from ``split.json``, or None when the
    run folder does not list its validation labels (yet)."""
    try:
        doc = json.loads((Path(run_dir) / "split.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = (doc.get("splits") or {}).get("val") or []
    labels = [str(r["label"]) for r in rows if isinstance(r, dict) and r.get("label") is not None]
    if not labels:
        return None
    counts = Counter(labels)
    return {c: k / len(labels) for c, k in counts.items()}, len(labels)


class OneClassWatch:
    """Feed it each epoch's validation accuracy; it answers once with a warning when the
    accuracy has stayed at the largest class's share for :data:`PATIENCE` epochs."""

    def __init__(self, run_dir: str | Path, patience: int = PATIENCE) -> None:
        self.run_dir = Path(run_dir)
        self.patience = patience
        self.streak = 0
        self.flagged = False
        self._shares: tuple[dict[str, float], int] | None = None

    def majority(self) -> tuple[str, float, int] | None:
        """(class, share, n validation slices) of the largest validation class."""
        if self._shares is None:
            self._shares = val_class_shares(self.run_dir)
        if self._shares is None:
            return None
        shares, n = self._shares
        cls = max(sorted(shares), key=lambda c: shares[c])
        return cls, shares[cls], n

    def check(self, val_acc: float) -> str | None:
        """The warning text the first time the run is stuck, else None."""
        if self.flagged or not math.isfinite(val_acc):
            return None
        top = self.majority()
        if top is None:
            return None
        cls, share, n = top
        if share >= 1.0:
            return None  # one class only: nothing else could be predicted
        # accuracies are counts over n slices: equal within half a slice
        if abs(val_acc - share) <= 0.5 / n:
            self.streak += 1
        else:
            self.streak = 0
        if self.streak < self.patience:
            return None
        self.flagged = True
        return (f"Validation accuracy has stayed at {share:.1%} for {self.streak} epochs: "
                f"exactly the share of '{cls}' among the {n} validation slices. The model "
                "probably predicts that one class for every slice. Check the labels and the "
                "class balance (Dataset tab), try balancing by sampler or a lower learning "
                "rate, or train longer.")
