"""Split-conformal prediction sets: a set of classes per case that holds the true class
with probability at least ``1 - alpha``, and "refer" when the set is not one class.

Calibration scores come from the run's validation slices (patients the weights never
trained on), scored with the same calibrated, un-augmented probabilities the sets are
then built from. Two scores (Angelopoulos & Bates, "A gentle introduction to conformal
prediction", 2021):

- ``lac`` (least ambiguous classifier): score ``1 - p(true class)``; the set holds every
  class with ``1 - p <= q``. Smallest sets on average; a set may be empty.
- ``aps`` (adaptive prediction sets, Romano et al. 2020): score = the total probability
  of the classes ranked at or above the true one; the set holds the top classes until
  their total reaches ``q`` (the last one included). Sets grow with the model's doubt.

``q`` is the ``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` calibration scores
(infinite when ``n`` is too small: every class, every case referred). The rules match
MAPIE's (``SplitConformalClassifier``, ``include_last_label=True``); the tests compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener

METHODS = ("lac", "aps")
DEFAULT_ALPHA = 0.1
_EPS = 1e-8  # ties at the threshold go into the set (as MAPIE does)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1), or a DataError that says what to give."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        a = float("nan")
    if not 0 < a < 1:
        raise DataError(f"--alpha {alpha}: the error rate must be between 0 and 1 (e.g. 0.1 "
                        "for sets that hold the true class 90% of the time)")
    return a


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest score (inf when that exceeds n)."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    k = math.ceil((len(s) + 1) * (1 - alpha))
    return float(s[k - 1]) if 0 < k <= len(s) else float("inf")


def _sorted_cumsum(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.flip(np.argsort(probs, axis=1), axis=1)  # descending, as MAPIE sorts
    csum = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
    return order, np.take_along_axis(csum, np.argsort(order, axis=1), axis=1)


def scores(probs: np.ndarray, y: np.ndarray, method: str = "lac",
           u: np.ndarray | None = None) -> np.ndarray:
    """Non-conformity score of each labelled case (higher: the true class looks less likely).

    ``u`` (APS only): uniform draws that randomise the score (``- u * p(true)``) as in
    Romano et al.; None keeps it deterministic (a little conservative).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    p_true = p[np.arange(len(y)), y]
    if method == "lac":
        return 1.0 - p_true
    if method == "aps":
        _, csum = _sorted_cumsum(p)
        s = csum[np.arange(len(y)), y]
        return s - np.asarray(u) * p_true if u is not None else s
    raise DataError(f"conformal method '{method}' is unknown: use one of {', '.join(METHODS)}")


def prediction_sets(probs: np.ndarray, q: float, method: str = "lac") -> np.ndarray:
    """(N, K) booleans: class k is in case n's set."""
    p = np.asarray(probs, dtype=np.float64)
    if math.isinf(q):
        return np.ones(p.shape, dtype=bool)
    if method == "lac":
        return (1.0 - p) - q <= _EPS
    if method == "aps":
        _, csum = _sorted_cumsum(p)
        # the first class (by rank) whose running total reaches q is the last one in
        reached = np.where(csum - q >= -_EPS, csum, np.inf)
        last = np.argmin(reached, axis=1)
        none = ~np.isfinite(reached).any(axis=1)  # q above every total: all classes
        p_last = p[np.arange(len(p)), last]
        out = p - p_last[:, None] >= -_EPS
        out[none] = True
        return out
    raise DataError(f"conformal method '{method}' is unknown: use one of {', '.join(METHODS)}")


def refer(sets: np.ndarray) -> np.ndarray:
    """(N,) True where a set is not exactly one class: the case needs a human."""
    return np.asarray(sets).sum(axis=1) != 1


def set_labels(sets: np.ndarray, classes: list[str]) -> list[str]:
    """Each set as "a|b" in class order ("" for an empty set)."""
    return ["|".join(c for c, inside in zip(classes, row, strict=True) if inside)
            for row in np.asarray(sets, dtype=bool)]


@dataclass(frozen=True)
class ConformalCalibrator:
    """A calibrated threshold: apply it with :meth:`sets`."""

    method: str
    alpha: float
    quantile: float
    n: int  # calibration cases
    fitted_on: str = "validation slices"

    def sets(self, probs: np.ndarray) -> np.ndarray:
        """(N, K) prediction sets of ``probs``."""
        return prediction_sets(probs, self.quantile, self.method)


def calibrate(probs: np.ndarray, y: np.ndarray, alpha: float = DEFAULT_ALPHA,
              method: str = "lac", seed: int | None = 0,
              fitted_on: str = "validation slices") -> ConformalCalibrator:
    """Fit the split-conformal threshold on labelled calibration probabilities.

    APS scores are randomised with ``RandomState(seed)`` uniform draws, as MAPIE does
    with ``random_state=seed`` (``seed=None``: not randomised; with an over-confident
    model that puts nearly every class in every set).
    """
    alpha = check_alpha(alpha)
    if len(y) == 0:
        raise DataError("conformal: no labelled calibration cases")
    u = (np.random.RandomState(seed).uniform(size=len(y))
         if method == "aps" and seed is not None else None)
    q = conformal_quantile(scores(probs, y, method, u), alpha)
    return ConformalCalibrator(method, alpha, q, int(len(y)), fitted_on)


@dataclass
class ConformalResult:
    """Empirical coverage and refer rate of prediction sets on labelled cases."""

    method: str
    alpha: float
    quantile: float
    n_calibration: int
    n: int
    coverage: Any  # analysis.metrics.Estimate
    refer_rate: Any  # Estimate
    mean_set_size: float
    empty: int
    sets: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), bool))
    ci: str = "95% percentile bootstrap of patients"

    def to_dict(self) -> dict:
        """metrics.json's ``conformal``."""
        return {"alpha": self.alpha, "method": self.method,
                "target_coverage": 1 - self.alpha,
                "coverage": self.coverage.value,
                "coverage_ci": [self.coverage.lo, self.coverage.hi],
                "refer_rate": self.refer_rate.value,
                "refer_rate_ci": [self.refer_rate.lo, self.refer_rate.hi],
                "n": self.n, "n_calibration": self.n_calibration,
                "quantile": self.quantile if math.isfinite(self.quantile) else None,
                "mean_set_size": self.mean_set_size, "empty_sets": self.empty,
                "ci": self.ci, "calibrated_on": "validation slices"}


def evaluate_sets(cal: ConformalCalibrator, probs: np.ndarray, y: np.ndarray,
                  patients: np.ndarray | None = None, n_boot: int = 1000,
                  seed: int = 0) -> ConformalResult:
    """Coverage (true class in the set) and refer rate of ``cal``'s sets on labelled
    cases, with bootstrap intervals that resample patients when given."""
    from vitdesk.analysis.metrics import bootstrap

    sets = cal.sets(probs)
    y = np.asarray(y, dtype=int)
    covered = sets[np.arange(len(y)), y].astype(float)
    ref = refer(sets).astype(float)
    # metrics.bootstrap resamples (label, row) pairs: carry the two indicators as the row
    est = bootstrap({"coverage": lambda _y, r: float(r[:, 0].mean()),
                     "refer_rate": lambda _y, r: float(r[:, 1].mean())},
                    np.zeros(len(y), dtype=int), np.c_[covered, ref],
                    clusters=patients, n_boot=n_boot, seed=seed)
    return ConformalResult(cal.method, cal.alpha, cal.quantile, cal.n, int(len(y)),
                           est["coverage"], est["refer_rate"], float(sets.sum(1).mean()),
                           int((sets.sum(1) == 0).sum()), sets,
                           "95% percentile bootstrap of "
                           + ("patients" if patients is not None else "cases"))


def run_conformal(run: Any, temperature: float = 1.0, alpha: float = DEFAULT_ALPHA,
                  method: str = "lac", *, batch_size: int = 32, seed: int = 0,
                  cancel: CancelToken = NEVER, listener: Listener | None = None
                  ) -> ConformalCalibrator | None:
    """Calibrate prediction sets on a run's validation slices (temperature-scaled, plain
    probabilities). None when the run has no validation slices here.

    Sets depend only on the probability values, so the result applies to probabilities
    in any class order (evaluate's "normal first" order included).
    """
    from vitdesk.analysis.calibration import apply_temperature
    from vitdesk.engine.calibration import validation_probs

    got = validation_probs(run, batch_size, cancel, listener)
    if got is None:
        return None
    y, p = got
    return calibrate(apply_temperature(p, temperature), y, alpha, method, seed)


__all__ = ["DEFAULT_ALPHA", "METHODS", "ConformalCalibrator", "ConformalResult", "calibrate",
           "check_alpha", "conformal_quantile", "evaluate_sets", "prediction_sets", "refer",
           "run_conformal", "scores", "set_labels"]
