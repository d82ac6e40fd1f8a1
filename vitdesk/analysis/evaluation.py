"""Evaluate a trained run end to end: predictions, metrics, fairness, robustness, shift.

:func:`evaluate_run` is what ``vitdesk evaluate``, ``vitdesk report``, the demo and the
GUI's Fairness/Robustness/Report tabs call. Scored slices never include a training
patient: with the run's own data source (or none) the run's saved test split
(``split.json``) is used; another source is scored whole, and a patient it shares
with the run's training split is reported as a notice.

:func:`predict_input` is ``vitdesk predict``: probabilities per slice of any file or
folder (DICOM, NIfTI/MHA/NRRD, PNG/JPEG), with optional attention overlays. It lives
in :mod:`vitdesk.analysis.predict`, and the helpers both share (load a run, batch
slices, attention overlays) in :mod:`vitdesk.analysis.run_model`; this module
re-exports their public names so ``from vitdesk.analysis.evaluation import ...``
keeps working.

Nothing here writes or returns PHI: records carry hashed patient/series keys, captions
name only classes and probabilities, and ``to_dict()`` holds no file paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vitdesk.analysis.options import EvalOptions, tta_words
from vitdesk.analysis.predict import (
    IMAGE_SUFFIXES,
    PredictedSlice,
    PredictResult,
    predict_input,
)
from vitdesk.analysis.run_model import (
    attention_overlays,
    dataset_batches,
    device_of,
    display_image,
    load_run_like,
    records_dataset,
)
from vitdesk.errors import DataError, ModelError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

if TYPE_CHECKING:
    from vitdesk.engine.run import LoadedRun

_TASK = "evaluate"
DEFAULT_EPSILONS = (0.0, 1 / 255, 2 / 255, 4 / 255)
DEFAULT_HU = {"noise_hu": (0.0, 25.0, 50.0, 100.0), "shift_hu": (-100.0, -50.0, 0.0, 50.0, 100.0),
              "contrast": (0.8, 0.9, 1.0, 1.1, 1.2)}
# Class names taken as "no finding": analysis puts them first so the finding is the
# positive class of AUC/fairness and the "any" patient rule means "any abnormal slice".
# metrics whose value depends on the decision cut (the others rank or bin probabilities)
CUT_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity")
NEGATIVE_NAMES = ("normal", "negative", "healthy", "benign", "no_finding", "none", "control")


# --------------------------------------------------------------------------- results


@dataclass
class AttentionItem:
    """One overlay: uint8 RGB (H, W, 3) over the windowed slice and a PHI-free caption."""

    image: np.ndarray
    caption: str
    method: str  # "rollout" | "gradcam"
    correct: bool
    true: str
    predicted: str
    probability: float


@dataclass
class RunEvaluation:
    """Everything one evaluation computed. ``to_dict()`` is ``metrics.json``."""

    run_id: str
    split: str  # "test" (the run's own held-out patients) or "external"
    classes: list[str]
    fingerprint: str
    n_slices: int
    n_patients: int
    labels: np.ndarray  # (N,) indices into ``classes`` (analysis order: "normal" first)
    probs: np.ndarray  # (N, K) the probabilities scored (TTA-combined when TTA ran)
    plain_probs: np.ndarray  # (N, K) without TTA
    patients: np.ndarray  # (N,) safe patient keys
    metrics: Any  # analysis.metrics.Evaluation of ``probs``
    metrics_plain: Any = None  # Evaluation without TTA (only when TTA ran)
    tta: dict | None = None  # tta_summary + the TTAConfig
    uncertainty: np.ndarray | None = None  # (N,) TTA spread of the predicted class
    fairness: list = field(default_factory=list)  # FairnessReport
    robustness: list = field(default_factory=list)  # RobustnessResult (HU, adversarial)
    shift: Any = None  # ShiftResult
    calibration: dict | None = None  # analysis.calibration.calibration_summary
    conformal: Any = None  # analysis.conformal.ConformalResult (prediction sets, "refer")
    attention: list[AttentionItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    seconds: float = 0.0
    # (N,) one opaque key per slice (a hash of file and frame): pairs two runs' scores
    # of the same slices; kept in memory only, never written
    keys: np.ndarray = field(default_factory=lambda: np.asarray([], dtype=str))

    def to_dict(self) -> dict:
        """JSON-safe summary (NaN and inf become null); no paths, no patient data."""
        d = {
            "format": "vitdesk-evaluation-1",
            "run_id": self.run_id,
            "split": self.split,
            "classes": list(self.classes),
            "dataset_fingerprint": self.fingerprint,
            "n_slices": self.n_slices,
            "n_patients": self.n_patients,
            "metrics": _plain(self.metrics),
            "metrics_without_tta": _plain(self.metrics_plain),
            "tta": self.tta,
            "fairness": [_plain(f) for f in self.fairness],
            "robustness": {r_name(r): _plain(r) for r in self.robustness},
            "shift": _plain(self.shift),
            "calibration": self.calibration,
            "conformal": _plain(self.conformal),
            "attention": [{"method": a.method, "correct": a.correct, "true": a.true,
                           "predicted": a.predicted, "probability": a.probability}
                          for a in self.attention],
            "notes": list(self.notes),
            "settings": self.settings,
            "versions": self.versions,
            "seconds": round(self.seconds, 2),
        }
        return json_safe(d)

    def tta_words(self) -> str:
        """"TTA off" or "TTA on (k views)": said next to every accuracy-like number."""
        return tta_words(self.tta)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(name, "value (lo-hi)") rows of the headline metrics for a console table."""
        rows = [("slices / patients", f"{self.n_slices} / {self.n_patients}")]
        for level in ("slice", "patient"):
            lm = getattr(self.metrics, level, None)
            if lm is None:
                continue
            for key in ("accuracy", "balanced_accuracy", "auc", "ece"):
                e = lm.estimates.get(key)
                if e is not None:
                    # accuracy-like numbers depend on the decision cut and on TTA: name them
                    cut = (f" [{lm.cut}, {self.tta_words()}]"
                           if key in CUT_METRICS and lm.cut else "")
                    rows.append((f"{level} {key}{cut}", _fmt_ci(e.value, e.lo, e.hi)))
        if self.tta:
            rows.append(("TTA slice accuracy [argmax] (plain -> TTA)",
                         f"{_fmt(self.tta.get('accuracy_plain'))} -> "
                         f"{_fmt(self.tta.get('accuracy_tta'))}"))
        if self.calibration:
            c = self.calibration
            rows.append(("calibration: temperature (validation fit)",
                         _fmt(c["temperature"]) if c.get("applied", True) else
                         f"1 (fit {_fmt(c.get('fitted_temperature'))} not applied: "
                         "worse on held-out validation patients)"))
            rows.append(("slice ECE before -> after temperature",
                         f"{_fmt(c['ece_before'])} -> {_fmt(c['ece_after'])}"))
        if self.conformal is not None:
            c = self.conformal
            rows.append((f"conformal sets ({c.method.upper()}, alpha {c.alpha:g}): coverage",
                         _fmt_ci(c.coverage.value, c.coverage.lo, c.coverage.hi)))
            rows.append(("conformal refer rate (set not one class)",
                         _fmt_ci(c.refer_rate.value, c.refer_rate.lo, c.refer_rate.hi)))
        for rep in self.fairness:
            # the gaps with their patient-bootstrap intervals, as the report and GUI show
            for key, name in (("accuracy_gap", "accuracy gap"),
                              ("equalized_odds_difference", "equalized odds difference")):
                lo, hi = rep.gap_ci.get(key, (float("nan"), float("nan")))
                rows.append((f"fairness by {rep.attribute} ({rep.positive}): {name}",
                             _fmt_ci(rep.disparities.get(key, float("nan")), lo, hi)))
        if self.shift is not None:
            sh = self.shift
            rows.append(("shift alarm rate (observed / expected)",
                         f"{_fmt(sh.fraction_above)} / {_fmt(sh.expected_rate)}"))
            rows.append(("shift AUROC vs held-out in-distribution", _fmt(sh.auroc)))
        return rows


def r_name(result: Any) -> str:
    """Key of a robustness result in metrics.json: "hu" or "adversarial"."""
    names = {c.name for c in result.curves}
    return "adversarial" if names & {"fgsm", "pgd"} else "hu"


def _plain(obj: Any) -> Any:
    if obj is None:
        return None
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy values into Python ones and non-finite floats into None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return f"{f:.{digits}f}" if math.isfinite(f) else "-"


def _fmt_ci(v: float, lo: float, hi: float) -> str:
    if not math.isfinite(lo):
        return _fmt(v)
    return f"{_fmt(v)} ({_fmt(lo)}-{_fmt(hi)})"


def versions() -> dict[str, str]:
    """Software versions recorded with every evaluation."""
    import timm

    import vitdesk

    return {"vitdesk": vitdesk.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}


# --------------------------------------------------------------------------- helpers


def slice_keys(records: Sequence[Any]) -> np.ndarray:
    """An opaque key per slice record (file and frame), equal for the same slice."""
    return np.asarray([hashlib.sha1(f"{r.path}\0{r.frame}".encode()).hexdigest()[:20]
                       for r in records])


def _same_source(a: str | Path, b: str | Path) -> bool:
    # run folders name their data by keyed fingerprint ("ref:..."), never by path
    from vitdesk.data.source_refs import same_source

    return same_source(a, b)


def run_splits(run_dir: Path, split: str,
               data_src: str | Path | None = None) -> dict[str, list]:
    """The run's saved splits (``split.json``); DataError naming what to do when the
    file or ``split`` is missing."""
    from vitdesk.data.splits import load_split

    path = run_dir / "split.json"
    if not path.is_file():
        raise DataError(f"{run_dir} has no split.json: evaluate it with --data SRC on "
                        "patients it was not trained on")
    splits = load_split(path, data_src=data_src)
    if split not in splits:
        raise DataError(f"{path} has no '{split}' split (it has {', '.join(splits)})")
    return splits


def select_records(run: Any, data_src: str | Path | None, split: str = "test",
                   cancel: CancelToken = NEVER, listener: Listener | None = None
                   ) -> tuple[list, str, list]:
    """The labelled records to score, the split name used, and the run's train records.

    With ``data_src`` None or the run's own training source: the run's saved ``split``
    (test by default). Otherwise every labelled slice of ``data_src``.
    """
    from vitdesk.data.sources import load_records

    run_dir = Path(run.run_dir)
    # the training source as configured (maybe relative to another working folder) or
    # as the split recorded it (absolute common folder of its files)
    root = ""
    if (run_dir / "split.json").is_file():
        try:
            doc = json.loads((run_dir / "split.json").read_text())
            root = str(doc.get("root") or doc.get("root_ref") or "")
        except (OSError, ValueError):
            root = ""
    own = data_src is None or _same_source(data_src, run.cfg.data.source) or (
        bool(root) and _same_source(data_src, root))
    train_records: list = []
    if (run_dir / "split.json").is_file():
        try:
            train_records = run_splits(run_dir, "train", data_src)["train"]
        except DataError:
            train_records = []
    if own:
        records = run_splits(run_dir, split, data_src)[split]
        used = split
        if not records:
            raise DataError(
                f"the run's '{split}' split is empty (too few patients were held out): "
                "evaluate with --data SRC on other patients"
            )
    else:
        records = load_records(data_src, cancel, listener, min_classes=1)
        used = "external"
        overlap = {r.patient for r in records} & {r.patient for r in train_records}
        if overlap:
            emit(listener, Notice(_TASK, (
                f"{len(overlap)} patient(s) of this data set were in the run's training split: "
                "their scores are optimistic")))
    records = [r for r in records if r.label is not None]
    if not records:
        raise DataError(f"{data_src or run_dir}: no labelled slices to evaluate: label the data")
    unknown = sorted({r.label for r in records} - set(run.classes))
    if unknown:
        raise DataError(
            f"label(s) {', '.join(unknown)} of the evaluation data are not among the run's "
            f"classes ({', '.join(run.classes)}): relabel or evaluate another run"
        )
    return records, used, train_records


def _subsample(n: int, k: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``k`` of ``n`` items (all when k is None or >= n), seeded."""
    if k is None or k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False))


def _stratified(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Up to ``k`` indices with the classes as balanced as they allow (seeded)."""
    if k >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    by = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)}
    out: list[int] = []
    while len(out) < k and any(by.values()):
        for c in sorted(by):
            if by[c] and len(out) < k:
                out.append(by[c].pop())
    return np.sort(np.asarray(out, dtype=int))


def analysis_order(classes: Sequence[str]) -> list[int]:
    """Model class indices in analysis order: a "normal"-like class first, rest as is."""
    neg = [i for i, c in enumerate(classes) if str(c).strip().lower() in NEGATIVE_NAMES]
    first = neg[:1]
    return first + [i for i in range(len(classes)) if i not in first]


def patient_rule(labels: np.ndarray, patients: np.ndarray) -> str:
    """"any" for slice-level labels (a patient holds several classes), else "majority"."""
    seen: dict[str, int] = {}
    for y, p in zip(labels.tolist(), patients.tolist(), strict=True):
        if seen.setdefault(p, y) != y:
            return "any"
    return "majority"


def _validation_threshold(lr: Any, order: np.ndarray, rule: str, agg: dict, tta: Any,
                          batch_size: int, cancel: CancelToken, temperature: float = 1.0
                          ) -> tuple[float | None, int]:
    """Youden cut of the patient score on the run's validation patients (two classes).

    Returns (threshold or None, validation patients used). None when the run has no
    validation split with both classes, or its files cannot be read here.
    """
    from vitdesk.analysis import metrics as M
    from vitdesk.analysis.tta import predict_proba, tta_predict
    from vitdesk.errors import LoadError

    if len(lr.classes) != 2:
        return None, 0
    try:
        records = [r for r in run_splits(Path(lr.run_dir), "val").get("val", [])
                   if r.label is not None]
        if not records:
            return None, 0
        ds = records_dataset(lr, records)
        idx = np.arange(len(ds))
        model, dev = lr.model.eval(), device_of(lr.model)
        if tta is not None:
            probs = tta_predict(model, dataset_batches(ds, idx, batch_size), tta, device=dev,
                                cancel=cancel, temperature=temperature).probs
        else:
            probs, _ = predict_proba(model, dataset_batches(ds, idx, batch_size), device=dev,
                                     cancel=cancel, temperature=temperature)
    except (DataError, LoadError, OSError):
        return None, 0
    labels = np.argsort(order)[np.asarray(ds.targets, dtype=int)]
    patients = np.asarray([r.patient for r in records])
    py, pp, keys = M.aggregate_by_patient(labels, probs[:, order], patients, rule, **agg)
    return M.youden_threshold(py, pp[:, 1]), len(keys)


def _pick_attention(labels: np.ndarray, probs: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` slices: confident mistakes and confident correct ones, about half each."""
    if n <= 0:
        return []
    pred = probs.argmax(1)
    conf = probs.max(1)
    wrong = [int(i) for i in np.argsort(-conf) if pred[i] != labels[i]]
    right_pos = [int(i) for i in np.argsort(-conf) if pred[i] == labels[i] and labels[i] != 0]
    right = [int(i) for i in np.argsort(-conf) if pred[i] == labels[i] and labels[i] == 0]
    n_wrong = min(len(wrong), n // 2)
    picks = wrong[:n_wrong]
    # correct ones: abnormal classes first (where the attention is most telling)
    for i in right_pos + right + wrong[n_wrong:]:
        if len(picks) >= n:
            break
        if i not in picks:
            picks.append(i)
    return picks


# --------------------------------------------------------------------------- evaluate_run


def evaluate_run(
    run: str | Path | LoadedRun,
    data_src: str | Path | None = None,
    options: EvalOptions | None = None,
    *,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    **changes: Any,
) -> RunEvaluation:
    """Score a run on held-out data and compute every analysis the report shows.

    Args:
        run: a run folder or a :class:`~vitdesk.engine.run.LoadedRun`.
        data_src: evaluation data; None (or the run's training source) means the run's
            saved ``options.split`` so no training patient is scored.
        options: what to compute (:class:`~vitdesk.analysis.options.EvalOptions`);
            None: the defaults.
        cancel: checked once per batch.
        listener: receives :class:`~vitdesk.jobs.Progress` and ``Notice`` events.
        changes: option fields to change on ``options`` (``tta=...``, ``n_boot=...``);
            an unknown name is a ConfigError.

    Raises:
        DataError, CheckpointError, ConfigError: bad run or data (user errors).
        Cancelled: when ``cancel`` was set.
    """
    o = (options or EvalOptions()).replace(**changes).check() if changes else \
        (options or EvalOptions()).check()
    return _evaluate(run, data_src, o, cancel, listener)


def _evaluate(run: Any, data_src: str | Path | None, o: EvalOptions, cancel: CancelToken,
              listener: Listener | None) -> RunEvaluation:
    from vitdesk.analysis import metrics as M
    from vitdesk.analysis.calibration import (
        apply_temperature,
        calibration_summary,
        not_applied_text,
        run_calibration,
        temperature_of,
    )
    from vitdesk.analysis.conformal import check_alpha, evaluate_sets, run_conformal
    from vitdesk.analysis.fairness import (
        add_gap_intervals,
        age_groups,
        fairness_all,
        sex_groups,
    )
    from vitdesk.analysis.tta import predict_proba, tta_predict, tta_summary
    from vitdesk.data.build import fingerprint

    split, tta, robustness, shift, fairness = o.split, o.tta, o.robustness, o.shift, o.fairness
    max_cases, n_boot, calibrate, seed = o.max_cases, o.n_boot, o.calibrate, o.seed
    conformal_alpha, conformal_method = o.conformal_alpha, o.conformal_method
    patient_score, topk, batch_size = o.patient_score, o.topk, o.batch_size
    attention_samples = o.attention_samples
    if conformal_alpha is not None:
        conformal_alpha = check_alpha(conformal_alpha)
    t0 = time.perf_counter()
    emit(listener, Progress(_TASK, 0, None, "loading the run"))
    lr = load_run_like(run, o.device)
    model = lr.model.eval()
    dev = device_of(model)
    records, used, train_records = select_records(lr, data_src, split, cancel, listener)
    records = [records[i] for i in _subsample(len(records), max_cases, seed)]
    ds = records_dataset(lr, records)
    n = len(ds)
    labels = np.asarray(ds.targets, dtype=int)
    patients = np.asarray([r.patient for r in records])
    n_batches = math.ceil(n / batch_size)
    notes: list[str] = []

    # ---- predictions (temperature-scaled: the run's validation calibration) -----------
    cancel.check()
    cal = run_calibration(lr, cancel=cancel, listener=listener) if calibrate else None
    temp = temperature_of(cal)
    if calibrate and cal is None:
        notes.append("probabilities are not calibrated: the run's validation slices are not "
                     "available to fit a temperature on")
    elif cal is not None and not cal.applied:
        notes.append(not_applied_text(cal))
    elif cal is not None and not cal.plausible():
        notes.append(f"the calibration temperature ({cal.temperature:.3g}, fitted on "
                     f"{cal.n} validation slices) is at the end of its range: the validation "
                     "set is too small or the model barely separates the classes there; "
                     "read probabilities with care")
    idx = np.arange(n)
    tta_info = None
    uncertainty = None
    if tta is not None:
        res = tta_predict(model, dataset_batches(ds, idx, batch_size), tta, device=dev,
                          total=n_batches, cancel=cancel, listener=listener, temperature=temp)
        probs, plain = res.probs, res.plain
        uncertainty = res.uncertainty
        tta_info = {**tta_summary(res, labels), "config": dataclasses.asdict(tta)}
    else:
        probs, _ = predict_proba(model, dataset_batches(ds, idx, batch_size), device=dev,
                                 total=n_batches, cancel=cancel, listener=listener,
                                 temperature=temp)
        plain = probs
    # the plain view before scaling (the map is invertible: T then 1/T is the identity)
    raw = apply_temperature(plain, 1.0 / temp) if temp != 1.0 else plain

    # ---- metrics (in analysis order: the "normal" class first) ------------------------
    order = analysis_order(lr.classes)
    classes = [lr.classes[i] for i in order]
    remap = np.argsort(order)  # model index -> analysis index
    labels = remap[labels]
    probs, plain, raw = probs[:, order], plain[:, order], raw[:, order]
    calibration = calibration_summary(labels, raw, plain, cal) if calibrate else None
    conformal = None
    if conformal_alpha is not None:
        # sets from the calibrated plain probabilities: what the validation scores saw
        ccal = run_conformal(lr, temp, conformal_alpha, conformal_method,
                             batch_size=batch_size, cancel=cancel, seed=seed)
        if ccal is None:
            notes.append("conformal prediction sets were skipped: the run's validation "
                         "slices are not available to calibrate them on")
        else:
            conformal = evaluate_sets(ccal, plain, labels, patients, n_boot=n_boot, seed=seed)
    if tta_info is not None:
        tta_info["accuracy_plain"] = float((plain.argmax(1) == labels).mean())
        tta_info["accuracy_tta"] = float((probs.argmax(1) == labels).mean())
    rule = patient_rule(labels, patients)
    if rule == "any":
        notes.append(
            "Labels are per slice: a patient counts as abnormal when any slice is. "
            + ("The patient score is the mean of its slice probabilities, so when findings "
               "cover a minority of a patient's slices patient accuracy is conservative (most "
               "patients are called normal); the patient ROC AUC, which needs no threshold, is "
               "the measure to read." if patient_score == "mean" else
               "The patient score comes from its most suspicious slices "
               f"({patient_score}), so one clearly abnormal slice is enough."))
    emit(listener, Progress(_TASK, 1, None, "metrics with bootstrap intervals"))
    agg = {"patient_score": patient_score, "topk": topk}
    one_each = len(set(patients.tolist())) == len(patients)
    threshold, n_val = (None, 0) if one_each else _validation_threshold(
        lr, order, rule, agg, tta, batch_size, cancel, temp)
    if one_each:
        # one slice per patient: the patient level is the slice level, at the same cut
        notes.append("Every patient has one image: patient metrics equal slice metrics "
                     "(same decision cut).")
    if threshold is not None:
        notes.append(
            f"A patient is called {classes[1]} when its score is at least {threshold:.3f}: "
            f"the cut that best separated the run's {n_val} validation patients (Youden's J). "
            "The patient ROC AUC does not depend on it.")
    agg["patient_threshold"] = threshold
    ev = M.evaluate(labels, probs, classes, patients, rule=rule, n_boot=n_boot, seed=seed, **agg)
    ev_plain = (M.evaluate(labels, plain, classes, patients, rule=rule, n_boot=n_boot,
                           seed=seed, **agg) if tta is not None else None)
    cancel.check()

    fair = []
    if fairness:
        emit(listener, Progress(_TASK, 2, None, "fairness by sex and age band"))
        attrs = {"sex": sex_groups([r.sex for r in records]),
                 "age": age_groups([r.age for r in records])}
        fair = fairness_all(labels, probs, attrs, classes=classes,
                            n_boot=max(100, n_boot // 2), seed=seed, clusters=patients)
        if o.gap_intervals:
            add_gap_intervals(fair, labels, probs, attrs, patients, classes,
                              n_boot=min(max(n_boot, 50), 200), seed=seed, cancel=cancel,
                              listener=listener)
        if all(set(a.tolist()) == {"unknown"} for a in attrs.values()):
            notes.append("no sex or age is recorded for these patients: fairness groups "
                         "are all 'unknown'")

    rob = []
    if robustness:
        # the attacks and HU curves score argmax of the model: they need model indices
        rob = _robustness(lr, ds, records, np.asarray(order)[labels], o.hu_strengths,
                          o.adversarial_eps, o.robustness_cases, batch_size, seed, dev, cancel,
                          listener, notes)

    shift_res = None
    if shift:
        shift_res = _shift(lr, ds, train_records, o, dev, cancel, listener, notes)

    atts: list[AttentionItem] = []
    picks = _pick_attention(labels, probs, attention_samples)
    for k, i in enumerate(picks, start=1):
        cancel.check()
        emit(listener, Progress("attention", k, len(picks)))
        rec = records[i]
        from vitdesk.data.dataset import read_record

        x, _ = ds[i]
        pred = int(probs[i].argmax())
        try:
            images = attention_overlays(model, x, read_record(rec), rec.kind, lr.window,
                                        lr.img_size, order[pred])
        except ModelError as exc:  # e.g. an unusual model: no maps, the rest still stands
            notes.append(f"attention maps were skipped: {exc}")
            break
        true_c, pred_c = classes[labels[i]], classes[pred]
        ok = pred == labels[i]
        for method, img in images.items():
            # short: four captions share one row of the report
            name = "rollout" if method == "rollout" else "CAM"
            cap = f"{'' if ok else 'WRONG '}{true_c}->{pred_c} {probs[i, pred]:.2f} {name}"
            atts.append(AttentionItem(img, cap, method, bool(ok), true_c, pred_c,
                                      float(probs[i, pred])))

    settings = {"split": used, "tta": tta is not None, "n_boot": n_boot, "seed": seed,
                "max_cases": max_cases, "robustness_cases": o.robustness_cases,
                "calibrated": cal is not None, "conformal_alpha": conformal_alpha,
                "conformal_method": conformal_method,
                "shift_train_cases": o.shift_train_cases,
                "shift_percentile": o.shift_percentile, "attention_samples": attention_samples,
                "window": lr.window.label(), "img_size": lr.img_size,
                "model": lr.cfg.model.name, "device": str(dev), "patient_rule": rule,
                "patient_score": patient_score, "topk": topk,
                "model_classes": list(lr.classes),
                "positive_class": classes[1] if len(classes) == 2 else None}
    out = RunEvaluation(
        run_id=Path(lr.run_dir).name, split=used, classes=classes,
        fingerprint=fingerprint(records), n_slices=n, n_patients=len(set(patients.tolist())),
        labels=labels, probs=probs, plain_probs=plain, patients=patients, metrics=ev,
        metrics_plain=ev_plain, tta=tta_info, uncertainty=uncertainty, fairness=fair,
        robustness=rob, shift=shift_res, calibration=calibration, conformal=conformal,
        attention=atts, notes=notes,
        settings=settings,
        versions=versions(), seconds=time.perf_counter() - t0, keys=slice_keys(records),
    )
    emit(listener, Progress(_TASK, 3, 3, "done"))
    return out


def _robustness(lr: Any, ds: Any, records: list, labels: np.ndarray,
                hu_strengths: dict | None, eps: Sequence[float] | None, k: int,
                batch_size: int, seed: int, dev: torch.device, cancel: CancelToken,
                listener: Listener | None, notes: list[str]) -> list:
    from vitdesk.analysis.robustness import adversarial_curves, hu_perturbation_curves
    from vitdesk.data.dataset import preprocess_slice, read_record

    out = []
    sub = _stratified(labels, k, seed)
    dicom = [int(i) for i in sub if records[i].kind == "dicom"]
    if dicom:
        raws = {i: read_record(records[i]) for i in dicom}
        shape = Counter(r.shape for r in raws.values()).most_common(1)[0][0]
        keep = [i for i in dicom if raws[i].shape == shape]  # one stack needs one shape
        hu = np.stack([raws[i] for i in keep]).astype(np.float32)

        def prep(batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.stack([
                preprocess_slice(h, "dicom", lr.window, lr.img_size, lr.mean, lr.std, 3)
                for h in batch]))

        out.append(hu_perturbation_curves(
            lr.model, hu, labels[keep], prep, perturbations=hu_strengths or DEFAULT_HU,
            batch_size=batch_size, seed=seed, device=dev, cancel=cancel, listener=listener))
        out[-1].n = len(keep)
    else:
        notes.append("HU robustness was skipped: the evaluation images are not CT (DICOM)")
    x = torch.stack([ds[int(i)][0] for i in sub])
    out.append(adversarial_curves(
        lr.model, x, labels[sub], lr.mean, lr.std,
        epsilons=tuple(eps) if eps is not None else DEFAULT_EPSILONS,
        batch_size=batch_size, device=dev, cancel=cancel, listener=listener))
    out[-1].n = len(sub)
    return out


def _shift(lr: Any, ds: Any, train_records: list, o: EvalOptions, dev: torch.device,
           cancel: CancelToken, listener: Listener | None, notes: list[str]) -> Any:
    """Shift of the scored slices against the run's detector (see
    :func:`vitdesk.analysis.shift.fit_run_detector`, which the GUI uses too)."""
    from vitdesk.analysis.shift import extract_features, fit_run_detector

    det = fit_run_detector(lr, train_records, validation_records(lr),
                           max_train=o.shift_train_cases, percentile=o.shift_percentile,
                           batch_size=o.batch_size, seed=o.seed, cancel=cancel,
                           listener=listener, notes=notes)
    if det is None:
        return None
    ef = extract_features(lr.model, dataset_batches(ds, np.arange(len(ds)), o.batch_size, False),
                          device=dev, total=math.ceil(len(ds) / o.batch_size), cancel=cancel,
                          listener=listener)
    res = det.score(ef)
    nominal = 1.0 - o.shift_percentile / 100.0
    if res.expected_rate > nominal + 1e-9:
        notes.append(f"the shift threshold was set on only {res.reference_size} held out: "
                     f"its in-distribution "
                     f"alarm rate is up to {res.expected_rate:.1%}, not {nominal:.0%}; "
                     f"more validation patients make it tighter")
    return res


def validation_records(run: Any) -> list:
    """The run's validation records ([] when the run has no readable split)."""
    try:
        return list(run_splits(Path(run.run_dir), "val").get("val", []))
    except DataError:
        return []


__all__ = [
    "DEFAULT_EPSILONS", "DEFAULT_HU", "IMAGE_SUFFIXES", "NEGATIVE_NAMES", "AttentionItem",
    "PredictResult", "PredictedSlice", "RunEvaluation", "analysis_order", "attention_overlays",
    "display_image", "evaluate_run", "json_safe", "patient_rule", "predict_input", "r_name",
    "run_splits", "select_records", "validation_records", "versions", "EvalOptions",
]
