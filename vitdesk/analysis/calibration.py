"""Calibrated probabilities for every analysis: one temperature per run.

The temperature is fitted on the run's validation slices by
:mod:`vitdesk.engine.calibration` (at the end of training, stored as
``calibration.json``); :func:`run_calibration` reads it and fits it on first use
when a run lacks it. :func:`apply_temperature` is the one function that turns raw
softmax probabilities into calibrated ones: evaluate, predict and TTA (per view,
before the views are combined) call it, and so does the GUI through them.
Robustness curves score the argmax, which a temperature never changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitdesk.engine.calibration import (
    CALIBRATION_FILE,
    Calibration,
    apply_temperature,
    calibrate_run,
    calibration_bins,
    fit_calibration,
    fit_temperature,
    read_calibration,
)
from vitdesk.errors import DiskFullError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, emit


def run_calibration(run: Any, *, fit_if_missing: bool = True, cancel: CancelToken = NEVER,
                    listener: Listener | None = None) -> Calibration | None:
    """The run's temperature scaling: stored, else fitted now on its validation slices
    (and stored when the run folder is writable); None when it cannot be fitted."""
    cal = read_calibration(run.run_dir)
    if cal is not None or not fit_if_missing:
        return cal
    emit(listener, Notice("calibration", "fitting temperature scaling on the run's "
                                         "validation slices"))
    try:
        return calibrate_run(run, write=True, cancel=cancel, listener=listener)
    except (OSError, DiskFullError):  # a read-only or full run folder: use it unsaved
        return calibrate_run(run, write=False, cancel=cancel, listener=listener)


def temperature_of(cal: Calibration | None) -> float:
    """The temperature to apply (1: uncalibrated)."""
    return 1.0 if cal is None else float(cal.temperature)


def not_applied_text(cal: Calibration) -> str:
    """Why a fitted temperature was not applied (one line, for notes and the report)."""
    return (f"temperature scaling was not applied: a temperature fitted on the other "
            f"validation patients made held-out patients' probabilities worse "
            f"({cal.cv_folds}-fold patient cross-validation, NLL {cal.cv_nll_fitted:.3f} "
            f"against {cal.cv_nll_identity:.3f} unscaled; the fit on all of them gave "
            f"T = {cal.fitted_temperature:.3g}); probabilities are the model's own")


def calibration_summary(y: np.ndarray, before: np.ndarray, after: np.ndarray,
                        cal: Calibration | None, n_bins: int = 10) -> dict:
    """metrics.json's ``calibration``: ``temperature, ece_before, ece_after`` measured on
    the scored slices, the reliability bins before/after, and the validation fit."""
    b, a = calibration_bins(y, before, n_bins), calibration_bins(y, after, n_bins)
    return {"temperature": temperature_of(cal), "ece_before": b["ece"], "ece_after": a["ece"],
            "n": int(len(y)), "fitted": cal is not None,
            "fitted_on": cal.fitted_on if cal else None, "n_fit": cal.n if cal else 0,
            "fit_ece_before": cal.ece_before if cal else None,
            "fit_ece_after": cal.ece_after if cal else None,
            "applied": bool(cal.applied) if cal else False,
            # NaN (not cross-validated) becomes null where metrics.json is written (json_safe)
            "fitted_temperature": cal.fitted_temperature if cal else None,
            "cv_nll_identity": cal.cv_nll_identity if cal else None,
            "cv_nll_fitted": cal.cv_nll_fitted if cal else None,
            "cv_folds": cal.cv_folds if cal else 0,
            "bins_before": b["bins"], "bins_after": a["bins"]}


__all__ = ["CALIBRATION_FILE", "Calibration", "apply_temperature", "calibrate_run",
           "calibration_summary", "fit_calibration", "fit_temperature", "not_applied_text",
           "read_calibration", "run_calibration", "temperature_of"]
