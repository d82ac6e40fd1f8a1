"""Predictions with their trust cues: calibrated probabilities, conformal sets, shift.

:func:`run_trust` gathers, once per run, what every prediction is read against: the
temperature (validation fit), the split-conformal calibrator and the shift detector
(:func:`vitdesk.analysis.shift.fit_run_detector`, the one evaluate uses).
:func:`predict_slices` scores raw slices (the open series) and
:func:`predict_records` a labelled data source or one of the run's splits, both
through the same preprocessing, temperature and TTA as
:func:`~vitdesk.analysis.evaluation.evaluate_run`; so with the same settings the
accuracy here is evaluate's slice accuracy. The GUI's Inference, Attention and
Robustness tabs call these in a worker; nothing here imports Qt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vitdesk.analysis.options import EvalOptions, accuracy_words, tta_words
from vitdesk.analysis.run_model import dataset_batches, device_of, records_dataset
from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

if TYPE_CHECKING:  # the loaded run type; importing engine.run at runtime is not needed
    from vitdesk.engine.run import LoadedRun


@dataclass
class RunTrust:
    """What a run's predictions are read against (fitted once per run and options).

    ``temperature`` 1.0 with ``calibrated`` False: no validation slices to fit on.
    ``conformal`` / ``detector`` None: not available (``notes`` say why).
    """

    temperature: float = 1.0
    calibrated: bool = False
    applied: bool = True  # False: the fitted temperature did not help held-out patients
    conformal: Any = None  # analysis.conformal.ConformalCalibrator
    detector: Any = None  # analysis.shift.MahalanobisDetector
    notes: list[str] = field(default_factory=list)

    def calibration_words(self) -> str:
        """How the probabilities were made, for the point of decision."""
        if not self.calibrated:
            return "probabilities not calibrated (no validation slices to fit a temperature)"
        if not self.applied:
            return ("probabilities not rescaled (a temperature fitted on validation made "
                    "held-out validation patients worse)")
        return f"probabilities calibrated (temperature {self.temperature:.2f}, validation fit)"

    def conformal_words(self) -> str:
        """What a prediction set means, or why there is none."""
        c = self.conformal
        if c is None:
            return "no conformal sets (no validation slices to calibrate them on)"
        return (f"conformal sets ({c.method.upper()}) hold the true class "
                f"{1 - c.alpha:.0%} of the time; more than one class: refer")


def run_trust(run: LoadedRun, options: EvalOptions | None = None, *, cancel: CancelToken = NEVER,
              listener: Listener | None = None) -> RunTrust:
    """Temperature, conformal calibrator and shift detector of a loaded ``run``."""
    from vitdesk.analysis.calibration import run_calibration, temperature_of
    from vitdesk.analysis.conformal import run_conformal
    from vitdesk.analysis.evaluation import run_splits, validation_records
    from vitdesk.analysis.shift import fit_run_detector

    o = options or EvalOptions()
    notes: list[str] = []
    cal = run_calibration(run, cancel=cancel, listener=listener) if o.calibrate else None
    temp = temperature_of(cal)
    conf = None
    if o.conformal_alpha is not None:
        conf = run_conformal(run, temp, o.conformal_alpha, o.conformal_method,
                             batch_size=o.batch_size, cancel=cancel, listener=listener,
                             seed=o.seed)
    det = None
    if o.shift:
        try:
            train = run_splits(Path(run.run_dir), "train").get("train", [])
        except DataError:
            train = []
        emit(listener, Notice("shift", f"Fitting the shift check on {len(train)} training "
                                       "slices"))
        det = fit_run_detector(run, train, validation_records(run),
                               max_train=o.shift_train_cases, percentile=o.shift_percentile,
                               batch_size=o.batch_size, seed=o.seed, cancel=cancel,
                               listener=listener, notes=notes)
    return RunTrust(temp, cal is not None, cal is None or cal.applied, conf, det, notes)


@dataclass
class SlicePredictions:
    """Per-slice predictions with their trust cues.

    ``probs`` (N, K) calibrated (TTA-combined when TTA ran) in the run's class order;
    ``std`` (N, K) across TTA views; ``uncertainty`` (N,) std of the predicted class;
    ``sets`` the conformal set of each slice ("a|b", "" empty) or None; ``shift`` the
    ShiftResult of these slices or None; ``labels`` (N,) class indices when known.
    """

    probs: np.ndarray
    std: np.ndarray
    uncertainty: np.ndarray
    classes: tuple[str, ...]
    names: list[str]
    labels: np.ndarray | None = None
    views: tuple[str, ...] = ("identity",)
    source: str = "series"  # "series" (index = axial slice) or "records"
    tta: Any = None  # the TTAConfig used, None: off
    temperature: float = 1.0
    calibrated: bool = False
    sets: list[str] | None = None
    shift: Any = None  # analysis.shift.ShiftResult
    trust_notes: list[str] = field(default_factory=list)
    calibration_text: str = ""
    conformal_text: str = ""
    # records: (series key, file, frame) of each row, so a viewer can open that slice;
    # file paths may name patients: never written to exports or reports
    origins: list[tuple[str, str, int]] | None = field(default=None, repr=False)

    @property
    def predicted(self) -> np.ndarray:
        """(N,) predicted class index: the argmax (for two classes: p >= 0.5)."""
        from vitdesk.analysis.metrics import predicted_labels

        return predicted_labels(self.probs, None)

    @property
    def cut(self) -> str:
        """The decision behind :attr:`predicted` and :attr:`accuracy` (as metrics name it)."""
        from vitdesk.analysis.metrics import decision_cut

        return decision_cut(len(self.classes))

    @property
    def accuracy(self) -> float | None:
        """Slice accuracy at :attr:`cut` (None without labels)."""
        if self.labels is None:
            return None
        m = self.labels >= 0
        return float((self.predicted[m] == self.labels[m]).mean()) if m.any() else None

    def accuracy_text(self) -> str:
        """"slice accuracy [p >= 0.5, TTA off] 0.833" or "" without labels."""
        acc = self.accuracy
        if acc is None:
            return ""
        return f"{accuracy_words('slice', self.cut, self.tta)} {acc:.3f}"

    @property
    def refer(self) -> np.ndarray | None:
        """(N,) True where the conformal set is not exactly one class."""
        if self.sets is None:
            return None
        return np.asarray([len([c for c in s.split("|") if c]) != 1 for s in self.sets])

    @property
    def outside(self) -> np.ndarray:
        """(N,) True for slices beyond the run's shift threshold (all False unchecked)."""
        if self.shift is None:
            return np.zeros(len(self.probs), dtype=bool)
        return np.asarray(self.shift.slice_out, dtype=bool)

    @property
    def out_of_distribution(self) -> bool:
        """The shift verdict for these slices as a whole (False when unchecked)."""
        return bool(self.shift is not None and self.shift.out_of_distribution)

    def shift_text(self) -> str:
        """The shift verdict line, or why there is none."""
        if self.shift is None:
            return "shift not checked (the run's training slices are not available)"
        return self.shift.verdict()

    def tta_text(self) -> str:
        return tta_words(self.tta)


def slice_tensors(run: LoadedRun, slices: Sequence[np.ndarray], kinds: Sequence[str]
                  ) -> torch.Tensor:
    """Slices (HU, or images for kind "image") -> the model batch (N, C, S, S), exactly as
    training sees them without augmentation."""
    from vitdesk.data.dataset import preprocess_slice

    return torch.from_numpy(np.stack([
        preprocess_slice(s, k, run.window, run.img_size, run.mean, run.std, 3)
        for s, k in zip(slices, kinds, strict=True)]))


def _tensor_batches(run: LoadedRun, slices: Sequence[np.ndarray], kinds: Sequence[str],
                    batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(slices), batch_size):
        yield slice_tensors(run, slices[i:i + batch_size], kinds[i:i + batch_size])


def _score(run: LoadedRun, make_batches: Any, n: int, names: list[str], labels: np.ndarray | None,
           source: str, options: EvalOptions, trust: RunTrust, cancel: CancelToken,
           listener: Listener | None) -> SlicePredictions:
    from vitdesk.analysis.conformal import set_labels
    from vitdesk.analysis.shift import extract_features
    from vitdesk.analysis.tta import predict_proba, tta_predict

    if n == 0:
        raise DataError("inference: there are no slices to predict")
    model, dev = run.model.eval(), device_of(run.model)
    total = math.ceil(n / options.batch_size)
    temp = trust.temperature
    if options.tta is None:
        probs, _ = predict_proba(model, make_batches(), device=dev, total=total, cancel=cancel,
                                 listener=listener, temperature=temp)
        plain, std = probs, np.zeros_like(probs)
        unc = np.zeros(len(probs), np.float32)
        views: tuple[str, ...] = ("identity",)
    else:
        res = tta_predict(model, make_batches(), options.tta, device=dev, total=total,
                          cancel=cancel, listener=listener, temperature=temp)
        probs, plain, std, unc, views = res.probs, res.plain, res.std, res.uncertainty, \
            tuple(res.views)
    # sets from the calibrated un-augmented probabilities, as the validation scores were
    sets = (set_labels(trust.conformal.sets(plain), list(run.classes))
            if trust.conformal is not None else None)
    shift = None
    if trust.detector is not None:
        emit(listener, Progress("shift", 0, None, "features of the slices"))
        feats = extract_features(model, make_batches(), device=dev, total=total, cancel=cancel,
                                 listener=listener)
        shift = trust.detector.score(feats)
    return SlicePredictions(
        probs, std, unc, tuple(run.classes), names, labels, views, source, options.tta,
        temp, trust.calibrated, sets, shift, list(trust.notes), trust.calibration_words(),
        trust.conformal_words())


def predict_slices(run: LoadedRun, slices: Sequence[np.ndarray], options: EvalOptions | None = None,
                   trust: RunTrust | None = None, *, kinds: Sequence[str] | None = None,
                   names: Sequence[str] | None = None, cancel: CancelToken = NEVER,
                   listener: Listener | None = None) -> SlicePredictions:
    """Predict raw ``slices`` (axial HU of the open series, or images) with trust cues.

    ``trust``: from :func:`run_trust` (computed now when None; callers that predict
    often keep one per run).
    """
    o = options or EvalOptions()
    trust = trust if trust is not None else run_trust(run, o, cancel=cancel, listener=listener)
    data = list(slices)
    kinds = list(kinds) if kinds is not None else ["dicom"] * len(data)
    names = list(names) if names is not None else [f"slice {i + 1}" for i in range(len(data))]
    return _score(run, lambda: _tensor_batches(run, data, kinds, o.batch_size), len(data),
                  names, None, "series", o, trust, cancel, listener)


def case_names(records: Sequence[Any]) -> list[str]:
    """Non-identifying names: the series' safe key and the slice's number in it.

    File and folder names are not used: exports from hospitals often carry patient
    names or IDs in them, and these names end up in CSV files and reports.
    """
    counts: dict[str, int] = {}
    out = []
    for r in records:
        counts[r.series] = counts.get(r.series, 0) + 1
        out.append(f"{r.series[:8]}#{counts[r.series]}")
    return out


def predict_records(run: LoadedRun, data_src: str | Path | None = None,
                    options: EvalOptions | None = None, trust: RunTrust | None = None, *,
                    cancel: CancelToken = NEVER, listener: Listener | None = None
                    ) -> SlicePredictions:
    """Predict the labelled slices evaluate would score: ``data_src``, or with None the
    run's saved ``options.split`` (see :func:`~vitdesk.analysis.evaluation.select_records`)."""
    from vitdesk.analysis.evaluation import select_records

    o = options or EvalOptions()
    trust = trust if trust is not None else run_trust(run, o, cancel=cancel, listener=listener)
    records = select_records(run, data_src, o.split, cancel, listener)[0]
    ds = records_dataset(run, records)
    labels = np.asarray(ds.targets, dtype=int)
    idx = np.arange(len(ds))
    pred = _score(run, lambda: dataset_batches(ds, idx, o.batch_size, False), len(ds),
                  case_names(records), labels, "records", o, trust, cancel, listener)
    pred.origins = [(r.series, r.path, int(r.frame)) for r in records]
    return pred


__all__ = ["RunTrust", "SlicePredictions", "case_names", "predict_records", "predict_slices",
           "run_trust", "slice_tensors"]
