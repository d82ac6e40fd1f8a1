"""Distribution shift: Mahalanobis distance of penultimate features to the training set.

Features are the model's pooled pre-logit vector
(``forward_head(forward_features(x), pre_logits=True)``). A Gaussian is fitted to
the training features (covariance inverted with a pseudo-inverse, so a singular
covariance from few cases still works; optional Ledoit-Wolf shrinkage). The
threshold is a high percentile of the training cases' own distances; new cases
above it are outliers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit


@torch.no_grad()
def extract_features(
    model: nn.Module,
    batches: Iterable[object],
    *,
    device: str | torch.device = "cpu",
    total: int | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> np.ndarray:
    """Penultimate (pre-logit) features (N, D) of tensors or (x, y) batches."""
    model.eval()
    feats = []
    for i, batch in enumerate(batches, start=1):
        cancel.check()
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        f = model.forward_head(model.forward_features(x.to(device)), pre_logits=True)
        feats.append(f.float().cpu())
        emit(listener, Progress("features", i, total))
    if not feats:
        raise DataError("shift: no images to extract features from")
    return torch.cat(feats).numpy().astype(np.float64)


@dataclass(frozen=True)
class ShiftResult:
    """Shift score of a set of cases against the training distribution."""

    threshold: float
    percentile: float
    fraction_above: float  # share of cases beyond the threshold (expected ~ 1 - pct/100)
    median_ratio: float  # median distance of the cases / median training distance
    outliers: np.ndarray  # indices of cases above the threshold
    distances: np.ndarray

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "percentile": self.percentile,
                "fraction_above": self.fraction_above, "median_ratio": self.median_ratio,
                "n": int(len(self.distances)), "n_outliers": int(len(self.outliers)),
                "outliers": self.outliers.tolist()}


class MahalanobisDetector:
    """Mahalanobis distance to training features, thresholded at a percentile."""

    def __init__(self, percentile: float = 95.0, shrinkage: bool = False) -> None:
        if not 0 < percentile < 100:
            raise DataError(f"shift: percentile must be in (0, 100), got {percentile}")
        self.percentile = percentile
        self.shrinkage = shrinkage
        self.mean: np.ndarray | None = None
        self.precision: np.ndarray | None = None
        self.threshold = float("nan")
        self.train_median = float("nan")

    def fit(self, train_features: np.ndarray) -> MahalanobisDetector:
        """Fit mean and (pseudo-)inverse covariance; set the threshold."""
        f = np.asarray(train_features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2:
            raise DataError(f"shift: need at least 2 training feature rows, got {f.shape}")
        self.mean = f.mean(axis=0)
        if self.shrinkage:
            from sklearn.covariance import LedoitWolf

            cov = LedoitWolf().fit(f).covariance_
        else:
            cov = np.cov(f, rowvar=False)
        # pinvh: symmetric pseudo-inverse, well defined when cov is singular (N < D)
        from scipy.linalg import pinvh

        self.precision = pinvh(np.atleast_2d(cov))
        d = self.distances(f)
        self.threshold = float(np.percentile(d, self.percentile))
        self.train_median = float(np.median(d))
        return self

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the training mean."""
        if self.mean is None or self.precision is None:
            raise DataError("shift: call fit() with training features first")
        diff = np.asarray(features, dtype=np.float64) - self.mean
        sq = np.einsum("nd,de,ne->n", diff, self.precision, diff)
        return np.sqrt(np.clip(sq, 0.0, None))

    def score(self, features: np.ndarray) -> ShiftResult:
        """Share of cases above threshold, median distance ratio and outlier indices."""
        d = self.distances(features)
        above = np.flatnonzero(d > self.threshold)
        ratio = float(np.median(d) / self.train_median) if self.train_median > 0 else float("nan")
        return ShiftResult(self.threshold, self.percentile, float(len(above) / max(len(d), 1)),
                           ratio, above, d)
