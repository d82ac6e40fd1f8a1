"""Forgetting of a continued run: its accuracy on its parent's test split against the
parent's own (``vitdesk evaluate RUN --data NEW --earlier OLD_SRC``).

forgetting = parent's accuracy on the parent's test split minus the continued run's
accuracy on the same slices; the 95% interval resamples patients (both models scored
on the same resample, so the interval is of the paired difference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.errors import ConfigError, DataError
from vitdesk.jobs import NEVER, CancelToken, Listener


def parent_of(run: Any) -> Path:
    """The parent run folder of a loaded continued run (ConfigError when it has none)."""
    from vitdesk.engine.plan import parent_folder

    name = run.cfg.continual.continue_from
    if not name:
        raise ConfigError(f"--earlier: run '{Path(run.run_dir).name}' has no parent run (it "
                          "was not trained with --continue): leave --earlier out")
    parent = parent_folder(name, Path(run.run_dir))
    if not (parent / "config.toml").is_file():
        raise DataError(f"--earlier: the parent run '{name}' is not beside "
                        f"{Path(run.run_dir).name}: put the two run folders side by side")
    return parent


def _correct(lr: Any, records: list, batch: int, cancel: CancelToken) -> np.ndarray:
    import torch

    from vitdesk.analysis.run_model import dataset_batches, device_of, records_dataset

    ds = records_dataset(lr, records)
    dev = device_of(lr.model)
    out = []
    with torch.no_grad():
        for x, y in dataset_batches(ds, range(len(records)), batch):
            cancel.check()
            logits = lr.model(x.to(dev))
            logits = logits[0] if isinstance(logits, tuple) else logits
            out.append((logits.argmax(-1).cpu() == y).numpy())
    return np.concatenate(out) if out else np.zeros(0, bool)


def forgetting(run: Any, earlier_src: str | Path | None, *, n_boot: int = 1000,
               seed: int = 0, batch: int = 64, cancel: CancelToken = NEVER,
               listener: Listener | None = None) -> dict[str, Any]:
    """Parent and run accuracy on the parent's test split of ``earlier_src``.

    Args:
        run: a loaded continued run (:class:`~vitdesk.engine.run.LoadedRun`).
        earlier_src: the data the parent was trained on (None: its recorded source).

    Returns:
        ``parent``, ``split``, ``n_slices``, ``n_patients``, ``parent_acc``, ``run_acc``,
        ``forgetting`` and ``forgetting_ci`` (no paths).
    """
    from vitdesk.analysis.evaluation import run_splits
    from vitdesk.engine.run import load_run

    parent_dir = parent_of(run)
    records = [r for r in run_splits(parent_dir, "test", earlier_src)["test"]
               if r.label is not None]
    if not records:
        raise DataError(f"--earlier: the parent run '{parent_dir.name}' has an empty test "
                        "split: forgetting cannot be measured on it")
    parent = load_run(parent_dir, device=str(_device(run)))
    ours = _correct(run, records, batch, cancel)
    theirs = _correct(parent, records, batch, cancel)
    patients = np.asarray([r.patient for r in records])
    uniq, inv = np.unique(patients, return_inverse=True)
    k = len(uniq)
    n_p = np.bincount(inv, minlength=k).astype(float)
    c_run = np.bincount(inv, weights=ours.astype(float), minlength=k)
    c_par = np.bincount(inv, weights=theirs.astype(float), minlength=k)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    w = np.stack([np.bincount(d, minlength=k) for d in draws]).astype(float)
    diff = (w @ c_par - w @ c_run) / np.maximum(w @ n_p, 1.0)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    p_acc, r_acc = float(theirs.mean()), float(ours.mean())
    return {"parent": parent_dir.name, "split": "test", "n_slices": int(len(records)),
            "n_patients": int(k), "parent_acc": p_acc, "run_acc": r_acc,
            "forgetting": p_acc - r_acc, "forgetting_ci": [float(lo), float(hi)]}


def _device(run: Any) -> Any:
    from vitdesk.analysis.run_model import device_of

    return device_of(run.model)


def forgetting_line(f: dict[str, Any]) -> str:
    """The console line of :func:`forgetting`."""
    lo, hi = f["forgetting_ci"]
    return (f"earlier test split of parent run {f['parent']} ({f['n_slices']} slices, "
            f"{f['n_patients']} patients): parent accuracy {f['parent_acc']:.3f}, this run "
            f"{f['run_acc']:.3f}; forgetting {f['forgetting']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
