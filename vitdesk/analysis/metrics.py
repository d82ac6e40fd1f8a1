"""Classification metrics with bootstrap confidence intervals, slice and patient level.

Inputs are plain numpy arrays: ``y`` (N,) integer labels, ``probs`` (N, K) softmax
probabilities, optional ``patients`` (N,) safe patient keys. Definitions are
scikit-learn's (the tests compare every value with it); the metrics are computed
with numpy/scipy because the bootstrap recomputes them thousands of times and
sklearn's input validation would dominate. Confidence intervals are percentile
bootstrap intervals (seeded). Patient-level metrics resample patients, not slices, because slices of
one patient are not independent.

Patient aggregation: the patient's score is, with ``patient_score="mean"`` (the
default), the mean of its slice probabilities. For a focal finding seen on a few
slices the mean dilutes the finding, so ``"max"`` and ``"topk"`` (the mean of the
``topk`` highest slice probabilities) score every abnormal class (index >= 1) by its
most suspicious slices and give the first (normal) class the rest, 1 - sum. Its
label is the majority slice label (``rule="majority"``, ties go to the higher
class index, i.e. towards the abnormal class when classes are ordered
normal-first) or, with ``rule="any"``, the highest class index present on any of
its slices (binary: positive if any slice is positive).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vitdesk.engine.calibration import calibration_bins as _bins
from vitdesk.errors import DataError

MetricFn = Callable[[np.ndarray, np.ndarray], float]


# --------------------------------------------------------------------------- point metrics


def _check(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise DataError(
            f"metrics: labels ({y.shape[0]}) and probabilities {probs.shape} do not match; "
            "pass one probability row per labelled case"
        )
    if y.size == 0:
        raise DataError("metrics: no labelled cases to evaluate")
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise DataError(
            f"metrics: labels must be class indices 0..{probs.shape[1] - 1}; drop unlabelled "
            "cases (label -1) before evaluating"
        )
    return y, probs


def binary_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of boolean labels ``pos`` against ``score`` (NaN if one class is absent)."""
    # Mann-Whitney U with mid-ranks for ties: equal to sklearn's roc_auc_score, and
    # cheap enough for thousands of bootstrap replicates
    from scipy.stats import rankdata

    pos = np.asarray(pos, dtype=bool)
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: binary on the positive column, else one-vs-rest macro average over the
    classes present (sklearn's ``multi_class="ovr"``). NaN if only one class is present."""
    y, probs = _check(y, probs)
    present = np.unique(y)
    if present.size < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return binary_auc(y == 1, probs[:, 1])
    return float(np.mean([binary_auc(y == c, probs[:, c]) for c in present]))


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted); same as sklearn's, but fast
    enough to recompute in every bootstrap replicate."""
    idx = np.asarray(y).astype(int) * n_classes + np.asarray(pred).astype(int)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def sensitivity_specificity(
    y: np.ndarray, pred: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (one-vs-rest) sensitivity and specificity; NaN where undefined."""
    cm = confusion(y, pred, n_classes)
    tp = np.diag(cm).astype(float)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    return sens, spec


def calibration_bins(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Expected calibration error (top-label) and the reliability-diagram bins (defined
    in :mod:`vitdesk.engine.calibration`, which temperature scaling at the end of training
    shares)."""
    y, probs = _check(y, probs)
    return _bins(y, probs, n_bins)


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Top-label expected calibration error (see :func:`calibration_bins`)."""
    return calibration_bins(y, probs, n_bins)["ece"]


def predicted_labels(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class decisions: the argmax, or for two classes ``probs[:, 1] >= threshold``."""
    if threshold is None or probs.shape[1] != 2:
        return probs.argmax(1)
    return (probs[:, 1] >= threshold).astype(int)


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float | None:
    """The cut on ``score`` that maximises sensitivity + specificity (Youden's J).

    ``y`` is 0/1. Returns the midpoint between the lowest score called positive and the
    next lower one, or None without both classes. Choose it on validation cases, never
    on the cases it will be scored on.
    """
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return None
    cuts = np.unique(score)[::-1]  # descending: each cut calls score >= cut positive
    pos, neg = (y == 1).sum(), (y == 0).sum()
    best, best_j = None, -np.inf
    for i, cut in enumerate(cuts):
        call = score >= cut
        j = (call & (y == 1)).sum() / pos - (call & (y == 0)).sum() / neg
        if j > best_j + 1e-12:
            lower = cuts[i + 1] if i + 1 < len(cuts) else 0.0
            best, best_j = float((cut + lower) / 2), j
    return best


def _scalar_metrics(n_classes: int, threshold: float | None = None) -> dict[str, MetricFn]:
    """Metrics that the bootstrap recomputes; each maps (y, probs) to a float."""

    def acc(y: np.ndarray, p: np.ndarray) -> float:
        return float((predicted_labels(p, threshold) == y).mean())

    def bacc(y: np.ndarray, p: np.ndarray) -> float:
        # as sklearn's balanced_accuracy_score: mean recall over classes present in y
        sens, _ = sensitivity_specificity(y, predicted_labels(p, threshold), n_classes)
        return float(np.nanmean(sens))

    def ece(y: np.ndarray, p: np.ndarray) -> float:
        return expected_calibration_error(y, p)

    out: dict[str, MetricFn] = {"accuracy": acc, "balanced_accuracy": bacc,
                                "auc": roc_auc, "ece": ece}
    for c in range(n_classes):
        out[f"sensitivity_{c}"] = lambda y, p, c=c: float(
            sensitivity_specificity(y, predicted_labels(p, threshold), n_classes)[0][c])
        out[f"specificity_{c}"] = lambda y, p, c=c: float(
            sensitivity_specificity(y, predicted_labels(p, threshold), n_classes)[1][c])
    return out


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval (NaN when undefined)."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


def bootstrap(
    fns: dict[str, MetricFn],
    y: np.ndarray,
    probs: np.ndarray,
    *,
    clusters: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Point value and (1 - alpha) percentile interval of each metric in ``fns``.

    Resamples rows with replacement, or whole ``clusters`` (e.g. patients) when
    given. Replicates where a metric is undefined (NaN, e.g. AUC with one class)
    are skipped for that metric.
    """
    y, probs = _check(y, probs)
    rng = np.random.default_rng(seed)
    point = {k: fn(y, probs) for k, fn in fns.items()}
    reps: dict[str, list[float]] = {k: [] for k in fns}
    if clusters is None:
        groups = [np.array([i]) for i in range(len(y))]
    else:
        clusters = np.asarray(clusters)
        _, inv = np.unique(clusters, return_inverse=True)
        groups = [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]
    n = len(groups)
    for _ in range(n_boot):
        pick = rng.integers(0, n, size=n)
        idx = np.concatenate([groups[i] for i in pick])
        yb, pb = y[idx], probs[idx]
        for k, fn in fns.items():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # degenerate resamples warn; skipped below
                try:
                    v = fn(yb, pb)
                except ValueError:
                    v = float("nan")
            if np.isfinite(v):
                reps[k].append(v)
    out = {}
    for k, v in point.items():
        r = np.asarray(reps[k])
        if r.size and np.isfinite(v):
            lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
            # a percentile interval can miss a point estimate at a boundary
            # (e.g. accuracy 1.0); widen so it always contains it
            out[k] = Estimate(float(v), float(min(lo, v)), float(max(hi, v)))
        else:
            out[k] = Estimate(float(v), float("nan"), float("nan"))
    return out


# --------------------------------------------------------------------------- evaluation


PATIENT_SCORES = ("mean", "max", "topk")


def _top_k_count(n: int, topk: float) -> int:
    """Slices averaged by "topk": an int k >= 1, or a fraction in (0, 1) of ``n``."""
    k = int(np.ceil(topk * n)) if 0 < topk < 1 else int(topk)
    return max(1, min(k, n))


def patient_scores(probs: np.ndarray, how: str = "mean", topk: float = 3) -> np.ndarray:
    """One patient's (K,) score from its slices' (n, K) probabilities.

    "mean" averages every column. "max" / "topk" score each abnormal class (index >= 1)
    by its highest / the mean of its ``topk`` highest slice probabilities, and the
    normal class (index 0) by 1 - their sum (rows renormalised if that sum exceeds 1),
    so one clearly abnormal slice makes an abnormal patient.
    """
    if how == "mean":
        return probs.mean(axis=0)
    n, k_cls = probs.shape
    kk = 1 if how == "max" else _top_k_count(n, topk)
    top = -np.sort(-probs[:, 1:], axis=0)[:kk].mean(axis=0)
    total = float(top.sum())
    if total > 1.0:
        return np.concatenate([[0.0], top / total])
    return np.concatenate([[1.0 - total], top])


def aggregate_by_patient(
    y: np.ndarray, probs: np.ndarray, patients: Sequence[str] | np.ndarray, rule: str = "majority",
    patient_score: str = "mean", topk: float = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient labels, patient scores and patient keys (sorted).

    ``rule`` is "majority" (ties to the higher class) or "any" (highest class seen);
    ``patient_score`` and ``topk`` as in :func:`patient_scores`.
    """
    y, probs = _check(y, probs)
    patients = np.asarray(patients).astype(str)
    if patients.shape[0] != y.shape[0]:
        raise DataError("metrics: one patient key per slice is needed for patient-level metrics")
    if rule not in ("majority", "any"):
        raise DataError(f"metrics: patient label rule must be 'majority' or 'any', got {rule!r}")
    if patient_score not in PATIENT_SCORES:
        raise DataError(f"metrics: patient_score must be one of {', '.join(PATIENT_SCORES)}, "
                        f"got {patient_score!r}")
    if not topk > 0:
        raise DataError(f"metrics: topk must be a slice count >= 1 or a fraction in (0, 1), "
                        f"got {topk}")
    keys, inv = np.unique(patients, return_inverse=True)
    k = probs.shape[1]
    labels = np.empty(len(keys), dtype=int)
    scores = np.empty((len(keys), k))
    for i in range(len(keys)):
        m = inv == i
        scores[i] = patient_scores(probs[m], patient_score, topk)
        counts = np.bincount(y[m], minlength=k)
        if rule == "majority":
            labels[i] = int(np.flatnonzero(counts == counts.max()).max())
        else:
            labels[i] = int(y[m].max())
    return labels, scores, keys


@dataclass
class LevelMetrics:
    """Metrics of one level (slice or patient)."""

    n: int
    estimates: dict[str, Estimate]
    confusion: np.ndarray
    calibration: dict
    per_class: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    cut: str = ""  # the decision behind accuracy/sensitivity/confusion (see decision_cut)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "cut": self.cut,
            "metrics": {k: e.to_dict() for k, e in self.estimates.items()},
            "per_class": {c: {k: e.to_dict() for k, e in d.items()}
                          for c, d in self.per_class.items()},
            "confusion": self.confusion.tolist(),
            "calibration": self.calibration,
        }


@dataclass
class Evaluation:
    """Slice-level and (when patients are known) patient-level metrics."""

    classes: list[str]
    slice: LevelMetrics
    patient: LevelMetrics | None
    settings: dict

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "slice": self.slice.to_dict(),
            "patient": self.patient.to_dict() if self.patient else None,
            "settings": self.settings,
        }


def decision_cut(n_classes: int, threshold: float | None = None,
                 source: str = "validation Youden's J") -> str:
    """How a level's class decisions were made, to print next to every accuracy-like number:
    "p >= 0.5" (two classes, no cut chosen), "argmax" (more classes) or
    "p >= 0.412, validation Youden's J" (a cut chosen elsewhere)."""
    if threshold is None or n_classes != 2:
        return "p >= 0.5" if n_classes == 2 else "argmax"
    return f"p >= {float(threshold):.3f}, {source}" if source else f"p >= {threshold:.3f}"


def _level(
    y: np.ndarray, probs: np.ndarray, classes: list[str], clusters: np.ndarray | None,
    n_boot: int, seed: int, n_bins: int, threshold: float | None = None,
    cut_source: str = "validation Youden's J",
) -> LevelMetrics:
    k = len(classes)
    est = bootstrap(_scalar_metrics(k, threshold), y, probs, clusters=clusters,
                    n_boot=n_boot, seed=seed)
    per_class = {}
    for c, name in enumerate(classes):
        per_class[name] = {"sensitivity": est.pop(f"sensitivity_{c}"),
                           "specificity": est.pop(f"specificity_{c}")}
    cm = confusion(y, predicted_labels(probs, threshold), k)
    return LevelMetrics(n=int(len(y)), estimates=est, confusion=cm,
                        calibration=calibration_bins(y, probs, n_bins), per_class=per_class,
                        cut=decision_cut(k, threshold, cut_source))


def evaluate(
    y: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    patients: Sequence[str] | np.ndarray | None = None,
    *,
    rule: str = "majority",
    patient_score: str = "mean",
    topk: float = 3,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    patient_threshold: float | None = None,
    patient_cut_source: str = "validation Youden's J",
) -> Evaluation:
    """All metrics at slice level, and at patient level when ``patients`` is given.

    Slice-level intervals resample patients too when they are known (slices of a
    patient are correlated), otherwise slices. ``patient_score`` ("mean", "max",
    "topk") and ``topk`` choose the patient aggregation (see :func:`patient_scores`).
    ``patient_threshold`` (two classes): a patient is abnormal when its score is at
    least this (e.g. :func:`youden_threshold` on validation patients) instead of the
    argmax; a top-k score runs high on normal patients, so 0.5 calls too many abnormal.
    ``patient_cut_source`` names where that cut came from; each level's ``cut`` says
    which decision its accuracy-like numbers use.
    """
    y, probs = _check(y, probs)
    classes = list(classes)
    if probs.shape[1] != len(classes):
        raise DataError(
            f"metrics: {probs.shape[1]} probability columns but {len(classes)} classes"
        )
    pats = None if patients is None else np.asarray(patients).astype(str)
    slice_level = _level(y, probs, classes, pats, n_boot, seed, n_bins)
    patient_level = None
    if pats is not None:
        py, pp, _ = aggregate_by_patient(y, probs, pats, rule, patient_score, topk)
        patient_level = _level(py, pp, classes, None, n_boot, seed, n_bins,
                               patient_threshold, patient_cut_source)
    settings = {"rule": rule, "patient_score": patient_score, "n_boot": n_boot, "seed": seed,
                "n_bins": n_bins,
                "ci": "95% percentile bootstrap",
                "resampling": "patients" if pats is not None else "slices"}
    if patient_score == "topk":
        settings["topk"] = topk
    if patient_threshold is not None and probs.shape[1] == 2:
        settings["patient_threshold"] = round(float(patient_threshold), 4)
    return Evaluation(classes, slice_level, patient_level, settings)


# --------------------------------------------------------------------------- transfer


def learning_curve(history: Sequence[dict], patience: int = 3, fraction: float = 0.95) -> dict:
    """Learning-curve landmarks from history rows (``history.jsonl`` dicts, in order).

    Epochs are counted globally across stages, 1-based. ``epoch_to_fraction``: first
    epoch whose val_acc reaches ``fraction`` of the best val_acc. ``overfit_onset``:
    first epoch starting a run of ``patience`` epochs in which val_loss rises every
    epoch while train_loss falls every epoch (None if never).
    """
    rows = [r for r in history if r.get("val_acc") is not None or r.get("val_loss") is not None]
    acc = np.array([r.get("val_acc", np.nan) if r.get("val_acc") is not None else np.nan
                    for r in rows], dtype=float)
    vl = np.array([r.get("val_loss") if r.get("val_loss") is not None else np.nan
                   for r in rows], dtype=float)
    tl = np.array([r.get("train_loss") if r.get("train_loss") is not None else np.nan
                   for r in rows], dtype=float)
    out: dict = {"epochs": len(rows), "best_val_acc": None, "best_epoch": None,
                 "epoch_to_fraction": None, "fraction": fraction,
                 "overfit_onset": None, "patience": patience}
    if len(rows) == 0:
        return out
    if np.isfinite(acc).any():
        best = int(np.nanargmax(acc))
        out["best_val_acc"] = float(acc[best])
        out["best_epoch"] = best + 1
        reach = np.flatnonzero(acc >= fraction * acc[best])
        out["epoch_to_fraction"] = int(reach[0]) + 1
    for start in range(1, len(rows) - patience + 1):
        seg = slice(start - 1, start + patience)
        dv, dt = np.diff(vl[seg]), np.diff(tl[seg])
        if len(dv) == patience and (dv > 0).all() and (dt < 0).all():
            out["overfit_onset"] = start + 1  # the first epoch whose val loss rose
            break
    return out


def transfer_effectiveness(
    finetuned: dict, baseline: dict, n_classes: int, patience: int = 3
) -> dict:
    """Compare a fine-tuned run with a from-scratch baseline.

    Each argument is ``{"history": [rows], "metrics": {"accuracy": float, ...}}``
    (``metrics`` may be omitted; the best val_acc of the history is used then).
    Returns absolute improvement, gain over chance ``(acc - chance) /
    (baseline - chance)``, relative error reduction ``(acc - baseline) / (1 -
    baseline)``, and both runs' learning-curve landmarks.
    """
    chance = 1.0 / n_classes

    def accuracy(run: dict) -> float:
        m = run.get("metrics") or {}
        if "accuracy" in m:
            v = m["accuracy"]
            return float(v["value"] if isinstance(v, dict) else v)
        lc = learning_curve(run.get("history", []))
        if lc["best_val_acc"] is None:
            raise DataError("transfer: a run has neither metrics.accuracy nor val_acc history")
        return float(lc["best_val_acc"])

    acc, base = accuracy(finetuned), accuracy(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        over_chance = (acc - chance) / (base - chance) if base != chance else float("nan")
        err_red = (acc - base) / (1.0 - base) if base != 1.0 else float("nan")
    return {
        "accuracy": acc,
        "baseline_accuracy": base,
        "chance": chance,
        "absolute_improvement": acc - base,
        "gain_over_chance": float(over_chance),
        "relative_error_reduction": float(err_red),
        "finetuned_curve": learning_curve(finetuned.get("history", []), patience),
        "baseline_curve": learning_curve(baseline.get("history", []), patience),
    }
