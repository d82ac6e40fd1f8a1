"""Temperature scaling of a trained run, fitted on its validation slices.

A run's softmax probabilities are often over-confident. Temperature scaling divides
the logits by one number ``T`` fitted by minimising the negative log-likelihood of
the validation slices (Guo et al. 2017); it never changes the argmax. Because
``softmax(z / T) == normalise(softmax(z) ** (1 / T))`` it is applied to
probabilities (:func:`apply_temperature`), so TTA views, patient scores and
predictions all take it the same way.

The fit is stored with the run as ``calibration.json``
``{temperature, ece_before, ece_after, nll_before, nll_after, fitted_on, n}``
(written atomically) at the end of training, or later by ``vitdesk evaluate`` when
a run lacks it. ECE (top-label, equal-width bins) lives here too, so the engine
and :mod:`vitdesk.analysis.metrics` (which re-exports it) share one definition.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

CALIBRATION_FILE = "calibration.json"
# log T is searched in [-3, 3]: T from 0.05 (sharpen a lot) to 20 (flatten a lot)
LOG_T_BOUNDS = (-3.0, 3.0)


def calibration_bins(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict:
    """Expected calibration error (top-label) and the reliability-diagram bins.

    Bins split confidence [0, 1] into ``n_bins`` equal intervals (right-closed; the
    first also holds 0). ECE = sum_b (n_b / N) |acc_b - conf_b|.
    """
    y = np.asarray(y, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        acc = float(correct[mask].mean()) if n else float("nan")
        cnf = float(conf[mask].mean()) if n else float("nan")
        if n:
            ece += n / len(y) * abs(acc - cnf)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "accuracy": acc, "confidence": cnf})
    return {"ece": float(ece), "bins": bins}


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, K) rescaled by ``temperature``: ``softmax(log(p) / T)``."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return p.astype(np.float32)
    if not (math.isfinite(temperature) and temperature > 0):
        raise DataError(f"calibration: temperature must be a positive number, got {temperature}")
    z = np.log(np.clip(p, 1e-12, 1.0)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def nll(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return float(-np.log(p[np.arange(len(p)), np.asarray(y, dtype=int)]).mean())


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``y`` under ``probs`` (bounded search)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=int)
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    if len(y) == 0:
        raise DataError("calibration: no labelled slices to fit a temperature on")
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[rows, y] - np.log(np.exp(z).sum(axis=1))).mean())

    res = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did to the slices it was fitted on."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    fitted_on: str  # "validation slices"
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def plausible(self) -> bool:
        """False when the fit ran into the search bounds (tiny or uninformative
        validation set): the temperature is then a limit, not an estimate."""
        lo, hi = (math.exp(b) for b in LOG_T_BOUNDS)
        return lo * 1.05 < self.temperature < hi / 1.05


def fit_calibration(y: np.ndarray, probs: np.ndarray,
                    fitted_on: str = "validation slices") -> Calibration:
    """Fit a temperature to labelled probabilities and measure ECE/NLL before and after."""
    t = fit_temperature(y, probs)
    after = apply_temperature(probs, t)
    return Calibration(t, calibration_bins(y, probs)["ece"], calibration_bins(y, after)["ece"],
                       nll(y, probs), nll(y, after), fitted_on, int(len(y)))


def read_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's stored calibration, or None (absent or unreadable: refit it)."""
    path = Path(run_dir) / CALIBRATION_FILE
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        cal = Calibration(float(d["temperature"]), float(d["ece_before"]),
                          float(d["ece_after"]), float(d.get("nll_before", "nan")),
                          float(d.get("nll_after", "nan")), str(d.get("fitted_on", "")),
                          int(d.get("n", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cal if math.isfinite(cal.temperature) and cal.temperature > 0 else None


def write_calibration(run_dir: str | Path, cal: Calibration) -> Path:
    """Write ``calibration.json`` atomically into the run folder."""
    from vitdesk.fileio import atomic_write_json

    d = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
         for k, v in cal.to_dict().items()}
    return atomic_write_json(Path(run_dir) / CALIBRATION_FILE, d)


def validation_probs(run: Any, batch_size: int = 32, cancel: CancelToken = NEVER,
                     listener: Listener | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, uncalibrated probabilities) of the run's validation slices in model class
    order, or None when the run has no labelled validation slice that can be read here."""
    import torch

    from vitdesk.data.dataset import SliceDataset
    from vitdesk.data.splits import load_split

    path = Path(run.run_dir) / "split.json"
    try:
        records = [r for r in load_split(path).get("val", []) if r.label in run.classes]
    except (OSError, ValueError, DataError):
        return None
    records = [r for r in records if Path(r.path).is_file()]
    if not records:
        return None
    ds = SliceDataset(records, run.classes, run.window, run.img_size, run.mean, run.std,
                      channels=3, augment=None, cache=False)
    model = run.model.eval()
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    out = []
    total = math.ceil(len(ds) / batch_size)
    with torch.no_grad():
        for b, i in enumerate(range(0, len(ds), batch_size), start=1):
            cancel.check()
            x = torch.stack([ds[j][0] for j in range(i, min(i + batch_size, len(ds)))])
            out.append(torch.softmax(model(x.to(dev)).float(), dim=-1).cpu())
            emit(listener, Progress("calibration", b, total))
    return np.asarray(ds.targets, dtype=int), torch.cat(out).numpy()


def calibrate_run(run: Any, *, device: str = "cpu", write: bool = True, batch_size: int = 32,
                  cancel: CancelToken = NEVER, listener: Listener | None = None
                  ) -> Calibration | None:
    """Fit temperature scaling of a loaded run (:class:`vitdesk.engine.run.LoadedRun`,
    best checkpoint) on its validation slices; store it as ``calibration.json`` when
    ``write``. (A loaded run, not a folder: this module must not import run.py, which
    calls it at the end of training.)

    Returns None when there is nothing to fit on (no validation split, or its files
    are not here); the run then stays uncalibrated (temperature 1).
    """
    got = validation_probs(run, batch_size, cancel, listener)
    if got is None:
        return None
    cal = fit_calibration(*got)
    if write:
        write_calibration(run.run_dir, cal)
    return cal
