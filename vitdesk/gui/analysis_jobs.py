"""Background work of the analysis tabs: thin calls into :mod:`vitdesk.analysis` (no Qt).

Each ``*_job`` follows the worker calling convention ``fn(*args, cancel=, listener=)``
and returns plain results (analysis dataclasses): the tabs run them in a
:class:`~vitdesk.gui.worker.Task` and only draw the results. Model use is serialised
with the shared run's lock (see :mod:`vitdesk.gui.run_state`).

Nothing is computed here: fairness, robustness and the report are
:func:`~vitdesk.analysis.evaluation.evaluate_run` with an
:class:`~vitdesk.analysis.options.EvalOptions`; inference and the shift check are
:mod:`vitdesk.analysis.inference` with the run's :class:`RunTrust` (temperature,
conformal sets and the same held-out shift detector evaluate uses), kept here once per
run so every slice is read against the same thresholds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.analysis.inference import (
    RunTrust,
    SlicePredictions,
    predict_records,
    predict_slices,
    run_trust,
    slice_tensors,
)
from vitdesk.analysis.options import EvalOptions
from vitdesk.engine.run import LoadedRun
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

# what the tabs show: SlicePredictions (Inference tab) under its old name
Inference = SlicePredictions
_TRUST: dict[tuple, tuple[LoadedRun, RunTrust]] = {}
_TRUST_GUARD = threading.Lock()


def _lock(lock: threading.Lock | None):
    return lock if lock is not None else contextlib.nullcontext()


def trust_of(run: LoadedRun, options: EvalOptions, cancel: CancelToken = NEVER,
             listener: Listener | None = None) -> RunTrust:
    """The run's :class:`RunTrust` for ``options``, fitted once and kept (call it under
    the run's lock: fitting uses the model)."""
    key = (id(run), str(run.run_dir), options.calibrate, options.conformal_alpha,
           options.conformal_method, options.shift, options.shift_percentile,
           options.shift_train_cases, options.seed)
    with _TRUST_GUARD:
        hit = _TRUST.get(key)
    if hit is not None and hit[0] is run:
        return hit[1]
    trust = run_trust(run, options, cancel=cancel, listener=listener)
    with _TRUST_GUARD:
        # only the current run's: a kept entry holds its model in memory
        for k in [k for k, (r, _t) in _TRUST.items() if r is not run]:
            del _TRUST[k]
        if len(_TRUST) >= 4:  # a few settings of one run; the oldest go
            _TRUST.pop(next(iter(_TRUST)))
        _TRUST[key] = (run, trust)
    return trust


# --------------------------------------------------------------------------- attention


@dataclass(frozen=True)
class SliceAttention:
    """Prediction and attention maps of one slice, all maps at the slice's (H, W).

    ``per_head`` (layers, heads, H, W) raw CLS attention; ``rollout`` maps head
    fusion ("mean", "max", "min") to a (H, W) rollout map; ``grad_cam`` (H, W) for
    the predicted class. Use :func:`vitdesk.analysis.attention.normalize01` to show.
    A CNN run has no attention (``has_attention`` False): ``per_head`` is then empty
    (0, 0, H, W), ``rollout`` is {} and only ``grad_cam`` is meaningful.
    """

    probs: np.ndarray
    classes: tuple[str, ...]
    per_head: np.ndarray
    rollout: dict[str, np.ndarray]
    grad_cam: np.ndarray
    key: tuple = ()
    has_attention: bool = True
    # the slice's trust cues: calibrated ``probs``, conformal set, shift of this slice
    trust: SlicePredictions | None = field(default=None, compare=False)

    @property
    def head_mean(self) -> np.ndarray:
        return self.per_head.mean(axis=1)


def attention_job(run: LoadedRun, lock: threading.Lock | None, hu2d: np.ndarray,
                  kind: str = "dicom", key: tuple = (), options: EvalOptions | None = None,
                  cancel: CancelToken = NEVER,
                  listener: Listener | None = None) -> SliceAttention:
    """Calibrated probabilities with the slice's trust cues (conformal set, shift), and
    :func:`~vitdesk.analysis.attention.slice_maps` of one slice (Grad-CAM only for a CNN).
    """
    from vitdesk.analysis.attention import slice_maps
    from vitdesk.analysis.run_model import device_of
    from vitdesk.data.dataset import Letterbox

    o = options or EvalOptions(tta=None)
    hu2d = np.asarray(hu2d)
    h, w = hu2d.shape[:2]
    x = slice_tensors(run, [hu2d], [kind]).to(device_of(run.model))
    cancel.check()
    with _lock(lock):
        trust = trust_of(run, o, cancel, listener)
        pred = predict_slices(run, [hu2d], o, trust, kinds=[kind], cancel=cancel)
        probs = pred.probs[0]
        cancel.check()
        maps = slice_maps(run.model, x, int(probs.argmax()), Letterbox(h, w, run.img_size).to_slice,
                          cancel)
    emit(listener, Progress("attention", 1, 1))
    return SliceAttention(probs.astype(np.float32), tuple(run.classes), maps.per_head,
                          maps.rollout, maps.grad_cam, key, maps.has_attention, pred)


# --------------------------------------------------------------------------- inference


def inference_job(run: LoadedRun, lock: threading.Lock | None,
                  slices: Sequence[np.ndarray] | None, tta: Any = None, src: str | None = None,
                  split: str | None = None, options: EvalOptions | None = None,
                  cancel: CancelToken = NEVER,
                  listener: Listener | None = None) -> SlicePredictions:
    """Predict every slice of ``slices`` (the open series, axial HU) or of a data source,
    with the run's trust cues (:mod:`vitdesk.analysis.inference`).

    ``tta`` is a :class:`~vitdesk.analysis.tta.TTAConfig` or None (plain). With
    ``slices`` None, the slices evaluate would score for ``src`` / ``split`` are used.
    """
    o = (options or EvalOptions()).replace(tta=tta, split=split or "test").check()
    with _lock(lock):
        trust = trust_of(run, o, cancel, listener)
        if slices is not None:
            return predict_slices(run, slices, o, trust, cancel=cancel, listener=listener)
        return predict_records(run, src or None, o, trust, cancel=cancel, listener=listener)


# --------------------------------------------------------------------------- shift


@dataclass
class ShiftOutcome:
    """The run's shift check (the detector evaluate uses) on the checked slices."""

    result: Any  # vitdesk.analysis.shift.ShiftResult
    n_train: int
    names: list[str]
    source: str  # "series" (index = axial slice) or "records"


def shift_job(run: LoadedRun, lock: threading.Lock | None,
              slices: Sequence[np.ndarray] | None, src: str | None = None,
              percentile: float = 95.0, split: str = "test", cancel: CancelToken = NEVER,
              listener: Listener | None = None) -> ShiftOutcome:
    """Score the open series (``slices``, axial HU) or the evaluation data against the
    run's held-out shift detector (:func:`~vitdesk.analysis.shift.fit_run_detector`)."""
    from vitdesk.errors import DataError

    o = EvalOptions(tta=None, shift_percentile=float(percentile), split=split).check()
    with _lock(lock):
        trust = trust_of(run, o, cancel, listener)
        if trust.detector is None:
            raise DataError("shift: " + (trust.notes[-1] if trust.notes else
                                         "the run's training slices are not available"))
        if slices is not None:
            pred = predict_slices(run, slices, o, trust, cancel=cancel, listener=listener)
        else:
            pred = predict_records(run, src or None, o, trust, cancel=cancel,
                                   listener=listener)
    return ShiftOutcome(pred.shift, trust.detector.n_train, pred.names, pred.source)


# --------------------------------------------------------------------------- evaluation


def evaluate_job(run: LoadedRun, lock: threading.Lock | None, src: str | None = None,
                 options: EvalOptions | None = None, cancel: CancelToken = NEVER,
                 listener: Listener | None = None) -> Any:
    """:func:`~vitdesk.analysis.evaluation.evaluate_run` on the shared run, under its lock."""
    from vitdesk.analysis.evaluation import evaluate_run

    with _lock(lock):
        return evaluate_run(run, src or None, options, cancel=cancel, listener=listener)


def report_job(run: LoadedRun, lock: threading.Lock | None, out_dir: str, src: str | None = None,
               split: str = "test", forbidden: Sequence[str] = (), cancel: CancelToken = NEVER,
               listener: Listener | None = None, baseline: str | None = None,
               earlier: str | None = None, **options: Any) -> Any:
    """Evaluate the run and write ``report.html`` / ``report.pdf`` into ``out_dir``.

    ``options``: :class:`EvalOptions` fields (tta, robustness, shift, n_boot, ...).
    ``baseline``: a run folder scored on the same slices for the transfer section.
    ``earlier``: a continued run's parent data (None: the source its split recorded).
    """
    from vitdesk.analysis.baseline import evaluate_baseline
    from vitdesk.analysis.run_model import device_of
    from vitdesk.report.from_run import continual_figures, write_run_report

    o = EvalOptions().replace(split=split, **options).check()
    ev = evaluate_job(run, lock, src, o, cancel=cancel, listener=listener)
    transfer = None
    if baseline:
        cancel.check()
        emit(listener, Notice("report", f"Scoring the baseline {Path(baseline).name}"))
        transfer = evaluate_baseline(
            ev, run.run_dir, baseline, src or None, split=split, tta=o.tta,
            n_boot=o.n_boot, device=device_of(run.model).type, cancel=cancel,
            listener=listener)
    continual = None
    if run.cfg.continual.continue_from:
        emit(listener, Notice("report", "Scoring the parent run on its test split"))
        with _lock(lock):
            continual = continual_figures(run, earlier or None, cancel=cancel,
                                          listener=listener)
    cancel.check()
    emit(listener, Notice("report", "Writing report.html and report.pdf"))
    return write_run_report(run.run_dir, ev, out_dir, forbidden=forbidden, transfer=transfer,
                            continual=continual)


# --------------------------------------------------------------------------- fairness


def fairness_job(run: LoadedRun, lock: threading.Lock | None, src: str | None = None,
                 split: str = "test", n_boot: int = 300, tta: Any = None,
                 cancel: CancelToken = NEVER, listener: Listener | None = None) -> Any:
    """evaluate_run with fairness only; each FairnessReport carries its gap intervals.
    ``tta``: a TTAConfig (the slice probabilities averaged over its views) or None."""
    o = EvalOptions(split=split, tta=tta, robustness=False, shift=False,
                    attention_samples=0, fairness=True, gap_intervals=True, n_boot=n_boot)
    return evaluate_job(run, lock, src, o, cancel=cancel, listener=listener)
