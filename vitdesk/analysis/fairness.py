"""Performance across patient groups (sex, age band, or any column).

Per group: n, accuracy, TPR, FPR, positive (selection) rate and AUC, each with a
bootstrap interval; across groups: demographic parity difference and ratio,
equalized odds difference and accuracy gap, defined as in fairlearn
(differences are max - min over groups, the ratio min / max). Multi-class
problems are analysed one-vs-rest per class. Small groups are flagged, never
dropped: hiding them would hide exactly the patients a model serves worst.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vitdesk.analysis.metrics import Estimate, binary_auc, bootstrap
from vitdesk.data.records import parse_age
from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

__all__ = ["GAP_NAMES", "add_gap_intervals", "age_band", "age_groups", "disparity_intervals",
           "fairness_all", "group_fairness", "parse_age", "sex_groups"]

UNKNOWN = "unknown"


def age_band(age: object, bins: Sequence[float] = (40, 65)) -> str:
    """Band label for one age: with bins (40, 65): "<40", "40-64", ">=65"; or "unknown".

    Labels of middle bands show whole years (upper edge minus one) when edges are
    integers, e.g. 40-64.
    """
    years = parse_age(age)
    if years is None:
        return UNKNOWN
    edges = list(bins)
    if years < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges[:-1], edges[1:], strict=False):
        if lo <= years < hi:
            whole = float(hi).is_integer() and float(lo).is_integer()
            upper = f"{hi - 1:g}" if whole else f"<{hi:g}"
            return f"{lo:g}-{upper}"
    return f">={edges[-1]:g}"


def age_groups(ages: Sequence[object], bins: Sequence[float] = (40, 65)) -> np.ndarray:
    """Band labels (see :func:`age_band`) for a sequence of ages."""
    return np.array([age_band(a, bins) for a in ages], dtype=object)


def sex_groups(sexes: Sequence[object]) -> np.ndarray:
    """Normalised sex labels "M", "F", "O" or "unknown"."""
    out = []
    for s in sexes:
        v = str(s).strip().upper()[:1] if s is not None else ""
        out.append(v if v in ("M", "F", "O") else UNKNOWN)
    return np.array(out, dtype=object)


def group_order(name: object) -> tuple:
    """Sort key: age bands in age order ("<40", "40-64", ">=65"), then names, unknown last."""
    s = str(name)
    m = re.match(r"^(<|>=)?(\d+(?:\.\d+)?)", s)
    if s == UNKNOWN:
        return (3, 0.0, s)
    if m:
        rank = {"<": 0, None: 1, ">=": 2}[m.group(1)]
        return (rank, float(m.group(2)), s)
    return (1, float("inf"), s)


# --------------------------------------------------------------------------- rates


def _rates(y_bin: np.ndarray, pred_bin: np.ndarray) -> dict[str, float]:
    pos, neg = y_bin == 1, y_bin == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "accuracy": float((y_bin == pred_bin).mean()) if len(y_bin) else float("nan"),
            "tpr": float(pred_bin[pos].mean()) if pos.any() else float("nan"),
            "fpr": float(pred_bin[neg].mean()) if neg.any() else float("nan"),
            "positive_rate": float(pred_bin.mean()) if len(y_bin) else float("nan"),
        }


def _span(values: list[float]) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(max(v) - min(v)) if len(v) >= 2 else float("nan")


def _ratio(values: list[float]) -> float:
    v = [x for x in values if np.isfinite(x)]
    if len(v) < 2 or max(v) == 0:
        return float("nan")
    return float(min(v) / max(v))


@dataclass
class GroupRow:
    """One group's metrics (one-vs-rest for ``positive``)."""

    group: str
    n: int
    small: bool
    metrics: dict[str, Estimate]

    def to_dict(self) -> dict:
        return {"group": self.group, "n": self.n, "small": self.small,
                "metrics": {k: e.to_dict() for k, e in self.metrics.items()}}


@dataclass
class FairnessReport:
    """Per-group table and disparity summary for one attribute and one positive class."""

    attribute: str
    positive: str
    rows: list[GroupRow]
    disparities: dict[str, float]
    min_group_size: int
    notes: list[str] = field(default_factory=list)
    # (lo, hi) 95% patient-bootstrap interval of each gap in GAP_NAMES (NaN: cannot be
    # estimated); empty until :func:`add_gap_intervals` ran
    gap_ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"attribute": self.attribute, "positive": self.positive,
                "rows": [r.to_dict() for r in self.rows], "disparities": self.disparities,
                "gap_ci": {k: [lo, hi] for k, (lo, hi) in self.gap_ci.items()},
                "min_group_size": self.min_group_size, "notes": self.notes}


def group_fairness(
    y: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[object],
    *,
    attribute: str = "group",
    classes: Sequence[str] | None = None,
    positive: int = 1,
    threshold: float | None = None,
    min_group_size: int = 10,
    n_boot: int = 500,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> FairnessReport:
    """Group metrics for class ``positive`` vs rest.

    A case is predicted positive when ``probs[:, positive] >= threshold`` or, with
    ``threshold=None``, when ``positive`` is the argmax (the model's decision).
    ``clusters`` (patient keys) make the bootstrap resample patients.
    """
    y = np.asarray(y).astype(int).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.asarray([UNKNOWN if g is None else str(g) for g in groups], dtype=object)
    if not (len(y) == len(probs) == len(groups)):
        raise DataError("fairness: labels, probabilities and group values differ in length")
    k = probs.shape[1]
    if not 0 <= positive < k:
        raise DataError(f"fairness: positive class {positive} is outside 0..{k - 1}")
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    score = probs[:, positive]
    if threshold is None:
        pred_bin = (probs.argmax(1) == positive).astype(int)
    else:
        pred_bin = (score >= threshold).astype(int)
    y_bin = (y == positive).astype(int)
    # bootstrap works on (y, probs); pack the binary decision and score as 2 columns
    packed = np.stack([pred_bin.astype(float), score], axis=1)

    def metric(name: str):
        def fn(yb: np.ndarray, pb: np.ndarray) -> float:
            if name == "auc":
                return binary_auc(yb == 1, pb[:, 1])  # NaN when a class is absent
            return _rates(yb, pb[:, 0].astype(int))[name]
        return fn

    fns = {m: metric(m) for m in ("accuracy", "tpr", "fpr", "positive_rate", "auc")}
    rows = []
    notes = []
    for gi, g in enumerate(sorted(set(groups.tolist()), key=group_order)):
        m = groups == g
        n = int(m.sum())
        est = bootstrap(fns, y_bin[m], packed[m],
                        clusters=None if clusters is None else np.asarray(clusters)[m],
                        n_boot=n_boot, seed=seed + gi)
        small = n < min_group_size
        if small:
            notes.append(f"group {g!s} has only {n} cases (< {min_group_size}): "
                         "its estimates are unreliable")
        rows.append(GroupRow(str(g), n, small, est))
    sel = [r.metrics["positive_rate"].value for r in rows]
    tpr = [r.metrics["tpr"].value for r in rows]
    fpr = [r.metrics["fpr"].value for r in rows]
    acc = [r.metrics["accuracy"].value for r in rows]
    tpr_d, fpr_d = _span(tpr), _span(fpr)
    disp = {
        "demographic_parity_difference": _span(sel),
        "demographic_parity_ratio": _ratio(sel),
        "equalized_odds_difference": float(np.nanmax([tpr_d, fpr_d]))
        if np.isfinite([tpr_d, fpr_d]).any() else float("nan"),
        "tpr_difference": tpr_d,
        "fpr_difference": fpr_d,
        "accuracy_gap": _span(acc),
    }
    return FairnessReport(attribute, classes[positive], rows, disp, min_group_size, notes)


def fairness_all(
    y: np.ndarray,
    probs: np.ndarray,
    attributes: dict[str, Sequence[object]],
    *,
    classes: Sequence[str] | None = None,
    min_group_size: int = 10,
    n_boot: int = 500,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> list[FairnessReport]:
    """Reports for each attribute; binary: the positive class (1), else one per class.

    ``attributes`` maps a name ("sex", "age") to one group value per case (use
    :func:`sex_groups` / :func:`age_groups` to make them).
    """
    k = np.asarray(probs).shape[1]
    positives = [1] if k == 2 else list(range(k))
    return [
        group_fairness(y, probs, vals, attribute=name, classes=classes, positive=p,
                       min_group_size=min_group_size, n_boot=n_boot, seed=seed,
                       clusters=clusters)
        for name, vals in attributes.items()
        for p in positives
    ]


# the gap figures that get intervals (tpr/fpr differences are parts of equalized odds)
GAP_NAMES = ("demographic_parity_difference", "demographic_parity_ratio",
             "equalized_odds_difference", "accuracy_gap")


def disparity_intervals(y: np.ndarray, probs: np.ndarray, groups: Sequence[object],
                        patients: np.ndarray, positive: int, n_boot: int = 200, seed: int = 0,
                        alpha: float = 0.05, cancel: CancelToken = NEVER
                        ) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the disparity figures, resampling whole patients.

    Each replicate draws patients with replacement and recomputes
    :func:`group_fairness` (point values only), so the interval reflects how much a
    gap would move with another sample of patients. A gap defined in fewer than a
    tenth of the replicates (at least 10) gets (NaN, NaN).
    """
    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.asarray([UNKNOWN if g is None else str(g) for g in groups], dtype=object)
    keys, inv = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(len(keys))]
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {k: [] for k in GAP_NAMES}
    for b in range(n_boot):
        if b % 20 == 0:
            cancel.check()
        idx = np.concatenate([members[i] for i in rng.integers(0, len(keys), len(keys))])
        rep = group_fairness(y[idx], probs[idx], groups[idx], positive=positive,
                             n_boot=0, min_group_size=0)
        for k in GAP_NAMES:
            v = rep.disparities.get(k, float("nan"))
            if np.isfinite(v):
                reps[k].append(v)
    out = {}
    for k, v in reps.items():
        if n_boot > 0 and len(v) >= max(10, n_boot // 10):
            lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
            out[k] = (float(lo), float(hi))
        else:
            out[k] = (float("nan"), float("nan"))
    return out


def add_gap_intervals(reports: Sequence[FairnessReport], y: np.ndarray, probs: np.ndarray,
                      attributes: dict[str, Sequence[object]], patients: np.ndarray,
                      classes: Sequence[str], *, n_boot: int = 200, seed: int = 0,
                      cancel: CancelToken = NEVER, listener: Listener | None = None) -> None:
    """Fill each report's ``gap_ci`` (patient bootstrap of :func:`disparity_intervals`);
    ``attributes`` are the group values :func:`fairness_all` was given."""
    classes = list(classes)
    for i, rep in enumerate(reports, start=1):
        emit(listener, Progress("gap intervals", i, len(reports)))
        groups = attributes.get(rep.attribute)
        if groups is None or rep.positive not in classes:
            continue
        rep.gap_ci = disparity_intervals(y, probs, groups, patients,
                                         classes.index(rep.positive), n_boot=n_boot,
                                         seed=seed, cancel=cancel)
