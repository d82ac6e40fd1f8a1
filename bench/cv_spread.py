"""K-fold cross-validation against the single patient split it replaces (the reference,
measured in the same run), on the synthetic CT sample.

One split, one number: the single split is trained and scored once per seed (each seed
draws other test patients), and ``vitdesk train --folds K`` is run once; every run and
fold is scored with the same evaluation (:func:`vitdesk.analysis.cv.fold_eval_options`).
The table shows each single split's numbers and their range next to the folds' mean,
SD, 95% t interval and the pooled out-of-fold numbers. JSON in bench/results/.

The model is the tiny CNN trained from scratch (it learns this sample in 10 epochs on a
CPU; the tiny ViT needs MAE pretraining first, see ``vitdesk demo``).

    .venv/bin/python bench/cv_spread.py [--folds 5] [--seeds 0,1,2] [--epochs 10]
        [--patients 64] [--slices 12] [--size 64] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdesk.analysis.cv import CV_METRICS, fold_eval_options, fold_numbers  # noqa: E402
from vitdesk.analysis.evaluation import evaluate_run  # noqa: E402
from vitdesk.cli import main  # noqa: E402

CONFIG = """device = "cpu"
[model]
name = "cnn_test_tiny"
img_size = {size}
drop_path = 0.0
[weights]
pretrained = "none"
[data]
window = "soft_tissue"
batch_size = 16
balance = "loss"
[recipe]
kind = "full"
[[recipe.stages]]
name = "full"
epochs = {epochs}
lr = 3e-3
unfreeze = "all"
layer_decay = 1.0
"""


def _f(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"


def main_bench(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", default="0,1,2", help="single-split seeds (the reference)")
    ap.add_argument("--cv-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patients", type=int, default=64)
    ap.add_argument("--slices", type=int, default=12)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    a = ap.parse_args(argv)
    work = Path(a.work or tempfile.mkdtemp(prefix="vitdesk-cv-"))
    data, cfg = work / "ct", work / "cnn.toml"
    if not data.is_dir():
        assert main(["sample", "--out", str(data), "--patients", str(a.patients),
                     "--slices", str(a.slices), "--size", str(a.size)]) == 0
    cfg.write_text(CONFIG.format(size=a.size, epochs=a.epochs))
    train = ["train", "--data", str(data), "--config", str(cfg)]

    single = []
    t0 = time.perf_counter()
    for seed in [int(s) for s in a.seeds.split(",") if s.strip()]:
        out = work / f"single-{seed}"
        if not (out / "checkpoints").is_dir():
            assert main([*train, "--seed", str(seed), "--out", str(out)]) == 0
        ev = evaluate_run(out, None, fold_eval_options("cpu", seed))
        single.append({"seed": seed, **fold_numbers(ev.to_dict())})
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cv_out = work / f"cv{a.folds}-seed{a.cv_seed}"
    resume = ["--resume"] if (cv_out / "cv.json").is_file() else []
    assert main([*train, "--seed", str(a.cv_seed), "--folds", str(a.folds), "--out",
                 str(cv_out), *resume]) == 0
    cv = json.loads((cv_out / "cv.json").read_text())
    cv_s = time.perf_counter() - t0

    rows = [["metric", *[f"split seed {s['seed']}" for s in single], "split range",
             f"{a.folds}-fold mean +- SD", "95% CI (t)", "pooled"]]
    for lv, key in CV_METRICS:
        name = f"{lv}_{key}"
        vals = [s[name] for s in single if s[name] is not None]
        sm = cv["summary"][name]
        pooled = cv["pooled"][lv]["accuracy"] if key == "accuracy" else \
            (cv["pooled"][lv]["auc"] or {}).get("value")
        rows.append([f"{lv} {key}", *[_f(s[name]) for s in single],
                     f"{_f(min(vals))}-{_f(max(vals))}" if vals else "-",
                     f"{_f(sm['mean'])} +- {_f(sm['sd'])}", f"{_f(sm['lo'])}-{_f(sm['hi'])}",
                     _f(pooled)])
    rows.append(["test patients", *[str(s["n_patients"]) for s in single], "",
                 f"{statistics.mean(f['n_patients'] for f in cv['folds']):.1f} per fold", "",
                 str(cv["pooled"]["n_patients"])])
    result = {"bench": "cv_spread", "folds": a.folds, "cv_seed": a.cv_seed,
              "epochs": a.epochs, "sample": {"patients": a.patients, "slices": a.slices,
                                             "size": a.size},
              "single": single, "cv": {k: cv[k] for k in ("folds", "summary", "pooled")},
              "seconds": {"single_splits": round(single_s, 1), "cv": round(cv_s, 1)}}
    res_dir = ROOT / "bench" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "cv_spread.json").write_text(json.dumps(result, indent=1))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"single splits {single_s:.0f} s, {a.folds}-fold CV {cv_s:.0f} s ({work})")
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                    for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_bench())
