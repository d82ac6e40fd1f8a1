"""K-fold cross-validation: one run folder per fold, evaluated and summarised.

``vitdesk train --folds K --out DIR`` calls :func:`cross_validate` with the plan resolved
once. The patients are dealt into K stratified folds
(:func:`vitdesk.data.splits.kfold_patients`); fold i is an ordinary run folder
``DIR/fold-i`` whose ``config.toml`` says ``data.fold = "i/K"`` (test = fold i's
patients, validation carved from the rest), so each fold can be re-run or resumed
from its own folder. Each fold is scored on its test patients by
:func:`vitdesk.analysis.evaluation.evaluate_run`, the code behind ``vitdesk evaluate``
(``DIR/fold-i/eval/metrics.json``), and ``DIR/cv.json`` holds the per-fold numbers,
their mean, SD and t interval, and the pooled out-of-fold predictions' accuracy/AUC.

A cancelled run keeps its finished folds; ``--resume`` starts at the first unfinished
one (a half-trained fold continues from its ``checkpoints/last``).

Lives in ``analysis`` (not ``engine``) because it evaluates: the engine never imports
the analysis layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.config import RunConfig, load_config, save_config
from vitdesk.errors import CheckpointError, ConfigError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

_TASK = "cross-validate"
CV_FORMAT = "vitdesk-cv-1"
# (level, metric) pairs summarised over folds; accuracy is at each level's own cut
CV_METRICS = (("slice", "accuracy"), ("slice", "auc"), ("patient", "accuracy"),
              ("patient", "auc"))
OOF_FILE = "oof.npz"  # a fold's out-of-fold predictions (no identifiers: patient indices)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class FoldSpread:
    """Mean over folds with its SD and a t-based interval of the mean."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int  # folds where the metric was defined (AUC is not with one class)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "lo": self.lo, "hi": self.hi, "n": self.n}


def mean_interval(values: Sequence[float], confidence: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> FoldSpread:
    """Mean, sample SD (ddof 1) and the t interval of the mean of the finite ``values``.

    Folds are few (5 or 10), so the normal 1.96 would be too narrow: the interval uses
    Student's t with n - 1 degrees of freedom, clipped to ``bounds`` (an accuracy or AUC
    cannot pass 1). Fewer than two values give NaN spread.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = int(v.size)
    if n == 0:
        return FoldSpread(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if n < 2:
        return FoldSpread(mean, math.nan, math.nan, math.nan, n)
    from scipy import stats

    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return FoldSpread(mean, sd, lo, hi, n)


def fold_numbers(metrics_doc: dict) -> dict[str, Any]:
    """The summarised numbers of one fold's evaluation ``metrics.json``: each
    ``"{level}_{metric}"`` value, each level's cut, and the slice/patient counts."""
    m = metrics_doc.get("metrics") or {}
    out: dict[str, Any] = {"n_slices": metrics_doc.get("n_slices"),
                           "n_patients": metrics_doc.get("n_patients"), "cuts": {}}
    for level, key in CV_METRICS:
        lm = m.get(level) or {}
        e = (lm.get("metrics") or {}).get(key) or {}
        out[f"{level}_{key}"] = e.get("value")
        out["cuts"][level] = lm.get("cut", "")
    return out


def pooled_metrics(folds: Sequence[dict], classes: Sequence[str], *, patient_score: str,
                   topk: float, n_boot: int, seed: int) -> dict:
    """Accuracy and AUC of every fold's out-of-fold predictions taken together.

    Accuracy counts each prediction at the cut its own fold decided it with (the
    summed confusion matrices of the folds' evaluations); AUC ranks the pooled
    probabilities (bootstrap CI over patients).

    Args:
        folds: per fold ``{"labels", "probs", "patients", "confusion": {level: matrix}}``
            (labels/probs in analysis order, patients as fold-local indices).
    """
    from vitdesk.analysis import metrics as M
    from vitdesk.analysis.evaluation import patient_rule

    labels = np.concatenate([f["labels"] for f in folds]).astype(int)
    probs = np.concatenate([f["probs"] for f in folds]).astype(float)
    # folds hold disjoint patients: a fold-local index plus the fold is a unique patient
    patients = np.concatenate([[f"{i}:{p}" for p in f["patients"]]
                               for i, f in enumerate(folds)])
    rule = patient_rule(labels, patients)
    ev = M.evaluate(labels, probs, list(classes), patients, rule=rule,
                    patient_score=patient_score, topk=topk, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"n_slices": int(len(labels)),
                           "n_patients": int(len(set(patients.tolist()))), "patient_rule": rule}
    for level in ("slice", "patient"):
        cms = [np.asarray(f["confusion"][level]) for f in folds
               if f["confusion"].get(level) is not None]
        cm = sum(cms) if cms else None
        lm = getattr(ev, level)
        auc = lm.estimates.get("auc") if lm is not None else None
        out[level] = {
            "accuracy": float(np.trace(cm) / cm.sum()) if cm is not None and cm.sum() else None,
            "accuracy_cut": "each fold's own cut (" + "; ".join(
                sorted({f["cuts"][level] for f in folds if f["cuts"].get(level)})) + ")",
            "confusion": cm.tolist() if cm is not None else None,
            "auc": auc.to_dict() if auc is not None else None,
        }
    return out


# --------------------------------------------------------------------------- result


@dataclass
class CVResult:
    """What ``cv.json`` holds: the folds, their spread and the pooled predictions."""

    k: int
    seed: int
    classes: list[str]
    folds: list[dict] = field(default_factory=list)
    summary: dict[str, FoldSpread] = field(default_factory=dict)
    pooled: dict | None = None
    finished: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from vitdesk.analysis.evaluation import json_safe

        return json_safe({
            "format": CV_FORMAT, "k": self.k, "seed": self.seed, "classes": self.classes,
            "finished": self.finished, "folds": self.folds,
            "summary": {k: v.to_dict() for k, v in self.summary.items()},
            "interval": "95% t interval of the mean over folds (df = folds - 1), clipped "
                        "to [0, 1]",
            "pooled": self.pooled, "notes": self.notes,
        })

    def table(self) -> str:
        """Per-fold numbers, mean +- SD, the 95% interval and the pooled line (console)."""
        heads = ["fold", "patients", "slices"] + [
            f"{lv} {key}" + (f" [{self.cut_words(lv)}]" if key == "accuracy" else "")
            for lv, key in CV_METRICS]
        rows = [[str(f["fold"]), str(f["n_patients"]), str(f["n_slices"])]
                + [_f(f.get(f"{lv}_{key}")) for lv, key in CV_METRICS] for f in self.folds]
        if self.summary:
            s = [self.summary[f"{lv}_{key}"] for lv, key in CV_METRICS]
            rows.append(["mean +- SD", "", ""] + [f"{_f(x.mean)} +- {_f(x.sd)}" for x in s])
            rows.append(["95% CI (t)", "", ""] + [f"{_f(x.lo)}-{_f(x.hi)}" for x in s])
        if self.pooled:
            p = self.pooled
            rows.append(["pooled", str(p["n_patients"]), str(p["n_slices"])] + [
                _f(p[lv]["accuracy"]) if key == "accuracy" else
                _f((p[lv]["auc"] or {}).get("value")) for lv, key in CV_METRICS])
        widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in [heads, *rows])


    def cut_words(self, level: str) -> str:
        """The decision cut of ``level``'s accuracy: the one cut every fold used, or
        whose cut each fold chose (a validation cut differs from fold to fold)."""
        cuts = {f["cuts"].get(level, "") for f in self.folds}
        if len(cuts) == 1:
            return cuts.pop().replace(", validation Youden's J", " val. Youden")
        if all("Youden" in c or c == "p >= 0.5" for c in cuts):
            return "each fold's val. Youden"
        return "each fold's cut"


def _f(v: Any) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "-"
    return f"{x:.3f}" if math.isfinite(x) else "-"


# --------------------------------------------------------------------------- the folds


def fold_dir(parent: str | Path, i: int) -> Path:
    """The run folder of fold ``i`` (1-based)."""
    return Path(parent) / f"fold-{i}"


def fold_config(cfg: RunConfig, i: int, k: int) -> RunConfig:
    """The run config of fold ``i`` of ``k``: the plan, with its fold and its folder."""
    out = RunConfig.from_dict(cfg.to_dict())
    out.data.fold = f"{i}/{k}"
    out.out = str(fold_dir(Path(cfg.out).expanduser(), i))
    return out


def _fold_state(run: Path) -> str:
    """``evaluated``, ``trained``, ``partial`` (a checkpoint to resume) or ``new``."""
    from vitdesk.engine import checkpoint as ckpt

    try:
        finished = json.loads((run / "metrics.json").read_text()).get("finished") is True
    except (OSError, ValueError, AttributeError):
        finished = False
    has_best = ckpt.checkpoint_exists(run / "checkpoints", "best") or \
        ckpt.checkpoint_exists(run / "checkpoints", "last")
    if finished and has_best:
        if (run / "eval" / "metrics.json").is_file() and (run / "eval" / OOF_FILE).is_file():
            return "evaluated"
        return "trained"
    if ckpt.checkpoint_exists(run / "checkpoints", "last"):
        return "partial"
    return "new"


def _check_parent(parent: Path, k: int, resume: bool) -> None:
    """A new cross-validation needs an empty folder; a resumed one its own ``cv.json``."""
    if resume:
        try:
            doc = json.loads((parent / "cv.json").read_text())
        except (OSError, ValueError):
            raise CheckpointError(f"cannot resume: {parent} holds no cv.json of a "
                                  "cross-validation; start without --resume") from None
        if int(doc.get("k", 0)) != k:
            raise ConfigError(f"cannot resume {parent}: it was started with --folds "
                              f"{doc.get('k')}, not {k}: repeat --folds {doc.get('k')}")
        return
    if parent.exists() and (not parent.is_dir() or any(parent.iterdir())):
        raise ConfigError(f"output folder {parent} already exists and is not empty: choose a "
                          "new --out, or add --resume to continue its folds")


def check_folds(cfg: RunConfig, k: int, cancel: CancelToken = NEVER,
                listeners: Sequence[Listener] = ()) -> list[list[str]]:
    """Validate a cross-validation before anything is written: the config with a fold,
    and the data's patients against ``k``. Returns the folds' patient keys."""
    from vitdesk.data.sources import load_records
    from vitdesk.data.splits import kfold_patients, patient_strata

    if cfg.data.val_source:
        raise ConfigError("--folds carves validation from each fold's training patients: "
                          "leave out --val")
    if k < 2:
        raise ConfigError(f"--folds {k}: use 2 or more folds (5 is usual)")
    fold_config(cfg, 1, k).resolved().validate()
    records = load_records(cfg.data.source, cancel, list(listeners),
                           patient_id=cfg.data.patient_id)
    folds = kfold_patients(records, k, cfg.seed)
    strata = patient_strata(records)
    for cls in sorted(set(strata.values())):
        n = sum(1 for s in strata.values() if s == cls)
        if n < k:
            emit(list(listeners), Notice(_TASK, (
                f"class {cls} has {n} patient(s) for {k} folds: {k - n} fold(s) test none of "
                "it (their AUC is undefined); use fewer folds or add patients")))
    return folds


def fold_eval_options(device: str = "auto", seed: int = 0) -> Any:
    """What each fold's evaluation computes: the metrics with their cuts, calibration and
    conformal sets; robustness, shift, fairness and attention are left to ``vitdesk
    evaluate DIR/fold-i`` (they cost more than the metrics on a small test fold)."""
    from vitdesk.analysis.options import EvalOptions

    return EvalOptions(robustness=False, shift=False, fairness=False, gap_intervals=False,
                       attention_samples=0, device=device, seed=seed)


def cross_validate(
    cfg: RunConfig,
    k: int,
    cancel: CancelToken = NEVER,
    listeners: Sequence[Listener] = (),
    *,
    resume: bool = False,
    estimate: dict[str, float] | None = None,
    options: Any = None,
) -> CVResult:
    """Train and evaluate ``k`` folds of the planned ``cfg`` under ``cfg.out``.

    Args:
        cfg: the resolved plan (:func:`vitdesk.engine.plan.plan_run`); every fold trains
            it with its own ``data.fold`` and folder.
        k: folds (2 or more; at most the number of patients).
        cancel: checked in every fold's training and evaluation.
        listeners: training and evaluation events, plus ``Progress("cross-validate")``.
        resume: continue ``cfg.out``: finished folds are kept, a half-trained one resumes.
        estimate: the planner's estimate of one run (kept in each fold's ``env.json``).
        options: :class:`~vitdesk.analysis.options.EvalOptions` of the fold evaluations
            (default: metrics, calibration and conformal sets; no robustness, shift,
            fairness or attention, which ``vitdesk evaluate DIR/fold-i`` adds).

    Raises:
        ConfigError, DataError, CheckpointError: before anything is written.
        Cancelled: finished folds (and their evaluations) are kept.
    """
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.data.source_refs import for_run_folder
    from vitdesk.engine.run import train
    from vitdesk.fileio import atomic_write_json

    cfg = RunConfig.from_dict(cfg.to_dict())
    cfg.data.fold = ""  # a fold run's own config.toml given as --config: the folds are ours
    parent = Path(cfg.out).expanduser()
    _check_parent(parent, k, resume)
    check_folds(cfg, k, cancel, listeners)
    o = (options or fold_eval_options(cfg.device, cfg.seed)).check()
    # ---- everything is valid: now write -------------------------------------------------
    parent.mkdir(parents=True, exist_ok=True)
    result = CVResult(k=k, seed=cfg.seed, classes=[])
    if not resume:
        save_config(for_run_folder(cfg), parent / "config.toml")  # the plan, resolved once
        atomic_write_json(parent / "cv.json", result.to_dict(), allow_nan=False)
    oof: list[dict] = []
    for i in range(1, k + 1):
        emit(list(listeners), Progress(_TASK, i - 1, k, f"fold {i} of {k}"))
        run = fold_dir(parent, i)
        state = _fold_state(run) if resume else "new"
        if state in ("new", "partial"):
            train(fold_config(cfg, i, k), cancel, listeners, resume=state == "partial",
                  planned=True, estimate=estimate)
        if state != "evaluated":
            ev = evaluate_run(run, None, o, cancel=cancel, listener=list(listeners))
            atomic_write_json(run / "eval" / "metrics.json", ev.to_dict(), allow_nan=False)
            _save_oof(run / "eval" / OOF_FILE, ev)
        doc = json.loads((run / "eval" / "metrics.json").read_text())
        numbers = {"fold": i, "run": run.name, **fold_numbers(doc)}
        result.folds.append(numbers)
        result.classes = list(doc.get("classes") or [])
        oof.append(_load_oof(run / "eval" / OOF_FILE, doc))
        atomic_write_json(parent / "cv.json", result.to_dict(), allow_nan=False)
    emit(list(listeners), Progress(_TASK, k, k, "summary"))
    result.summary = {f"{lv}_{key}": mean_interval([f[f"{lv}_{key}"] for f in result.folds],
                                                   bounds=(0.0, 1.0))
                      for lv, key in CV_METRICS}
    result.pooled = pooled_metrics(oof, result.classes, patient_score=o.patient_score,
                                   topk=o.topk, n_boot=o.n_boot, seed=o.seed)
    undefined = [f"{lv} {key}" for lv, key in CV_METRICS
                 if result.summary[f"{lv}_{key}"].n < k]
    if undefined:
        result.notes.append(f"{', '.join(undefined)} undefined in some folds (a fold tested "
                            "one class only): their mean is over the other folds")
    result.finished = True
    atomic_write_json(parent / "cv.json", result.to_dict(), allow_nan=False)
    return result


def _save_oof(path: Path, ev: Any) -> None:
    """Labels and probabilities of the scored slices, patients as fold-local indices (a
    run folder holds no identifier, not even a keyed one it does not need)."""
    import io

    from vitdesk.fileio import atomic_write_bytes

    _, index = np.unique(np.asarray(ev.patients).astype(str), return_inverse=True)
    buf = io.BytesIO()
    np.savez(buf, labels=np.asarray(ev.labels, dtype=np.int64),
             probs=np.asarray(ev.probs, dtype=np.float64), patients=index.astype(np.int64))
    data = buf.getvalue()
    atomic_write_bytes(path, lambda p: Path(p).write_bytes(data), size_hint=len(data))


def _load_oof(path: Path, doc: dict) -> dict:
    with np.load(path) as z:
        out = {"labels": z["labels"], "probs": z["probs"], "patients": z["patients"]}
    m = doc.get("metrics") or {}
    out["confusion"] = {lv: (m.get(lv) or {}).get("confusion") for lv in ("slice", "patient")}
    out["cuts"] = {lv: (m.get(lv) or {}).get("cut", "") for lv in ("slice", "patient")}
    return out


def read_plan(parent: str | Path) -> RunConfig:
    """The plan a cross-validation folder was started with (``DIR/config.toml``)."""
    return load_config(Path(parent) / "config.toml")


__all__ = ["CV_METRICS", "CVResult", "FoldSpread", "check_folds", "cross_validate",
           "fold_config", "fold_dir", "fold_eval_options", "fold_numbers", "mean_interval",
           "pooled_metrics", "read_plan"]
