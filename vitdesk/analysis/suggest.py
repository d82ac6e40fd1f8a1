"""Active learning: which unlabelled slices (or series) to label next.

A run scores every candidate slice of a source with test-time augmentation; the
most uncertain ones (predictive entropy of the TTA-averaged probabilities, or the
margin between the two most likely classes) form a short list, and k-center greedy
on the model's pooled (pre-logit) features picks from it slices that are far apart,
so one batch of suggestions does not spend the expert's time on ten neighbouring
slices of one lesion (Sener and Savarese 2018, "core-set" selection, applied after
an uncertainty filter).

Left out: slices already labelled in a workspace (other sources are a pool: their
labels, if any, are not looked at), every slice of the run's test patients (labelling
them would let the next run train on its own test patients), and the slices the
run trained or validated on. Everything is deterministic by ``seed``. Results carry
safe keys, series descriptions and slice indices, never paths or identifiers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.errors import ConfigError, DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, emit

MEASURES = ("entropy", "margin")
UNITS = ("slice", "series")
POOL_FACTOR = 4  # the diversity step chooses among the n * POOL_FACTOR most uncertain
SERIES_TOP = 3  # a series is as uncertain as the mean of its SERIES_TOP most uncertain slices
_TASK = "suggest"


# --------------------------------------------------------------------------- pure maths


def k_center_greedy(features: np.ndarray, k: int, first: int = 0,
                    centres: np.ndarray | None = None) -> list[int]:
    """Indices of ``k`` rows of ``features`` chosen by k-center greedy (Gonzalez 1985).

    Each pick is the row farthest (Euclidean) from everything picked so far and from
    ``centres`` (rows already covered, e.g. labelled data); ties go to the lowest
    index. Without ``centres`` the first pick is ``first``. The covering radius is
    at most twice the optimal one.
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    k = min(int(k), n)
    if k <= 0:
        return []
    if centres is not None and len(centres):
        d = np.full(n, np.inf)
        for c in np.asarray(centres, dtype=np.float64):  # one at a time: O(n) memory
            d = np.minimum(d, np.linalg.norm(x - c, axis=1))
        picked: list[int] = []
    else:
        if not 0 <= first < n:
            raise ValueError(f"first={first} is not a row of {n}")
        picked = [int(first)]
        d = np.linalg.norm(x - x[first], axis=1)
    while len(picked) < k:
        d[picked] = -1.0  # never pick a row twice (duplicates have distance 0, not -1)
        i = int(np.argmax(d))
        picked.append(i)
        d = np.minimum(d, np.linalg.norm(x - x[i], axis=1))
    return picked


def uncertainty(probs: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """Per-row uncertainty of (N, K) probabilities, higher = less sure.

    ``entropy``: predictive entropy in nats; ``margin``: 1 - (p_top1 - p_top2).
    """
    if measure not in MEASURES:
        raise ConfigError(f"uncertainty measure '{measure}' is not one of "
                          f"{', '.join(MEASURES)}")
    p = np.asarray(probs, dtype=np.float64)
    if measure == "entropy":
        q = np.clip(p, 1e-12, 1.0)
        return -(q * np.log(q)).sum(axis=1)
    top = np.sort(p, axis=1)[:, ::-1]
    second = top[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    return 1.0 - (top[:, 0] - second)


def _unit(f: np.ndarray) -> np.ndarray:
    # cosine geometry: feature norms grow with contrast, not with content
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(norm, 1e-12)


def rank_candidates(scores: np.ndarray, features: np.ndarray, n: int,
                    pool_factor: int = POOL_FACTOR) -> tuple[list[int], np.ndarray]:
    """Order for labelling: the ``n * pool_factor`` most uncertain candidates, then k-center
    greedy on their (L2-normalised) features from the most uncertain one.

    Returns the chosen indices (into ``scores``) in pick order and, per pick, its
    distance to the nearest earlier pick (0 for the first).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0 or n <= 0:
        return [], np.zeros(0)
    m = min(len(scores), max(int(n), int(n) * int(pool_factor)))
    # stable sort on -score: equal scores keep their (seeded) order
    short = np.argsort(-scores, kind="stable")[:m]
    f = _unit(np.asarray(features, dtype=np.float64)[short])
    order = k_center_greedy(f, n, first=0)
    dist = np.zeros(len(order))
    for j in range(1, len(order)):
        dist[j] = np.min(np.linalg.norm(f[order[:j]] - f[order[j]], axis=1))
    return [int(short[i]) for i in order], dist


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Suggestion:
    """One slice (or series) to label, as a workspace user finds it: the series
    description, its keyed series key and the slice index in the viewer's order."""

    rank: int
    series: str  # safe key of the series (the workspace's series key)
    description: str  # series description ("" when the file has none)
    slice_index: int  # the most uncertain slice (series mode: of that series)
    uncertainty: float
    predicted: str
    probability: float  # of the predicted class, TTA-averaged
    why: str
    slices: tuple[int, ...] = ()  # series mode: its most uncertain slices

    def row(self) -> list[str]:
        slices = "|".join(str(s) for s in self.slices) if self.slices else str(self.slice_index)
        return [str(self.rank), self.series, self.description, slices,
                f"{self.uncertainty:.4f}", self.predicted, f"{self.probability:.4f}", self.why]


CSV_HEADER = ["rank", "series", "description", "slice", "uncertainty", "predicted",
              "probability", "why"]


@dataclass
class SuggestResult:
    suggestions: list[Suggestion]
    unit: str
    measure: str
    n_candidates: int  # slices scored
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> slices
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The suggestions as an aligned text table."""
        head = ["rank", "series", "description", "slice", self.measure, "predicted", "why"]
        rows = [[str(s.rank), s.series, s.description or "-",
                 "|".join(map(str, s.slices)) if s.slices else str(s.slice_index),
                 f"{s.uncertainty:.3f}", f"{s.predicted} {s.probability:.2f}", s.why]
                for s in self.suggestions]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
        lines = []
        for r in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True))
                         + "  " + r[-1])
        return "\n".join(lines)


# --------------------------------------------------------------------------- the pool


def _is_workspace(src: str | Path) -> bool:
    from vitdesk.data.source_refs import resolve_source
    from vitdesk.data.sources import detect_kind

    return detect_kind(resolve_source(str(src))) == "workspace"


def _run_splits(run_dir: Path, data_src: str | Path, notes: list[str]
                ) -> tuple[set[str], set[tuple[str, int]]]:
    """Patient keys of the run's test split and the (path, frame) of every slice in
    its splits (empty when the run's data cannot be found from ``data_src``)."""
    from vitdesk.data.splits import load_split

    path = run_dir / "split.json"
    if not path.is_file():
        notes.append("the run has no split.json: no test patients were left out")
        return set(), set()
    try:
        doc = json.loads(path.read_text())
        test_patients = {str(d.get("patient", "")) for d in doc["splits"].get("test", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: not a vitdesk split file: re-create the run") from None
    used: set[tuple[str, int]] = set()
    try:
        for recs in load_split(path, data_src=data_src).values():
            used.update((os.path.abspath(r.path), int(r.frame)) for r in recs)
    except DataError:
        pass  # the run's data is elsewhere: none of its slices can be in this pool
    test_patients.discard("")
    return test_patients, used


def candidate_records(run_dir: str | Path, data_src: str | Path,
                      cancel: CancelToken = NEVER, listener: Listener | None = None
                      ) -> tuple[list, list[int], dict[str, int], list[str]]:
    """Every slice of ``data_src`` with its index in its series, minus what
    :mod:`suggest` leaves out.

    Returns (candidate records, their slice indices, slices left out by reason, notes).
    """
    from vitdesk.data.sources import load_records

    notes: list[str] = []
    records = load_records(data_src, cancel, listener, require_labels=False, min_classes=1)
    index: list[int] = []
    seen: dict[str, int] = defaultdict(int)
    for r in records:  # records come in volume order per series: the viewer's slice index
        index.append(seen[r.series])
        seen[r.series] += 1
    workspace = _is_workspace(data_src)
    test_patients, used = _run_splits(Path(run_dir), data_src, notes)
    left = {"labelled": 0, "test patients": 0, "trained on": 0}
    keep_r, keep_i = [], []
    for r, i in zip(records, index, strict=True):
        if workspace and r.label is not None:
            left["labelled"] += 1
        elif r.patient in test_patients:
            left["test patients"] += 1
        elif (os.path.abspath(r.path), int(r.frame)) in used:
            left["trained on"] += 1
        else:
            keep_r.append(dataclasses.replace(r, label=None))
            keep_i.append(i)
    return keep_r, keep_i, left, notes


def _descriptions(records: list, workspace_src: str | Path | None) -> dict[str, str]:
    """Series key -> series description, for the given records' series."""
    wanted = {r.series: r for r in records}
    if workspace_src is not None:
        from vitdesk.data.source_refs import resolve_source
        from vitdesk.data.workspace import Workspace

        p = Path(resolve_source(str(workspace_src)))
        ws = Workspace.open(p.parent if p.is_file() else p, create=False)
        try:
            return {s.key: str(s.description or "") for s in ws.series() if s.key in wanted}
        finally:
            ws.close()
    import pydicom

    out = {}
    for key, r in wanted.items():
        if r.kind != "dicom":
            out[key] = "(image file)"
            continue
        try:
            ds = pydicom.dcmread(r.path, stop_before_pixels=True,
                                 specific_tags=["SeriesDescription"])
            out[key] = str(ds.get("SeriesDescription", "") or "")
        except Exception:  # noqa: BLE001 - a description is a courtesy, never a failure
            out[key] = ""
    return out


# --------------------------------------------------------------------------- the run


def suggest(
    run: Any,
    data_src: str | Path,
    n: int = 20,
    *,
    unit: str = "slice",
    measure: str = "entropy",
    tta: Any = "default",
    seed: int = 0,
    max_pool: int | None = 5000,
    pool_factor: int = POOL_FACTOR,
    batch_size: int = 32,
    device: str = "auto",
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> SuggestResult:
    """Rank slices (``unit="slice"``) or series of ``data_src`` for labelling by ``run``.

    Args:
        run: a run folder or a loaded run.
        data_src: a workspace (its unlabelled slices) or any source (all its slices).
        n: how many suggestions.
        unit: ``slice`` or ``series`` (a series scored by its most uncertain slices).
        measure: ``entropy`` or ``margin`` of the TTA-averaged probabilities.
        tta: a :class:`~vitdesk.analysis.tta.TTAConfig`, ``"default"`` or None (no TTA).
        seed: orders the pool before ties are broken and draws ``max_pool`` slices
            when the pool is larger.
        max_pool: score at most this many slices (None: all).
        pool_factor: the diversity step chooses among ``n * pool_factor`` most
            uncertain slices (series).
    """
    from vitdesk.analysis.run_model import (
        dataset_batches,
        device_of,
        load_run_like,
        records_dataset,
    )
    from vitdesk.analysis.shift import extract_features
    from vitdesk.analysis.tta import TTAConfig, predict_proba, tta_predict

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if unit not in UNITS:
        raise ConfigError(f"suggest unit '{unit}' is not one of {', '.join(UNITS)}")
    uncertainty(np.zeros((1, 2)), measure)  # validates the measure before any work
    if tta == "default":
        tta = TTAConfig()
    lr = load_run_like(run, device)
    records, index, left, notes = candidate_records(lr.run_dir, data_src, cancel, listener)
    for note in notes:
        emit(listener, Notice(_TASK, note))
    if not records:
        raise DataError(f"{data_src}: no unlabelled slices left to suggest "
                        f"(left out: {_left_text(left)})")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    if max_pool is not None and len(order) > max_pool:
        notes.append(f"{max_pool} of {len(order)} candidate slices were scored (seeded draw)")
        order = np.sort(order[:max_pool])
    records = [records[int(i)] for i in order]
    index = [index[int(i)] for i in order]

    model = lr.model.eval()
    dev = device_of(model)
    ds = records_dataset(lr, records)
    idx = np.arange(len(ds))
    total = math.ceil(len(idx) / batch_size)
    if tta is not None:
        res = tta_predict(model, dataset_batches(ds, idx, batch_size, False), tta, device=dev,
                          total=total, cancel=cancel, listener=listener)
        probs = res.probs
    else:
        probs, _ = predict_proba(model, dataset_batches(ds, idx, batch_size, False), device=dev,
                                 total=total, cancel=cancel, listener=listener)
    # diversity in what the model sees (pooled features), not in pixel statistics
    feats = extract_features(model, dataset_batches(ds, idx, batch_size, False), device=dev,
                             total=total, cancel=cancel, listener=listener, low_level=False)
    scores = uncertainty(probs, measure)
    classes = list(lr.classes)

    if unit == "slice":
        units = [[i] for i in range(len(records))]
    else:
        by_series: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            by_series[r.series].append(i)
        units = [sorted(v, key=lambda i: (-scores[i], index[i]))[:SERIES_TOP]
                 for _, v in sorted(by_series.items())]
    u_score = np.asarray([scores[u].mean() for u in units])
    u_feat = np.stack([feats[u].mean(axis=0) for u in units])
    chosen, dist = rank_candidates(u_score, u_feat, n, pool_factor)
    median = float(np.median(dist[1:])) if len(dist) > 1 else 0.0
    descriptions = _descriptions([records[units[c][0]] for c in chosen],
                                 data_src if _is_workspace(data_src) else None)
    rank_of = np.empty(len(u_score), dtype=int)
    rank_of[np.argsort(-u_score, kind="stable")] = np.arange(len(u_score))
    out = []
    for k, (c, d) in enumerate(zip(chosen, dist, strict=True)):
        top = units[c][0]
        r = records[top]
        p = probs[top]
        cls = int(np.argmax(p))
        why = f"{measure} rank {rank_of[c] + 1} of {len(u_score)}"
        if len(p) > 1:
            second = int(np.argsort(p)[-2])
            why += f"; {classes[cls]} {p[cls]:.2f} vs {classes[second]} {p[second]:.2f}"
        why += ("; most uncertain" if k == 0 else
                f"; {d / median:.1f}x the median distance to earlier picks" if median > 0
                else "; as far from earlier picks as any")
        out.append(Suggestion(
            rank=k + 1, series=r.series, description=descriptions.get(r.series, ""),
            slice_index=index[top], uncertainty=float(u_score[c]), predicted=classes[cls],
            probability=float(p[cls]), why=why,
            slices=tuple(index[i] for i in units[c]) if unit == "series" else ()))
    return SuggestResult(out, unit, measure, len(records), left, notes)


def _left_text(left: dict[str, int]) -> str:
    parts = [f"{v} {k}" for k, v in left.items() if v]
    return ", ".join(parts) or "none"


def left_out_text(result: SuggestResult) -> str:
    """One line: how many slices were scored and what was left out, and why."""
    return (f"{result.n_candidates} candidate slices scored; left out: "
            f"{_left_text(result.left_out)}")
