"""Typed options of an evaluation: one object instead of two dozen keyword arguments.

:class:`EvalOptions` is what :func:`vitdesk.analysis.evaluation.evaluate_run` reads;
the CLI commands, the report and the GUI tabs build one (``EvalOptions(tta=...)`` or
``options.replace(...)``) so every caller names the same settings the same way, and
``metrics.json``'s ``settings`` records them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vitdesk.errors import ConfigError


@dataclass(frozen=True)
class EvalOptions:
    """What an evaluation computes and how.

    Attributes:
        split: the run's saved split to score with its own data source ("test", "val").
        tta: a :class:`~vitdesk.analysis.tta.TTAConfig` (test-time augmentation) or None.
        robustness: HU perturbation and FGSM/PGD curves on ``robustness_cases`` slices.
        hu_strengths: ``{"noise_hu": (...), "shift_hu": (...), "contrast": (...)}``.
        adversarial_eps: attack strengths in [0, 1] image units.
        shift: Mahalanobis shift of the scored slices against the training split.
        shift_percentile: alarm threshold as a percentile of held-out distances.
        shift_train_cases: training slices the shift Gaussian is fitted on (at most).
        fairness: per-group metrics by sex and age band.
        gap_intervals: patient-bootstrap intervals of the fairness gap figures.
        attention_samples: slices with attention overlays (report).
        max_cases: score at most this many slices (seeded subsample), None = all.
        robustness_cases: slices of the robustness curves (class-balanced subset).
        n_boot: bootstrap resamples of the confidence intervals.
        calibrate: temperature-scaled probabilities (the run's validation fit).
        conformal_alpha: error rate of split-conformal prediction sets (None: no sets).
        conformal_method: "lac" or "aps".
        patient_score, topk: patient aggregation (see ``metrics.patient_scores``).
        batch_size: slices per forward pass.
        seed: every subsample and bootstrap.
        device: "auto", "cpu" or "cuda" (ignored for an already loaded run).
    """

    split: str = "test"
    tta: Any = None
    robustness: bool = True
    hu_strengths: dict[str, Sequence[float]] | None = None
    adversarial_eps: Sequence[float] | None = None
    shift: bool = True
    shift_percentile: float = 95.0
    shift_train_cases: int = 256
    fairness: bool = True
    gap_intervals: bool = True
    attention_samples: int = 4
    max_cases: int | None = None
    robustness_cases: int = 64
    n_boot: int = 1000
    calibrate: bool = True
    conformal_alpha: float | None = 0.1
    conformal_method: str = "lac"
    patient_score: str = "topk"
    topk: float = 3
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"

    def replace(self, **changes: Any) -> EvalOptions:
        """A copy with ``changes``; an unknown name is a ConfigError naming it."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"evaluation option(s) {', '.join(unknown)} do not exist; "
                              f"use one of {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def check(self) -> EvalOptions:
        """Validate the values (ConfigError naming the field and what to use)."""
        if self.n_boot < 0:
            raise ConfigError(f"n_boot: {self.n_boot} is negative; use 0 (no intervals) "
                              "or e.g. 1000")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be at least 1")
        if not 0 < self.shift_percentile < 100:
            raise ConfigError(f"shift_percentile: {self.shift_percentile} must be between "
                              "0 and 100 (e.g. 95)")
        if self.conformal_method not in ("lac", "aps"):
            raise ConfigError(f"conformal_method: '{self.conformal_method}' is unknown; "
                              "use lac or aps")
        if self.tta is not None:
            self.tta.validate()
        return self

    @property
    def tta_views(self) -> int:
        """Number of test-time views (1: TTA off)."""
        return 1 if self.tta is None else len(self.tta.views())


def tta_words(tta: Any) -> str:
    """"TTA off" or "TTA on (k views)" for a TTAConfig, its recorded dict (``n_views``)
    or None: said next to accuracies."""
    if not tta:
        return "TTA off"
    if isinstance(tta, dict):
        return f"TTA on ({tta.get('n_views', '?')} views)"
    return f"TTA on ({len(tta.views())} views)"


def accuracy_words(level: str, cut: str, tta: Any) -> str:
    """What an accuracy number is: its level, its decision cut and whether TTA was on,
    e.g. "slice accuracy [p >= 0.5, TTA off]". Every tab and the report say it this way
    so the same settings read, and give, the same number everywhere."""
    return f"{level} accuracy [{cut or 'argmax'}, {tta_words(tta)}]"


__all__ = ["EvalOptions", "accuracy_words", "tta_words"]
