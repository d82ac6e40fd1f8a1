"""Distribution shift: Mahalanobis distance of penultimate features to the training set.

Features are the model's pooled pre-logit vector
(``forward_head(forward_features(x), pre_logits=True)``). A Gaussian is fitted to
the training features (Ledoit-Wolf shrinkage covariance by default; the plain sample
covariance is inverted with a pseudo-inverse, so a singular one still works).

The alarm threshold is a percentile of *held-out* distances: of validation cases
when there are enough of them, else of a part of the training features that the
Gaussian was not fitted on (split by patient when patients are given). A case's
distance to a mean and covariance fitted on itself is biased low when the feature
dimension is not small against the number of cases, so an in-sample threshold
raises the alarm on far more than the nominal share of new in-distribution cases.
The threshold is the split-conformal quantile of the held-out distances, with the
patients as the exchangeable units when they are known, so a slice of a new
exchangeable patient exceeds it with probability at most ``1 - percentile/100``, or
``1/(m+1)`` when only ``m < 19`` held-out patients set it (``expected_rate`` says which).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

# validation patients are the right reference (the weights never saw them, like the cases
# scored); training patients, even held out of the Gaussian, were fitted by the network and
# sit closer to its features, so a threshold on them fires too often on new cases (CI saw
# 31 % instead of 5 %). Below this many validation slices the order statistic is too coarse
# (the largest of n is exceeded with probability 1/(n+1), 9 % at 10) and the training split
# is the fallback.
MIN_REFERENCE = 10


@torch.no_grad()
def extract_features(
    model: nn.Module,
    batches: Iterable[object],
    *,
    device: str | torch.device = "cpu",
    total: int | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    low_level: bool = True,
) -> np.ndarray:
    """Penultimate (pre-logit) features of tensors or (x, y) batches; with ``low_level``
    and a ViT also the mean and standard deviation of its patch-embedding tokens (and of
    a convolutional stem's first convolution): (N, 3D) or wider, else (N, D).

    Why both: the pooled features answer "does the model see something it knows", the
    embedding tokens "do the pixels look like the training pixels" (their mean sees an
    offset, their spread noise and texture). A convolutional stem
    with batch norm made the pooled features nearly blind to intensity shifts: on
    bench/trust.py's CT, +300 HU raised 11 % alarms (AUROC 0.74) and 150 HU of noise 0 %
    from the pooled features alone, against 100 % for a plain patchify stem.
    """
    model.eval()
    feats = []
    embed = getattr(model, "patch_embed", None)
    taps: list[torch.Tensor] = []
    hooks = []
    if low_level and isinstance(embed, nn.Module):
        hooks.append(embed.register_forward_hook(lambda _m, _i, out: taps.append(out)))
        first = getattr(getattr(embed, "proj", None), "first_norm", None)
        if callable(first):
            # a convolutional stem: also its first convolution, which still sees noise
            # and texture at half the input resolution
            hooks.append(first().register_forward_hook(lambda _m, _i, out: taps.append(out)))
    try:
        for i, batch in enumerate(batches, start=1):
            cancel.check()
            x = batch if isinstance(batch, torch.Tensor) else batch[0]
            taps.clear()
            f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
            parts = [f.float()]
            for t in taps:
                t = t.float().flatten(2).transpose(1, 2) if t.ndim == 4 else t.float()
                parts += [t.mean(dim=1), t.std(dim=1)]  # over tokens / positions
            feats.append(torch.cat(parts, dim=1).cpu())
            emit(listener, Progress("features", i, total))
    finally:
        for h in hooks:
            h.remove()
    if not feats:
        raise DataError("shift: no images to extract features from")
    return torch.cat(feats).numpy().astype(np.float64)


def ood_auroc(in_distances: np.ndarray, out_distances: np.ndarray) -> float:
    """AUROC of telling ``out_distances`` from ``in_distances`` by distance (0.5: no shift)."""
    from vitdesk.analysis.metrics import binary_auc

    a, b = np.asarray(in_distances, float), np.asarray(out_distances, float)
    return binary_auc(np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)], np.r_[a, b])


def conformal_threshold(reference: np.ndarray, percentile: float,
                        groups: np.ndarray | None = None) -> float:
    """The split-conformal threshold of held-out distances (their largest when too few).

    Without ``groups`` the ceil((n+1) q)-th smallest of ``n`` distances: a new case
    exchangeable with them exceeds it with probability at most ``a = 1 - q``.

    With ``groups`` (the patient of each distance) the exchangeable units are the
    ``m`` patients, not the slices: slices of one patient share anatomy, noise and
    scanner, so a new patient is often wholly above or wholly below. The threshold is
    the smallest distance ``t`` at which the patients' mean share of slices beyond
    ``t`` is at most ``((m+1) a - 1) / m``; then a random slice of a new exchangeable
    patient exceeds it with probability at most ``a`` (pooled-CDF argument of Dunn,
    Wasserman & Ramdas 2022, hierarchical conformal prediction). With fewer than
    ``1/a - 1`` patients that is impossible and the threshold is the largest distance,
    exceeded with probability at most ``1/(m+1)``. One slice per patient gives the
    plain rule.
    """
    d = np.asarray(reference, dtype=np.float64)
    if len(d) == 0:
        raise DataError("shift: no held-out distances to set the threshold on")
    alpha = 1.0 - percentile / 100.0
    if groups is None:
        k = math.ceil((len(d) + 1) * percentile / 100.0 - 1e-9)
        return float(np.sort(d)[min(k, len(d)) - 1])
    g = np.asarray(groups)
    if len(g) != len(d):
        raise DataError(f"shift: {len(g)} patients for {len(d)} held-out distances")
    _, inv = np.unique(g, return_inverse=True)
    m = int(inv.max()) + 1
    budget = ((m + 1) * alpha - 1.0) / m
    if budget < 0:
        return float(d.max())
    # each slice weighs 1/(its patient's slice count)/m in the patients' mean share
    w = 1.0 / np.bincount(inv)[inv] / m
    order = np.argsort(d, kind="stable")
    ds, ws = d[order], w[order]
    above = 1.0 - np.cumsum(ws)  # mean share beyond ds[i] (ties resolved below)
    for i in range(len(ds)):
        if i + 1 < len(ds) and ds[i + 1] == ds[i]:
            continue  # the share beyond a tied value counts only the larger values
        if above[i] <= budget + 1e-12:
            return float(ds[i])
    return float(ds[-1])


def reference_size(n_slices: int, n_patients: int = 0) -> str:
    """How many held-out cases set a threshold, as the report and the GUI print it."""
    return (f"{n_slices} slices of {n_patients} patients" if n_patients
            else f"{n_slices} slices")


def reference_units(n: int, groups: np.ndarray | None) -> int:
    """Exchangeable units behind a threshold: patients when known, else slices."""
    return int(len(np.unique(np.asarray(groups)))) if groups is not None and n else n


@dataclass(frozen=True)
class ShiftResult:
    """Shift score of a set of cases against the training distribution."""

    threshold: float
    percentile: float
    fraction_above: float  # share of cases beyond the threshold = the observed alarm rate
    median_ratio: float  # median distance of the cases / median held-out reference distance
    outliers: np.ndarray  # indices of cases above the threshold
    distances: np.ndarray
    expected_rate: float = float("nan")  # 1 - percentile/100: the in-distribution alarm rate
    auroc: float = float("nan")  # cases vs held-out in-distribution reference distances
    n_reference: int = 0  # held-out cases the threshold was set on
    n_reference_patients: int = 0  # their patients (the exchangeable units), 0 if unknown
    reference: str = ""  # "validation" | "held-out training split"
    covariance: str = ""  # "ledoit-wolf" | "sample"
    reference_group_max: float = float("nan")  # highest alarm share of one held-out patient

    @property
    def observed_rate(self) -> float:
        """Share of the scored cases that raise the alarm."""
        return self.fraction_above

    @property
    def reference_size(self) -> str:
        """"18 slices of 3 patients": the held-out cases behind the threshold."""
        return reference_size(self.n_reference, self.n_reference_patients)

    @property
    def slice_out(self) -> np.ndarray:
        """(N,) True for each case beyond the threshold."""
        return self.distances > self.threshold

    @property
    def out_of_distribution(self) -> bool:
        """The verdict for the scored cases as a whole (see :func:`series_shifted`)."""
        return series_shifted(len(self.outliers), len(self.distances), self.expected_rate,
                              group_max=self.reference_group_max)

    def verdict(self) -> str:
        """One line for the point of decision: in/out of distribution, the alarms seen
        against the run's threshold and the rate expected on in-distribution data."""
        n, k = len(self.distances), len(self.outliers)
        seen = (f"{k} of {n} slices beyond the run's {self.percentile:g}th-percentile "
                f"threshold (expected {self.expected_rate:.0%} on data like the training set)")
        if self.out_of_distribution:
            return f"OUT OF DISTRIBUTION: outside what the model was trained on; {seen}"
        return f"in distribution: {seen}"

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "percentile": self.percentile,
                "fraction_above": self.fraction_above, "median_ratio": self.median_ratio,
                "expected_rate": self.expected_rate, "observed_rate": self.fraction_above,
                "auroc": self.auroc, "reference": self.reference,
                "n_reference": self.n_reference,
                "n_reference_patients": self.n_reference_patients,
                "covariance": self.covariance,
                "reference_patient_max_rate": self.reference_group_max,
                "n": int(len(self.distances)), "n_outliers": int(len(self.outliers)),
                "outliers": self.outliers.tolist()}


# a series is called shifted when its alarm count would happen less often than this
# for in-distribution slices (each raises the alarm with the expected rate)
SERIES_P = 0.01


def series_shifted(n_above: int, n: int, expected_rate: float, p: float = SERIES_P,
                   group_max: float = float("nan")) -> bool:
    """Whether ``n_above`` alarms among ``n`` slices say the series is out of distribution.

    In-distribution slices raise the alarm with probability ``expected_rate`` each, so
    a few alarms in a long series are expected; the series is shifted when the binomial
    chance of at least ``n_above`` alarms is below ``p``. Slices of one patient are not
    independent, so the count must also exceed the share seen in the most alarming
    held-out in-distribution patient (``group_max``, when known); otherwise a long,
    ordinary series with a few more alarms than average would be called shifted. A
    single slice is shifted when it raises the alarm (no count to test).
    """
    if n <= 0 or n_above <= 0:
        return False
    if n == 1:
        return True
    if math.isfinite(group_max) and n_above / n <= group_max:
        return False
    from scipy.stats import binom

    return bool(binom.sf(n_above - 1, n, expected_rate) < p)


def holdout_split(n: int, groups: np.ndarray | None, holdout: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): whole groups (patients) held out when given."""
    return _split(n, groups, holdout, seed)


def _split(n: int, groups: np.ndarray | None, holdout: float, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): whole groups (patients) held out when given."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)
        if len(g) != n:
            raise DataError(f"shift: {len(g)} groups for {n} feature rows")
        uniq = rng.permutation(np.unique(g))
        if len(uniq) >= 2:
            n_out = min(max(1, round(len(uniq) * holdout)), len(uniq) - 1)
            out = np.isin(g, uniq[:n_out])
            return np.flatnonzero(~out), np.flatnonzero(out)
    perm = rng.permutation(n)
    n_out = min(max(1, round(n * holdout)), n - 2)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


class MahalanobisDetector:
    """Mahalanobis distance to training features, thresholded on held-out cases."""

    def __init__(self, percentile: float = 95.0, shrinkage: bool = True,
                 holdout: float = 0.5, seed: int = 0) -> None:
        if not 0 < percentile < 100:
            raise DataError(f"shift: percentile must be in (0, 100), got {percentile}")
        if not 0 < holdout < 1:
            raise DataError(f"shift: holdout must be in (0, 1), got {holdout}")
        self.percentile = percentile
        self.shrinkage = shrinkage
        self.holdout = holdout
        self.seed = seed
        self.mean: np.ndarray | None = None
        self.precision: np.ndarray | None = None
        self.threshold = float("nan")
        self.reference_distances = np.zeros(0)
        self.reference_groups: np.ndarray | None = None  # patient of each reference row
        self.reference = ""
        # highest alarm share of one held-out patient: slices of a patient are correlated,
        # so an in-distribution series can exceed the binomial count (see series_shifted)
        self.reference_group_max = float("nan")
        self.n_train = 0  # training rows behind the Gaussian (set by fit_run_detector)

    @property
    def expected_rate(self) -> float:
        """Alarm rate on new in-distribution cases that the threshold is set for: the
        nominal ``1 - q``, or ``1/(m+1)`` when ``m`` reference units (patients when
        known, else slices) are too few and the threshold is their largest (see
        conformal_threshold)."""
        nominal = round(1.0 - self.percentile / 100.0, 12)  # 0.05, not 0.050000000000000044
        m = reference_units(len(self.reference_distances), self.reference_groups)
        return max(nominal, round(1.0 / (m + 1), 12)) if m else nominal

    @property
    def n_reference_patients(self) -> int:
        """Patients behind the threshold (0 when the reference rows have no patients)."""
        return 0 if self.reference_groups is None else reference_units(
            len(self.reference_distances), self.reference_groups)

    @property
    def train_median(self) -> float:
        """Median held-out reference distance (what a typical in-distribution case scores)."""
        d = self.reference_distances
        return float(np.median(d)) if len(d) else float("nan")

    def fit(self, train_features: np.ndarray, holdout_features: np.ndarray | None = None,
            *, groups: np.ndarray | None = None,
            holdout_groups: np.ndarray | None = None) -> MahalanobisDetector:
        """Fit mean and covariance, and set the threshold on held-out distances.

        Args:
            train_features: (N, D) in-distribution features.
            holdout_features: (M, D) in-distribution features the Gaussian is not fitted
                on (e.g. validation patients); the threshold is set on them. When None
                (or fewer than ``MIN_REFERENCE`` rows), ``train_features`` is split:
                the Gaussian is fitted on one part and the threshold set on the other.
            groups: (N,) patient of each training row, so a patient is never on both
                sides of that split.
            holdout_groups: (M,) patient of each held-out row: the threshold then holds
                its rate for new patients (see conformal_threshold), and they give the
                highest alarm share of one in-distribution patient, which the series
                verdict must exceed.
        """
        f = np.asarray(train_features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2:
            raise DataError(f"shift: need at least 2 training feature rows, got {f.shape}")
        h = None if holdout_features is None else np.asarray(holdout_features, np.float64)
        if h is not None and (h.ndim != 2 or h.shape[1] != f.shape[1]):
            raise DataError(f"shift: held-out features {h.shape} do not match training "
                            f"features {f.shape}")
        if h is not None and len(h) >= MIN_REFERENCE:
            fit_rows, ref, self.reference = f, h, "validation"
            ref_groups = holdout_groups
        else:
            if f.shape[0] < 4:
                raise DataError(f"shift: need at least 4 training feature rows to hold some "
                                f"out for the threshold, got {f.shape[0]}")
            a, b = _split(len(f), groups, self.holdout, self.seed)
            fit_rows, ref, self.reference = f[a], f[b], "held-out training split"
            ref_groups = None if groups is None else np.asarray(groups)[b]
        self._fit_gaussian(fit_rows)
        self.reference_distances = self.distances(ref)
        if ref_groups is not None and len(ref_groups) != len(ref):
            raise DataError(f"shift: {len(ref_groups)} patients for {len(ref)} held-out rows")
        self.reference_groups = None if ref_groups is None else np.asarray(ref_groups)
        self.threshold = conformal_threshold(self.reference_distances, self.percentile,
                                             self.reference_groups)
        if self.reference_groups is not None:
            above = self.reference_distances > self.threshold
            ref_groups = self.reference_groups
            self.reference_group_max = max(
                float(above[ref_groups == g].mean()) for g in np.unique(ref_groups))
        return self

    def _fit_gaussian(self, f: np.ndarray) -> None:
        from scipy.linalg import pinvh

        self.mean = f.mean(axis=0)
        if self.shrinkage and len(f) >= 2:
            from sklearn.covariance import LedoitWolf

            cov = LedoitWolf().fit(f).covariance_
        else:
            cov = np.cov(f, rowvar=False)
        # pinvh: symmetric pseudo-inverse, well defined when cov is singular (N < D)
        self.precision = pinvh(np.atleast_2d(cov))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the training mean."""
        if self.mean is None or self.precision is None:
            raise DataError("shift: call fit() with training features first")
        diff = np.asarray(features, dtype=np.float64) - self.mean
        sq = np.einsum("nd,de,ne->n", diff, self.precision, diff)
        return np.sqrt(np.clip(sq, 0.0, None))

    def auroc(self, in_features: np.ndarray, out_features: np.ndarray) -> float:
        """AUROC of in- vs out-of-distribution features by their distance."""
        return ood_auroc(self.distances(in_features), self.distances(out_features))

    def score(self, features: np.ndarray) -> ShiftResult:
        """Observed alarm rate, median distance ratio, AUROC against the held-out
        reference and the outlier indices of ``features``."""
        d = self.distances(features)
        above = np.flatnonzero(d > self.threshold)
        med = self.train_median
        ratio = float(np.median(d) / med) if med > 0 else float("nan")
        return ShiftResult(
            self.threshold, self.percentile, float(len(above) / max(len(d), 1)), ratio, above,
            d, expected_rate=self.expected_rate,
            auroc=ood_auroc(self.reference_distances, d), n_reference=len(self.reference_distances),
            n_reference_patients=self.n_reference_patients,
            reference=self.reference, covariance="ledoit-wolf" if self.shrinkage else "sample",
            reference_group_max=self.reference_group_max)


def fit_run_detector(run: Any, train_records: list, val_records: list, *,
                     max_train: int = 256, percentile: float = 95.0, batch_size: int = 32,
                     seed: int = 0, cancel: CancelToken = NEVER,
                     listener: Listener | None = None,
                     notes: list[str] | None = None) -> MahalanobisDetector | None:
    """The run's shift detector: a Gaussian on (up to ``max_train``) training-slice
    features, its threshold on the validation patients' features (unseen by the weights,
    like the scored ones), or on training patients held out of the fit when validation
    is too small. None (and a note) when the training slices are not readable here.

    Evaluate, the report and the GUI all call this, so a series gets the same verdict
    wherever it is checked.
    """
    import dataclasses
    import os

    from vitdesk.analysis.run_model import dataset_batches, device_of, records_dataset

    notes = notes if notes is not None else []
    present = [r for r in train_records if os.path.isfile(r.path)]
    if len(present) < 4:
        notes.append("distribution shift was skipped: the run's training slices are not "
                     "available (split.json missing or data moved)")
        return None
    dev = device_of(run.model)

    def features(records: list) -> tuple[np.ndarray, np.ndarray]:
        ds = records_dataset(run, [dataclasses.replace(r, label=None) for r in records])
        n = len(ds)
        idx = (np.arange(n) if max_train >= n else
               np.sort(np.random.default_rng(seed).choice(n, size=max_train, replace=False)))
        f = extract_features(run.model, dataset_batches(ds, idx, batch_size, False), device=dev,
                             total=math.ceil(len(idx) / batch_size), cancel=cancel,
                             listener=listener)
        return f, np.asarray([records[int(i)].patient for i in idx])

    tf, groups = features(present)
    val = [r for r in val_records if os.path.isfile(r.path)]
    vf, vgroups = features(val) if len(val) >= MIN_REFERENCE else (None, None)
    det = MahalanobisDetector(percentile=percentile, shrinkage=True, seed=seed).fit(
        tf, vf, groups=groups, holdout_groups=vgroups)
    det.n_train = len(tf)
    return det
