"""Benchmark: the planned ViT against a ResNet-18 from scratch at equal wall time.

For each data set (the synthetic CT sample, and a greyscale image folder of small images
with a faint blob in the abnormal class) and each seed:

1. the planner plans a ViT for ``--budget`` (:func:`vitdesk.engine.probe.plan_with_budget`,
   what ``vitdesk train`` runs without ``--model``) and vitdesk trains it;
2. vitdesk trains ``resnet18`` from random weights on the same labels, split and seed, at
   the ViT's image size and batch, for the epochs that fill the ViT's measured training
   time (the first seed from its step time measured by the same probe, later seeds from
   the epoch time the earlier CNN run measured; the reference in the same run);
3. both are scored on the held-out test patients; the ViT-minus-CNN accuracy and AUC
   come with paired patient-bootstrap 95 % intervals
   (:func:`vitdesk.analysis.baseline.compare_with_baseline`).

It also records the plan's estimated against the measured training time. Prints a table
last and writes JSON (default bench/results/plan_quality.json).

    .venv/bin/python bench/plan_quality.py [--budget 60s] [--seeds 1,2,3] [--threads 1]
        [--patients 24] [--slices 8] [--images 150] [--blob 30] [--data ct,png]
        [--out bench/results/plan_quality.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def blob_pngs(root: Path, per_class: int, size: int, seed: int, blob: float = 30.0) -> Path:
    """Greyscale PNGs (one patient each): noise around grey 90 (SD 20); ``lesion`` adds a
    Gaussian blob of ``blob`` grey levels, sigma 2 px, somewhere inside: visible when one
    looks for it, invisible to a threshold."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for label in ("lesion", "normal"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(90, 20, (size, size))
            if label == "lesion":
                cy, cx = rng.uniform(5, size - 5, 2)
                img += blob * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
            Image.fromarray(img.clip(0, 255).astype(np.uint8), mode="L").save(
                root / label / f"{label}_{i:04d}.png")
    return root


def _train_seconds(run: Path) -> float:
    return float(json.loads((run / "env.json").read_text())["train_seconds"])


def one(data: Path, work: Path, seed: int, budget: str,
        cnn_epoch_s: float | None = None) -> dict:
    """Plan and train the ViT, train the CNN for the same time, compare them.

    ``cnn_epoch_s``: seconds per CNN epoch measured by an earlier seed's CNN run on this
    data (better than a few timed steps on a machine whose load changes)."""
    from vitdesk.analysis.baseline import evaluate_baseline
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.config import RunConfig, StageConfig
    from vitdesk.engine.plan import RunCosts, epoch_seconds, plan_run
    from vitdesk.engine.probe import measure_step, plan_with_budget
    from vitdesk.engine.run import train

    cfg = RunConfig()
    cfg.data.source, cfg.seed, cfg.device = str(data), seed, "cpu"
    cfg.out = str(work / f"vit-{seed}")
    t0 = time.perf_counter()
    plan = plan_with_budget(cfg, budget)
    plan_s = time.perf_counter() - t0
    vit_dir = train(plan.cfg, planned=True,
                    estimate={"seconds": plan.estimate.seconds,
                              "peak_memory_mb": plan.estimate.peak_memory_mb})
    vit_s = _train_seconds(vit_dir)
    v = plan.cfg

    # the reference: ResNet-18 from scratch, same data, split, seed, size and batch
    c = RunConfig.from_dict(v.to_dict())
    c.model.name, c.model.patch_size, c.model.drop_path = "resnet18", 0, 0.0
    c.model.pool = "auto"
    c.weights.pretrained, c.recipe.kind = "none", "full"
    c.out = str(work / f"cnn-{seed}")
    step, _peak = measure_step("resnet18", v.model.img_size, 0, v.data.batch_size, "cpu")
    images = len(list(data.rglob("*.png"))) or len(list(data.rglob("*.dcm")))
    train_n = int(images * v.data.fractions[0])
    val_n = int(images * v.data.fractions[1])
    spe = -(-train_n // v.data.batch_size)
    per_epoch = cnn_epoch_s or epoch_seconds(step, spe, v.data.batch_size, train_n, val_n,
                                             RunCosts())
    epochs = max(2, min(300, round(vit_s / per_epoch)))
    c.recipe.stages = [StageConfig("full", epochs, 1e-3, "all", 1.0)]
    cnn_dir = train(plan_run(c, check_files=True).cfg, planned=True)
    cnn_s = _train_seconds(cnn_dir)

    common = dict(robustness=False, shift=False, fairness=False, attention_samples=0,
                  n_boot=1000, seed=0, device="cpu")
    ev = evaluate_run(vit_dir, None, **common)
    t = evaluate_baseline(ev, vit_dir, cnn_dir, None, n_boot=1000, seed=0, device="cpu")
    paired = t["paired"]
    return {
        "seed": seed, "plan_seconds": round(plan_s, 1),
        "vit": {"model": v.model.name, "img_size": v.model.img_size,
                "patch": v.model.patch_size, "batch": v.data.batch_size,
                "epochs": sum(s.epochs for s in v.recipe.stages),
                "estimated_s": round(plan.estimate.seconds, 1), "trained_s": vit_s,
                "auc": t["auc"]},
        "cnn": {"model": "resnet18", "epochs": epochs, "trained_s": cnn_s,
                "epoch_s": cnn_s / epochs, "auc": t["baseline_auc"]},
        "slices": t["n_slices"], "patients": t["n_patients"],
        "accuracy_diff": paired["accuracy"], "auc_diff": paired["auc"],
        "transfer": {k: t[k] for k in ("model", "baseline_model")},
        "vit_accuracy": _acc(ev), "cnn_accuracy": _acc(ev) - paired["accuracy"]["value"],
    }


def _acc(ev) -> float:
    e = ev.metrics.slice.estimates["accuracy"]
    return float(e.value)


def _ci(d: dict) -> str:
    return f"{d['value']:+.3f} [{d['lo']:+.3f},{d['hi']:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", default="60s")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a shared 2-core machine stalls with 2)")
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="CT slice size in px")
    ap.add_argument("--images", type=int, default=150, help="greyscale images per class")
    # 18 left both models at chance on 150 images a class (nothing to compare); at 30
    # (peak 1.5 noise SDs, sigma 2 px) a reader finds it when looking, a threshold does not
    ap.add_argument("--blob", type=float, default=30.0,
                    help="grey levels the lesion blob adds (noise SD 20)")
    ap.add_argument("--png-size", type=int, default=32)
    ap.add_argument("--data", default="ct,png", help="ct, png or both")
    ap.add_argument("--out", default="bench/results/plan_quality.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vitdesk.imaging.synthetic import generate_sample

    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="vitdesk-plan-quality-"))
    rows = []
    try:
        sets = {}
        if "ct" in args.data:
            generate_sample(root / "ct", patients=args.patients, slices=args.slices,
                            size=args.size, seed=0)
            sets["ct"] = root / "ct"
        if "png" in args.data:
            sets["png"] = blob_pngs(root / "png", args.images, args.png_size, seed=0,
                                    blob=args.blob)
        for name, data in sets.items():
            cnn_epoch_s = None
            for seed in seeds:
                r = one(Path(data), root / f"runs-{name}", seed, args.budget, cnn_epoch_s)
                cnn_epoch_s = r["cnn"]["epoch_s"]
                r["data"] = name
                rows.append(r)
                print(json.dumps(r), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    doc = {"budget": args.budget, "threads": args.threads, "machine": platform.machine(),
           "cpus": torch.get_num_threads(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nplanned ViT vs ResNet-18 from scratch at equal wall time (budget {args.budget}, "
          f"{args.threads} thread(s)); differences ViT - CNN with paired patient-bootstrap "
          "95 % CIs")
    print(f"{'data':5} {'seed':>4} {'ViT plan':28} {'est s':>6} {'ViT s':>6} {'CNN ep':>6} "
          f"{'CNN s':>6} {'acc ViT':>7} {'acc CNN':>7} {'d acc [CI]':>24} {'d AUC [CI]':>24}")
    for r in rows:
        v = r["vit"]
        what = f"{v['model']} {v['img_size']}px p{v['patch'] or '-'} {v['epochs']}ep"
        print(f"{r['data']:5} {r['seed']:>4} {what:28} {v['estimated_s']:>6.0f} "
              f"{v['trained_s']:>6.0f} {r['cnn']['epochs']:>6} {r['cnn']['trained_s']:>6.0f} "
              f"{r['vit_accuracy']:>7.3f} {r['cnn_accuracy']:>7.3f} "
              f"{_ci(r['accuracy_diff']):>24} {_ci(r['auc_diff']):>24}")
    if not rows:
        print("(no rows)")


if __name__ == "__main__":
    main()
