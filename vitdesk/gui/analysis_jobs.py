"""Background work of the analysis tabs, as plain functions (no Qt).

Each ``*_job`` follows the worker calling convention ``fn(*args, cancel=, listener=)``
and returns plain results (numpy arrays, analysis dataclasses): the tabs run them in
a :class:`~vitdesk.gui.worker.Task` and only draw the results. Model use is
serialised with the shared run's lock (see :mod:`vitdesk.gui.run_state`).

Fairness, robustness and the report go through
:func:`vitdesk.analysis.evaluation.evaluate_run` (see :func:`evaluate_job`); the rest
is built from the analysis library (attention, TTA,
shift) and the data package's one preprocessing path
(:func:`~vitdesk.data.dataset.preprocess_slice`), so what the GUI shows is what the
command line computes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

BATCH = 32


def _lock(lock: threading.Lock | None):
    return lock if lock is not None else contextlib.nullcontext()


def _device(run: Any) -> torch.device:
    try:
        return next(run.model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def preprocess(run: Any, slices: Sequence[np.ndarray], kind: str = "dicom") -> torch.Tensor:
    """Slices (HU, or images for kind "image") -> normalised model batch (N, C, S, S)."""
    from vitdesk.data.dataset import preprocess_slice

    arrs = [preprocess_slice(s, kind, run.window, run.img_size, run.mean, run.std)
            for s in slices]
    return torch.from_numpy(np.stack(arrs))


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

    @property
    def head_mean(self) -> np.ndarray:
        return self.per_head.mean(axis=1)


def attention_job(run: Any, lock: threading.Lock | None, hu2d: np.ndarray, kind: str = "dicom",
                  key: tuple = (), cancel: CancelToken = NEVER,
                  listener: Listener | None = None) -> SliceAttention:
    """Probabilities, per-layer/head attention, rollouts and Grad-CAM of one slice.

    For a CNN run only the probabilities and Grad-CAM are computed (no attention).
    """
    from vitdesk.analysis import attention as att
    from vitdesk.data.dataset import Letterbox
    from vitdesk.engine.models import is_cnn

    hu2d = np.asarray(hu2d)
    h, w = hu2d.shape[:2]
    box = Letterbox(h, w, run.img_size)
    x = preprocess(run, [hu2d], kind).to(_device(run))
    vit = not is_cnn(run.model)
    cancel.check()
    with _lock(lock):
        with torch.no_grad():
            probs = torch.softmax(run.model(x).float(), -1)[0].cpu().numpy()
        cancel.check()
        if vit:
            attns = att.extract_attention(run.model, x)
            grid = att.token_grid(run.model, x)
            n_prefix = att.num_prefix_tokens(run.model)
            pooled = att.reads_patch_mean(run.model)
            cancel.check()
        cam = att.grad_cam(run.model, x, int(probs.argmax()))[0]
    cam = box.to_slice(cam).astype(np.float32)
    if not vit:
        emit(listener, Progress("attention", 1, 1))
        return SliceAttention(probs.astype(np.float32), tuple(run.classes),
                              np.zeros((0, 0, *cam.shape), np.float32), {}, cam, key,
                              has_attention=False)
    stacked = torch.stack(attns, dim=1)  # (1, L, heads, N, N)
    per_head_grid = att.cls_to_patch(stacked, n_prefix, grid, pooled)[0].numpy()  # (L, heads, r, c)
    per_head = np.stack([[box.to_slice(m) for m in layer] for layer in per_head_grid])
    rollout = {}
    for fusion in att.HEAD_FUSIONS:
        roll = att.rollout_matrix(attns, fusion)
        rollout[fusion] = box.to_slice(att.cls_to_patch(roll, n_prefix, grid, pooled)[0].numpy())
    emit(listener, Progress("attention", 1, 1))
    return SliceAttention(probs.astype(np.float32), tuple(run.classes),
                          per_head.astype(np.float32), rollout, cam, key)


# --------------------------------------------------------------------------- records


def split_records(run: Any, split: str = "test") -> list:
    """The records of one split of the run (its ``split.json``)."""
    from vitdesk.data.splits import load_split

    path = Path(run.run_dir) / "split.json"
    splits = load_split(path)
    if split not in splits or not splits[split]:
        raise DataError(f"{path}: the run has no '{split}' split; choose another data source")
    return list(splits[split])


def source_records(run: Any, src: str | None, split: str = "test",
                   cancel: CancelToken = NEVER, listener: Listener | None = None) -> list:
    """Labelled records of ``src`` (any dataset source), or of the run's ``split``.

    Records whose label is not one of the run's classes are dropped (with a notice).
    """
    if src:
        from vitdesk.data.sources import load_records

        recs = load_records(src, cancel, listener, min_classes=1)
    else:
        recs = split_records(run, split)
    known = [r for r in recs if r.label in run.classes]
    if len(known) < len(recs):
        emit(listener, Notice("inference", f"{len(recs) - len(known)} slices skipped: their "
                              f"label is not one of the run's classes "
                              f"({', '.join(run.classes)})"))
    if not known:
        raise DataError(f"{src or split}: no slice carries one of the run's classes "
                        f"({', '.join(run.classes)})")
    return known


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


def read_slices(records: Sequence[Any], cancel: CancelToken = NEVER,
                listener: Listener | None = None) -> list[np.ndarray]:
    """The raw slice of each record (HU or image)."""
    from vitdesk.data.dataset import read_record

    out = []
    for i, r in enumerate(records, start=1):
        cancel.check()
        out.append(read_record(r))
        if i % 16 == 0 or i == len(records):
            emit(listener, Progress("read", i, len(records)))
    return out


def _batches(run: Any, slices: Sequence[np.ndarray], kinds: Sequence[str]):
    for i in range(0, len(slices), BATCH):
        groups = [preprocess_slice_one(run, s, k) for s, k in
                  zip(slices[i : i + BATCH], kinds[i : i + BATCH], strict=True)]
        yield torch.from_numpy(np.stack(groups))


def preprocess_slice_one(run: Any, s: np.ndarray, kind: str) -> np.ndarray:
    from vitdesk.data.dataset import preprocess_slice

    return preprocess_slice(s, kind, run.window, run.img_size, run.mean, run.std)


# --------------------------------------------------------------------------- inference


@dataclass
class Inference:
    """Per-slice predictions: ``probs`` (N, K), ``std`` (N, K) across TTA views,
    ``uncertainty`` (N,) std of the predicted class, optional ``labels`` (N,) and a
    display name per case."""

    probs: np.ndarray
    std: np.ndarray
    uncertainty: np.ndarray
    classes: tuple[str, ...]
    names: list[str]
    labels: np.ndarray | None = None
    views: tuple[str, ...] = ("identity",)
    source: str = "series"  # "series" (index = axial slice) or "records"

    @property
    def accuracy(self) -> float | None:
        if self.labels is None:
            return None
        m = self.labels >= 0
        return float((self.probs[m].argmax(1) == self.labels[m]).mean()) if m.any() else None


def inference_job(run: Any, lock: threading.Lock | None, slices: Sequence[np.ndarray] | None,
                  tta: Any = None, src: str | None = None, split: str | None = None,
                  cancel: CancelToken = NEVER, listener: Listener | None = None) -> Inference:
    """Predict every slice of ``slices`` (the open series, axial HU) or of a data source.

    ``tta`` is a :class:`~vitdesk.analysis.tta.TTAConfig` or None (plain softmax).
    With ``slices`` None, the records of ``src`` (or the run's ``split``) are used.
    """
    from vitdesk.analysis.tta import predict_proba, tta_predict

    if slices is not None:
        data = list(slices)
        kinds = ["dicom"] * len(data)
        names = [f"slice {i + 1}" for i in range(len(data))]
        labels = None
        source = "series"
    else:
        recs = source_records(run, src, split or "test", cancel, listener)
        data = read_slices(recs, cancel, listener)
        kinds = [r.kind for r in recs]
        names = case_names(recs)
        labels = np.array([run.classes.index(r.label) for r in recs])
        source = "records"
    if not data:
        raise DataError("inference: there are no slices to predict")
    total = (len(data) + BATCH - 1) // BATCH
    dev = _device(run)
    with _lock(lock):
        if tta is None:
            probs, _ = predict_proba(run.model, _batches(run, data, kinds), device=dev,
                                     total=total, cancel=cancel, listener=listener)
            std = np.zeros_like(probs)
            unc = np.zeros(len(probs), np.float32)
            views: tuple[str, ...] = ("identity",)
        else:
            res = tta_predict(run.model, _batches(run, data, kinds), tta, device=dev,
                              total=total, cancel=cancel, listener=listener)
            probs, std, unc, views = res.probs, res.std, res.uncertainty, res.views
    return Inference(probs, std, unc, tuple(run.classes), names, labels, tuple(views), source)


# --------------------------------------------------------------------------- shift


@dataclass
class ShiftOutcome:
    """Mahalanobis shift of the checked slices against the run's training split."""

    result: Any  # vitdesk.analysis.shift.ShiftResult
    n_train: int
    names: list[str]
    source: str  # "series" (index = axial slice) or "records"


def shift_job(run: Any, lock: threading.Lock | None, slices: Sequence[np.ndarray] | None,
              src: str | None = None, percentile: float = 95.0, cancel: CancelToken = NEVER,
              listener: Listener | None = None) -> ShiftOutcome:
    """Fit a Mahalanobis detector on the run's training slices; score the open series
    (``slices``, axial HU) or the records of ``src``."""
    from vitdesk.analysis.shift import MahalanobisDetector, extract_features

    train = split_records(run, "train")
    emit(listener, Notice("shift", f"Reading {len(train)} training slices"))
    train_slices = read_slices(train, cancel, listener)
    if slices is not None:
        data, kinds = list(slices), ["dicom"] * len(slices)
        names, source = [f"slice {i + 1}" for i in range(len(data))], "series"
    else:
        recs = source_records(run, src, "test", cancel, listener)
        data, kinds = read_slices(recs, cancel, listener), [r.kind for r in recs]
        names = case_names(recs)
        source = "records"
    dev = _device(run)
    with _lock(lock):
        f_train = extract_features(run.model, _batches(run, train_slices,
                                                       [r.kind for r in train]),
                                   device=dev, cancel=cancel, listener=listener)
        f_new = extract_features(run.model, _batches(run, data, kinds), device=dev,
                                 cancel=cancel, listener=listener)
    det = MahalanobisDetector(percentile=percentile, shrinkage=True).fit(f_train)
    return ShiftOutcome(det.score(f_new), len(train), names, source)


# --------------------------------------------------------------------------- evaluation


def evaluate_job(run: Any, lock: threading.Lock | None, src: str | None = None,
                 split: str = "test", cancel: CancelToken = NEVER,
                 listener: Listener | None = None, **options: Any) -> Any:
    """:func:`~vitdesk.analysis.evaluation.evaluate_run` on the shared run, under its lock.

    ``options`` are evaluate_run's keyword options (robustness, shift, fairness, ...).
    """
    from vitdesk.analysis.evaluation import evaluate_run

    with _lock(lock):
        return evaluate_run(run, src or None, split=split, cancel=cancel, listener=listener,
                            **options)


def report_job(run: Any, lock: threading.Lock | None, out_dir: str, src: str | None = None,
               split: str = "test", forbidden: Sequence[str] = (), cancel: CancelToken = NEVER,
               listener: Listener | None = None, baseline: str | None = None,
               **options: Any) -> Any:
    """Evaluate the run and write ``report.html`` / ``report.pdf`` into ``out_dir``.

    ``baseline``: a run folder scored on the same slices for the transfer section.
    """
    from vitdesk.analysis.baseline import evaluate_baseline
    from vitdesk.report.from_run import write_run_report

    ev = evaluate_job(run, lock, src, split, cancel=cancel, listener=listener, **options)
    transfer = None
    if baseline:
        cancel.check()
        emit(listener, Notice("report", f"Scoring the baseline {Path(baseline).name}"))
        transfer = evaluate_baseline(
            ev, run.run_dir, baseline, src or None, split=split, tta=options.get("tta"),
            n_boot=options.get("n_boot", 1000), device=_device(run).type, cancel=cancel,
            listener=listener)
    cancel.check()
    emit(listener, Notice("report", "Writing report.html and report.pdf"))
    return write_run_report(run.run_dir, ev, out_dir, forbidden=forbidden, transfer=transfer)


# --------------------------------------------------------------------------- fairness

GAP_NAMES = ("demographic_parity_difference", "demographic_parity_ratio",
             "equalized_odds_difference", "accuracy_gap")


@dataclass
class FairnessOutcome:
    """evaluate_run's fairness reports plus bootstrap intervals of the gap figures.

    ``gap_ci[i][name]`` is the (lo, hi) 95% interval of disparity ``name`` of
    ``evaluation.fairness[i]`` (NaN when it cannot be estimated).
    """

    evaluation: Any
    gap_ci: list[dict[str, tuple[float, float]]]


def disparity_intervals(y: np.ndarray, probs: np.ndarray, groups: Sequence[object],
                        patients: np.ndarray, positive: int, n_boot: int = 200, seed: int = 0,
                        alpha: float = 0.05, cancel: CancelToken = NEVER
                        ) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the disparity figures, resampling whole patients.

    Each replicate draws patients with replacement and recomputes
    :func:`~vitdesk.analysis.fairness.group_fairness` (point values only), so the
    interval reflects how much a gap would move with another sample of patients.
    """
    from vitdesk.analysis.fairness import group_fairness

    groups = np.asarray([str(g) for g in groups], dtype=object)
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
        if len(v) >= max(10, n_boot // 10):
            lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
            out[k] = (float(lo), float(hi))
        else:
            out[k] = (float("nan"), float("nan"))
    return out


def fairness_job(run: Any, lock: threading.Lock | None, src: str | None = None,
                 split: str = "test", n_boot: int = 300, cancel: CancelToken = NEVER,
                 listener: Listener | None = None) -> FairnessOutcome:
    """evaluate_run (fairness only) and patient-bootstrap intervals of the gaps."""
    from vitdesk.analysis.evaluation import select_records
    from vitdesk.analysis.fairness import age_groups, sex_groups

    ev = evaluate_job(run, lock, src, split, cancel=cancel, listener=listener,
                      robustness=False, shift=False, attention_samples=0, fairness=True,
                      n_boot=n_boot)
    # evaluate_run scores select_records' records in order (no max_cases): same groups
    records = select_records(run, src or None, split)[0]
    if len(records) != ev.n_slices:
        return FairnessOutcome(ev, [{} for _ in ev.fairness])
    attrs = {"sex": sex_groups([r.sex for r in records]),
             "age": age_groups([r.age for r in records])}
    cis = []
    for i, rep in enumerate(ev.fairness, start=1):
        emit(listener, Progress("gap intervals", i, len(ev.fairness)))
        groups = attrs.get(rep.attribute)
        if groups is None or rep.positive not in ev.classes:
            cis.append({})
            continue
        cis.append(disparity_intervals(ev.labels, ev.probs, groups, ev.patients,
                                       ev.classes.index(rep.positive), n_boot=min(n_boot, 200),
                                       cancel=cancel))
    return FairnessOutcome(ev, cis)
