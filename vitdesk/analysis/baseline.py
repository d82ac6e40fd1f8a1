"""Transfer effectiveness: the evaluated run against a baseline run on the same slices.

The usual baseline is a small CNN trained from scratch on the same labels (``vitdesk
train --model resnet18 --pretrained none``): with few labels it is the model a ViT
transfer-learning recipe has to beat. Both runs are scored on exactly the same
held-out slices, so the difference is paired: its confidence interval resamples
patients and keeps each slice's two predictions together, which is much tighter than
comparing two separate intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener


def _describe_run(run_dir: str | Path) -> str:
    """``model (weights), N epochs in S s`` of a run folder, without paths (they may name
    people): readers must see what each side was given before comparing them."""
    import json

    from vitdesk.config import load_config
    from vitdesk.engine.history import read_history

    run = Path(run_dir)
    cfg = load_config(run / "config.toml")
    src = str(cfg.weights.pretrained).strip()
    weights = src if src.lower() in ("none", "hub") else f"'{Path(src).name}'"
    text = f"{cfg.model.name} (weights: {weights})"
    epochs = len(read_history(run))
    if epochs:
        text += f", {epochs} epoch{'s' if epochs != 1 else ''}"
    try:
        seconds = float(json.loads((run / "env.json").read_text(encoding="utf-8"))
                        ["train_seconds"])
        text += f" in {seconds:.0f} s"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # an older run without timings: the model and weights still say a lot
    return text


def _level_value(ev: Any, level: str, key: str) -> float | None:
    lm = getattr(ev.metrics, level, None)
    e = lm.estimates.get(key) if lm is not None else None
    return None if e is None else float(e.value)


def compare_with_baseline(ev: Any, base: Any, run_dir: str | Path, baseline_dir: str | Path,
                          *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The transfer section of a report: ``ev`` (the run) against ``base`` (the baseline).

    Both are :class:`~vitdesk.analysis.evaluation.RunEvaluation` of the same slices
    (any order). Returns :func:`~vitdesk.analysis.metrics.transfer_effectiveness`'s
    figures on slice accuracy, plus both runs' slice and patient AUC, the baseline's
    description and ``paired``: the run-minus-baseline slice accuracy and AUC with
    95 % intervals from a patient bootstrap of the paired predictions, and the paired
    patient AUC difference (patients scored as the run's evaluation scored them).

    Raises:
        DataError: the runs have other classes or were scored on other slices.
    """
    from vitdesk.analysis import metrics as M
    from vitdesk.engine.history import read_history

    name = Path(baseline_dir).name
    if list(ev.classes) != list(base.classes):
        raise DataError(f"baseline run '{name}' has classes {list(base.classes)}, the run "
                        f"{list(ev.classes)}: train the baseline on the same labels")
    where = {k: i for i, k in enumerate(base.keys.tolist())}
    if len(where) != len(ev.keys) or any(k not in where for k in ev.keys.tolist()):
        shared = sum(k in where for k in ev.keys.tolist())
        raise DataError(
            f"baseline run '{name}' was scored on other slices ({shared} of {len(ev.keys)} "
            "shared): train it on the same data with the same seed and split fractions, "
            "or compare both on an external --data")
    idx = np.asarray([where[k] for k in ev.keys.tolist()], dtype=int)
    b_probs, b_labels = base.probs[idx], base.labels[idx]
    if not np.array_equal(b_labels, ev.labels):
        raise DataError(f"baseline run '{name}' sees other labels for the same slices: "
                        "use the same labels.csv for both runs")
    k = ev.probs.shape[1]
    both = np.concatenate([ev.probs, b_probs], axis=1)

    def acc_diff(y: np.ndarray, p: np.ndarray) -> float:
        return float((p[:, :k].argmax(1) == y).mean() - (p[:, k:].argmax(1) == y).mean())

    def auc_diff(y: np.ndarray, p: np.ndarray) -> float:
        return M.roc_auc(y, p[:, :k]) - M.roc_auc(y, p[:, k:])

    paired = M.bootstrap({"accuracy": acc_diff, "auc": auc_diff}, ev.labels, both,
                         clusters=ev.patients, n_boot=n_boot, seed=seed)
    # patients, scored the way the run's evaluation scored them (e.g. top-3 slices)
    opts = getattr(ev, "settings", None) or {}
    agg = (opts.get("patient_rule", "majority"), opts.get("patient_score", "mean"),
           opts.get("topk", 3))
    y_pat, s_run, _ = M.aggregate_by_patient(ev.labels, ev.probs, ev.patients, *agg)
    _, s_base, _ = M.aggregate_by_patient(ev.labels, b_probs, ev.patients, *agg)
    paired.update({"patient_auc": M.bootstrap(
        {"auc": auc_diff}, y_pat, np.concatenate([s_run, s_base], axis=1), n_boot=n_boot,
        seed=seed)["auc"]})
    out = M.transfer_effectiveness(
        {"history": read_history(run_dir),
         "metrics": {"accuracy": _level_value(ev, "slice", "accuracy")}},
        {"history": read_history(baseline_dir),
         "metrics": {"accuracy": _level_value(base, "slice", "accuracy")}},
        n_classes=len(ev.classes))
    out.update({
        "baseline_model": _describe_run(baseline_dir),
        "model": _describe_run(run_dir),
        "auc": _level_value(ev, "slice", "auc"),
        "baseline_auc": _level_value(base, "slice", "auc"),
        "patient_auc": _level_value(ev, "patient", "auc"),
        "baseline_patient_auc": _level_value(base, "patient", "auc"),
        "n_slices": int(len(ev.labels)),
        "n_patients": int(len(set(ev.patients.tolist()))),
        "paired": {m: e.to_dict() for m, e in paired.items()},
    })
    return out


def evaluate_baseline(ev: Any, run_dir: str | Path, baseline_dir: str | Path,
                      data_src: str | Path | None, *, split: str = "test", tta: Any = None,
                      n_boot: int = 1000, seed: int = 0, device: str = "auto",
                      cancel: CancelToken = NEVER, listener: Listener | None = None) -> dict:
    """Score ``baseline_dir`` like ``ev`` was scored (same data, split and TTA), then
    :func:`compare_with_baseline`. Robustness, shift, fairness and attention are skipped:
    the section only needs the predictions."""
    from vitdesk.analysis.evaluation import evaluate_run

    base = evaluate_run(baseline_dir, data_src, split=split, tta=tta, robustness=False,
                        shift=False, fairness=False, attention_samples=0, n_boot=n_boot,
                        seed=seed, device=device, cancel=cancel, listener=listener)
    return compare_with_baseline(ev, base, run_dir, baseline_dir, n_boot=n_boot, seed=seed)
