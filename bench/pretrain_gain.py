"""Benchmark: does MAE pretraining (+ distillation from a CNN) pay off when labels are scarce?

Two datasets (``--datasets``): ``ct``, the synthetic CT sample (DICOM + labels.csv),
and ``grey``, a generated class-subfolder folder of small greyscale PNGs (rings vs
filled discs of equal brightness among distractor blobs). Patients (one per PNG) are
split into a pool (70 %) and a held-out test set (30 %). Only ``--label-fraction``
of all patients (from the pool, both classes present) keep their labels; the rest of
the pool is unlabelled. At (about) equal CPU time per arm:

* (a) ``scratch``: the ViT, full recipe from random weights on the labelled slices;
* (b) ``mae``: MAE pretraining on every pool slice (labels ignored), then the staged
  recipe from that encoder on the same labelled slices;
* ``cnn``: the CNN teacher alone (``--teacher-model``, full recipe from scratch on the
  same labelled slices, ``--teacher-share`` of the budget);
* (c) ``mae+kd``: (b)'s encoder (its pretraining seconds are counted) + the teacher's
  seconds + the staged recipe distilled from the teacher (``--distill``; ``token``
  uses the ``<model>_distilled`` student) in the rest of the budget.

Epoch counts are calibrated from one-epoch probes so each arm gets ``--budget-s``
CPU seconds (process time; use ``--threads 1``); the measured CPU and wall seconds
are reported next to the target. Held-out accuracy
and ROC AUC come with 95 % bootstrap intervals that resample patients. Prints a
table last and writes JSON to bench/results/pretrain_gain.json.

    .venv/bin/python bench/pretrain_gain.py --quick          # a few minutes, a smoke run
    .venv/bin/python bench/pretrain_gain.py --budget-s 600 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vitdesk.analysis.metrics import bootstrap, roc_auc
from vitdesk.config import RunConfig, StageConfig
from vitdesk.data.augment import AugmentConfig
from vitdesk.data.build import fingerprint
from vitdesk.data.dataset import SliceDataset
from vitdesk.data.records import classes_of
from vitdesk.data.sources import load_records
from vitdesk.data.splits import patient_strata, split_by_patient
from vitdesk.engine.models import model_norm_stats
from vitdesk.engine.pretrain import PretrainConfig, PretrainData, pretrain
from vitdesk.engine.run import TrainData, load_run, train
from vitdesk.imaging.synthetic import generate_sample
from vitdesk.imaging.windowing import WindowSpec


def _pick_labelled(pool, n_labelled: int, seed: int) -> list:
    """``n_labelled`` pool patients, at least one of each stratum (class) first."""
    strata = patient_strata(pool)
    rng = random.Random(seed)
    patients = sorted(strata)
    rng.shuffle(patients)
    chosen: list[str] = []
    for cls in sorted(set(strata.values())):
        first = next(p for p in patients if strata[p] == cls)
        chosen.append(first)
    for p in patients:
        if len(chosen) >= n_labelled:
            break
        if p not in chosen:
            chosen.append(p)
    keep = set(chosen)
    return [r for r in pool if r.patient in keep]


def _run_cfg(args, out: Path, kind: str, pretrained: str, epochs: list[int], seed: int,
             model: str | None = None, lr: float | None = None, teacher: str = "") -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = model or args.model
    cfg.teacher.run = teacher
    cfg.teacher.alpha = args.alpha
    cfg.model.img_size = args.img_size
    cfg.model.attention = "eager" if args.device == "cpu" else "auto"
    cfg.weights.pretrained = pretrained
    cfg.data.window = args.window
    cfg.data.batch_size = args.batch_size
    cfg.recipe.kind = kind
    cfg.recipe.stages = []
    cfg.recipe.stages = cfg.stage_plan()
    if kind == "full":
        cfg.recipe.stages = [StageConfig("full", epochs[0], lr or args.scratch_lr, "all", 1.0)]
    else:
        for stage, n in zip(cfg.recipe.stages, epochs, strict=True):
            stage.epochs = n
    cfg.device = args.device
    cfg.seed = seed
    cfg.out = str(out)
    return cfg


def _pretrain_cfg(args, out: Path, epochs: int, seed: int) -> PretrainConfig:
    return PretrainConfig(
        model=args.model, img_size=args.img_size, window=args.window,
        epochs=epochs, batch_size=args.batch_size, base_lr=args.mae_base_lr,
        warmup_epochs=max(1.0, epochs / 10), decoder_dim=args.decoder_dim,
        decoder_depth=args.decoder_depth, decoder_heads=4, seed=seed, device=args.device,
        attention="eager" if args.device == "cpu" else "auto", out=str(out),
    )


@torch.no_grad()
def _predict(run_dir: Path, ds: SliceDataset) -> np.ndarray:
    run = load_run(run_dir, kind="last")  # no validation set: the last epoch is the model
    probs = []
    for i in range(0, len(ds), 64):
        x = torch.stack([ds[j][0] for j in range(i, min(i + 64, len(ds)))])
        probs.append(torch.softmax(run.model(x.to(next(run.model.parameters()).device)), -1))
    return torch.cat(probs).float().cpu().numpy()


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def _score(probs: np.ndarray, ds: SliceDataset, seed: int) -> dict:
    y = np.asarray(ds.targets)
    patients = np.asarray([r.patient for r in ds.records])
    est = bootstrap({"accuracy": _accuracy, "auc": roc_auc}, y, probs, clusters=patients,
                    n_boot=1000, seed=seed)
    out = {k: v.to_dict() for k, v in est.items()}
    # the accuracy of always answering the commonest test class: the bar to clear
    out["majority_accuracy"] = float(np.bincount(y).max() / max(len(y), 1))
    return out


class _Timer:
    """``with _Timer() as t: ...`` then ``t.seconds`` (this process's CPU time) and ``t.wall``.

    Budgets are CPU seconds: on a shared machine other jobs stretch wall time at random,
    and with ``--threads 1`` CPU time is what the arm's own work cost.
    """

    def __enter__(self) -> _Timer:
        self.c0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.process_time() - self.c0
        self.wall = time.perf_counter() - self.t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a labelled SRC (default: a generated synthetic sample)")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--size", type=int, default=96, help="synthetic slice size (px)")
    ap.add_argument("--model", default="vit_test_tiny")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--window", default="lung,mediastinum,bone")
    ap.add_argument("--label-fraction", type=float, default=0.1, help="of all patients")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="CPU seconds per arm (300; 60 with --quick)")
    ap.add_argument("--pretrain-share", type=float, default=0.6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--scratch-lr", type=float, default=1e-3)
    ap.add_argument("--mae-base-lr", type=float, default=1.5e-3)
    ap.add_argument("--decoder-dim", type=int, default=64)
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--datasets", default="ct,grey", help="ct, grey or both (comma list)")
    ap.add_argument("--grey-images", type=int, default=240, help="PNGs in the grey folder")
    ap.add_argument("--teacher-model", default="cnn_test_tiny")
    ap.add_argument("--teacher-share", type=float, default=0.15, help="of arm (c)'s budget")
    ap.add_argument("--cnn-lr", type=float, default=1e-2)
    ap.add_argument("--distill", default="token", choices=["soft", "hard", "token"])
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher term")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--quick", action="store_true", help="small sample, 60 s per arm")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_gain.json"))
    args = ap.parse_args()
    if args.quick:
        args.patients, args.slices, args.size = 20, 8, 64
        args.img_size = 32
    if args.budget_s is None:  # an explicit --budget-s wins over --quick's
        args.budget_s = 60.0 if args.quick else 300.0
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vitdesk-pretrain-gain-"))
    try:
        rows = _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "bench": "pretrain_gain", "model": args.model, "img_size": args.img_size,
        "teacher_model": args.teacher_model, "teacher_share": args.teacher_share,
        "distill": args.distill, "alpha": args.alpha, "datasets": args.datasets,
        "window": args.window, "label_fraction": args.label_fraction,
        "budget_s": args.budget_s, "pretrain_share": args.pretrain_share,
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'data':<5} {'seed':>4} {'arm':<8} {'epochs':<14} {'target s':>8} "
          f"{'CPU s':>8} {'wall s':>7} {'test acc [95% CI]':<24} {'test AUC [95% CI]':<24} "
          "majority")
    for r in rows:
        a, u = r["test"]["accuracy"], r["test"]["auc"]
        print(f"{r['dataset']:<5} {r['seed']:>4} {r['arm']:<8} {r['epochs']:<14} "
              f"{r['target_s']:>8.0f} {r['seconds']:>8.1f} {r['wall_s']:>7.1f} "
              f"{a['value']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}]      "
              f"{u['value']:.3f} [{u['lo']:.3f}, {u['hi']:.3f}]      "
              f"{r['test']['majority_accuracy']:.3f}")
    print(f"wrote {args.out}")


def write_grey_folder(out: Path, n: int, size: int = 48, seed: int = 0, amp: float = 70.0
                      ) -> Path:
    """Class folders of greyscale PNGs: ``ring`` vs ``disc`` of about equal brightness.

    Each image has a noisy background with a smooth gradient, 1-3 distractor blobs and
    one target shape of random radius and place: an annulus (``ring``) or a dimmer
    filled disc (``disc``) with about the same summed intensity, so brightness alone
    does not tell the classes apart; the shape (a hole in the middle) does.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for label in ("disc", "ring"):
        (out / label).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        label = ("disc", "ring")[i % 2]
        g = rng.uniform(-20, 20, 2)
        img = 90 + g[0] * (xx / size - 0.5) + g[1] * (yy / size - 0.5)
        img = img + rng.normal(0, 12, (size, size))
        for _ in range(rng.integers(1, 4)):  # distractors: small soft blobs
            cy, cx = rng.uniform(0, size, 2)
            s2 = rng.uniform(1.5, 3.0) ** 2
            img += rng.uniform(20, 50) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s2))
        r = rng.uniform(size * 0.12, size * 0.2)
        cy, cx = rng.uniform(r + 2, size - r - 2, 2)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        if label == "ring":
            mask = (d <= r) & (d >= r * 0.55)
            level = amp
        else:
            mask = d <= r
            level = amp * (1 - 0.55 ** 2)  # the ring's summed intensity spread over the disc
        img = img + level * mask
        cv2.imwrite(str(out / label / f"{label}_{i:04d}.png"),
                    np.clip(img, 0, 255).astype(np.uint8))
    return out


def _bench(args, work: Path) -> list[dict]:
    rows: list[dict] = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name == "ct":
            src = args.data
            if src is None:
                src = work / "sample"
                generate_sample(src, patients=args.patients, slices=args.slices,
                                size=args.size, seed=0)
        elif name == "grey":
            src = write_grey_folder(work / "grey", args.grey_images, size=48, seed=0)
        else:
            raise SystemExit(f"unknown dataset '{name}': use ct or grey")
        records = load_records(src)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for row in _one_seed(args, work / name, records, seed):
                rows.append({"dataset": name, **row})
    return rows


def _one_seed(args, work: Path, records: list, seed: int) -> list[dict]:
    classes = classes_of(records)
    window = WindowSpec.parse(args.window)
    mean, std = model_norm_stats(args.model)
    n_all = len({r.patient for r in records})
    splits = split_by_patient(records, fractions=(0.7, 0.0, 0.3), seed=seed)
    pool, test = splits["train"], splits["test"]
    labelled = _pick_labelled(pool, max(2, int(round(args.label_fraction * n_all))), seed)
    unlabelled = [dataclasses.replace(r, label=None) for r in pool]
    aug = AugmentConfig(seed=seed)
    test_ds = SliceDataset(test, classes, window, args.img_size, mean, std)
    pool_ds = SliceDataset(unlabelled, [], window, args.img_size, mean, std,
                           augment=AugmentConfig(rotate_deg=5.0, scale=(0.9, 1.2), hu_shift=0.0,
                                                 hu_scale=0.0, seed=seed))
    pdata = PretrainData(pool_ds, fingerprint(unlabelled), len({r.patient for r in unlabelled}))
    print(f"seed {seed}: {len({r.patient for r in labelled})} labelled patients "
          f"({len(labelled)} slices), pool {len(pool)} slices, test {len(test)} slices "
          f"({len({r.patient for r in test})} patients)", flush=True)

    labelled_ds = SliceDataset(labelled, classes, window, args.img_size, mean, std, augment=aug)
    for ds in (labelled_ds, pool_ds, test_ds):  # fill the slice caches: no arm pays disk reads
        for i in range(len(ds)):
            ds[i]

    def labelled_data() -> TrainData:
        return TrainData(labelled_ds, None, classes)

    # ---- calibrate: fixed and per-epoch seconds of each kind of work ------------------
    probes = iter(range(10**6))

    def probe_ft(n: int) -> float:
        out = work / f"probe-ft-{seed}-{next(probes)}"
        with _Timer() as t:
            train(_run_cfg(args, out, "full", "none", [n], seed), data=labelled_data())
        return t.seconds

    def probe_pt(n: int) -> float:
        out = work / f"probe-pt-{seed}-{next(probes)}"
        with _Timer() as t:
            pretrain(_pretrain_cfg(args, out, n, seed), data=pdata)
        return t.seconds

    def probe_cnn(n: int) -> float:
        out = work / f"probe-cnn-{seed}-{next(probes)}"
        with _Timer() as t:
            train(_run_cfg(args, out, "full", "none", [n], seed, model=args.teacher_model,
                           lr=args.cnn_lr), data=labelled_data())
        return t.seconds

    probe_ft(1), probe_pt(1), probe_cnn(1)  # warm-up: imports and allocator growth
    ft1, ft3 = probe_ft(1), probe_ft(3)
    pt1, pt3 = probe_pt(1), probe_pt(3)
    cn1, cn3 = probe_cnn(1), probe_cnn(3)
    # marginal cost of an epoch; never below a third of a whole 1-epoch run (noise)
    per_ft = max((ft3 - ft1) / 2, ft1 / 3)
    per_pt = max((pt3 - pt1) / 2, pt1 / 3)
    per_cn = max((cn3 - cn1) / 2, cn1 / 3)
    fix_ft, fix_pt = max(ft1 - per_ft, 0.0), max(pt1 - per_pt, 0.0)
    fix_cn = max(cn1 - per_cn, 0.0)
    print(f"calibration: fine-tune {per_ft:.2f} s/epoch + {fix_ft:.1f} s, MAE "
          f"{per_pt:.2f} s/epoch + {fix_pt:.1f} s, CNN {per_cn:.2f} s/epoch + "
          f"{fix_cn:.1f} s", flush=True)
    budget_pt = args.budget_s * args.pretrain_share
    e_scratch = max(1, int((args.budget_s - fix_ft) / per_ft))
    e_pre = max(1, int((budget_pt - fix_pt) / per_pt))
    e_ft = max(3, int((args.budget_s - budget_pt - fix_ft) / per_ft))
    staged = _staged_epochs(e_ft)
    budget_cn = args.budget_s * args.teacher_share
    e_cnn = max(1, int((budget_cn - fix_cn) / per_cn))
    # (c) fine-tunes in what (b)'s fine-tuning had minus the teacher's share; a training
    # step also runs the teacher forward (about a third of its own training step)
    per_kd = per_ft + per_cn / 3
    e_kd = max(3, int((args.budget_s - budget_pt - budget_cn - fix_ft) / per_kd))
    staged_kd = _staged_epochs(e_kd)
    rows = []

    # ---- arm A: from scratch, full recipe ------------------------------------------
    run_a = work / f"scratch-{seed}"
    with _Timer() as t_a:
        train(_run_cfg(args, run_a, "full", "none", [e_scratch], seed), data=labelled_data())
    rows.append({"seed": seed, "arm": "scratch", "epochs": str(e_scratch),
                 "target_s": args.budget_s, "seconds": round(t_a.seconds, 1),
                 "wall_s": round(t_a.wall, 1),
                 "test": _score(_predict(run_a, test_ds), test_ds, seed)})

    # ---- arm B: MAE on the pool, then staged fine-tuning ----------------------------
    enc = work / f"mae-{seed}"
    with _Timer() as t_p:
        pretrain(_pretrain_cfg(args, enc, e_pre, seed), data=pdata)
    card = json.loads((enc / "card.json").read_text())
    run_b = work / f"mae-ft-{seed}"
    with _Timer() as t_f:
        train(_run_cfg(args, run_b, "staged", str(enc), staged, seed), data=labelled_data())
    rows.append({"seed": seed, "arm": "mae", "epochs": f"{e_pre}+{','.join(map(str, staged))}",
                 "target_s": args.budget_s, "seconds": round(t_p.seconds + t_f.seconds, 1),
                 "wall_s": round(t_p.wall + t_f.wall, 1),
                 "pretrain_seconds": round(t_p.seconds, 1),
                 "mae_loss_first_last": [card["loss_per_epoch"][0], card["loss_per_epoch"][-1]],
                 "test": _score(_predict(run_b, test_ds), test_ds, seed)})

    # ---- the CNN teacher alone (full recipe from scratch on the labelled slices) -----
    run_t = work / f"cnn-{seed}"
    with _Timer() as t_t:
        train(_run_cfg(args, run_t, "full", "none", [e_cnn], seed, model=args.teacher_model,
                       lr=args.cnn_lr), data=labelled_data())
    rows.append({"seed": seed, "arm": "cnn", "epochs": str(e_cnn), "target_s": budget_cn,
                 "seconds": round(t_t.seconds, 1), "wall_s": round(t_t.wall, 1),
                 "test": _score(_predict(run_t, test_ds), test_ds, seed)})

    # ---- arm C: (b)'s encoder, staged fine-tuning distilled from the CNN -------------
    student = f"{args.model}_distilled" if args.distill == "token" else args.model
    run_c = work / f"mae-kd-{seed}"
    with _Timer() as t_c:
        train(_run_cfg(args, run_c, "staged", str(enc), staged_kd, seed, model=student,
                       teacher=str(run_t)), data=labelled_data(), distill_mode=args.distill)
    rows.append({"seed": seed, "arm": "mae+kd",
                 "epochs": f"{e_pre}+{','.join(map(str, staged_kd))}",
                 "target_s": args.budget_s,
                 "seconds": round(t_p.seconds + t_t.seconds + t_c.seconds, 1),
                 "wall_s": round(t_p.wall + t_t.wall + t_c.wall, 1),
                 "pretrain_seconds": round(t_p.seconds, 1),
                 "teacher_seconds": round(t_t.seconds, 1), "student": student,
                 "distill": args.distill,
                 "test": _score(_predict(run_c, test_ds), test_ds, seed)})
    return rows


def _staged_epochs(total: int) -> list[int]:
    """Split ``total`` epochs 20/30/50 % over the head / top / all stages (1 at least)."""
    staged = [max(1, round(total * 0.2)), max(1, round(total * 0.3))]
    staged.append(max(1, total - sum(staged)))
    return staged


if __name__ == "__main__":
    main()
