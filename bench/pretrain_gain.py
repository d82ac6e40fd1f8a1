"""Benchmark: does MAE pretraining (+ distillation from a CNN) pay off when labels are scarce?

Two datasets (``--datasets``): ``ct``, the synthetic CT sample (DICOM + labels.csv;
lesion slices vs normal, 64 px), and ``grey``, a generated class-subfolder folder of
small greyscale PNGs (rings vs filled discs of equal summed brightness among
distractor blobs, at low contrast, 32 px). Patients (one per PNG) are split into a pool
(70 %) and a held-out test set (30 %). Only a fraction of all patients (``--ct-label-
fraction`` 10 %, ``--grey-label-fraction`` 5 %; both classes present) keep their
labels; the rest of the pool is unlabelled. Arms:

* (a) ``scratch``: the ViT, full recipe from random weights on the labelled slices,
  ``--budget-s`` CPU seconds;
* (b) ``mae``: MAE pretraining on every pool slice (labels ignored) for
  ``--pretrain-share`` of the same budget, then the staged recipe (head / top / all)
  from that encoder on the same labelled slices for the rest;
* ``cnn``: the CNN teacher alone (``--teacher-model``, full recipe from scratch on the
  labelled slices, ``--teacher-share`` of the budget);
* (c) ``mae+kd``: (b)'s encoder, then the staged recipe distilled from the teacher
  (``--distill``), on the labelled slices plus the unlabelled pool labelled by the
  teacher (``vitdesk train --teacher RUN --unlabelled SRC``), ``--kd-share`` of the
  budget. Its CPU time counts the pretraining and the teacher.
* (d) ``formula``: formula-driven supervised pretraining (``vitdesk pretrain --formula``:
  the ViT classifies ``--formula-classes`` generated contour or fractal formulas, no
  data at all) for ``--pretrain-share`` of the budget, then the staged recipe like (b).

``--arms`` picks the arms: ``scratch`` always runs (every comparison needs it), and
``mae``, ``cnn`` and ``mae+kd`` run together (naming any of them runs all three).

Epoch counts come from one-/three-epoch probes of each kind of work (process CPU
time; use ``--threads 1``). Held-out slice accuracy and ROC AUC come with 95 %
bootstrap intervals that resample patients, per seed (each seed draws its own split
and labelled patients), and the paired differences (b) - (a) and (c) - teacher are
bootstrapped on all seeds' test patients pooled. Prints tables last and writes JSON
to bench/results/pretrain_gain.json.

    .venv/bin/python bench/pretrain_gain.py --quick --threads 1      # ~10 min smoke run
    .venv/bin/python bench/pretrain_gain.py --threads 1 --seeds 0,1  # the numbers in notes
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
            # tiny models on few images: the 3e-4/1e-4 defaults for large pretrained
            # backbones barely move them in the epochs the budget allows
            stage.epochs, stage.lr = n, args.ft_lr
    cfg.device = args.device
    cfg.data.workers = args.workers
    cfg.seed = seed
    cfg.out = str(out)
    return cfg


def _formula_cfg(args, out: Path, epochs: int, seed: int) -> PretrainConfig:
    cfg = _pretrain_cfg(args, out, epochs, seed)
    cfg.formula, cfg.formula_classes = args.formula, args.formula_classes
    cfg.formula_per_class, cfg.base_lr = args.formula_per_class, args.formula_base_lr
    return cfg


def _pretrain_cfg(args, out: Path, epochs: int, seed: int) -> PretrainConfig:
    return PretrainConfig(
        model=args.model, img_size=args.img_size, window=args.window,
        epochs=epochs, batch_size=args.batch_size, base_lr=args.mae_base_lr,
        warmup_epochs=max(1.0, epochs / 10), decoder_dim=args.decoder_dim,
        decoder_depth=args.decoder_depth, decoder_heads=4, seed=seed, device=args.device,
        attention="eager" if args.device == "cpu" else "auto", workers=args.workers,
        out=str(out),
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
    """``with _Timer() as t: ...`` then ``t.seconds`` (the budget's clock) and ``t.wall``.

    On the CPU, budgets are CPU seconds: on a shared machine other jobs stretch wall time
    at random, and with ``--threads 1`` CPU time is what the arm's own work cost. On a
    GPU (``gpu = True``) the host's CPU time says nothing about the kernels: the budget
    is wall time, after a synchronize so queued kernels count.
    """

    gpu = False

    def __enter__(self) -> _Timer:
        self._sync()
        self.c0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.wall = time.perf_counter() - self.t0
        self.seconds = self.wall if self.gpu else time.process_time() - self.c0

    def _sync(self) -> None:
        if self.gpu and torch.cuda.is_available():
            torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a labelled SRC instead of the generated CT sample")
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="synthetic slice size (px)")
    ap.add_argument("--model", default="vit_test_tiny")
    ap.add_argument("--ct-img-size", type=int, default=64)
    ap.add_argument("--grey-img-size", type=int, default=32)
    ap.add_argument("--window", default="lung,mediastinum,bone")
    ap.add_argument("--ct-label-fraction", type=float, default=0.1, help="of all patients")
    ap.add_argument("--grey-label-fraction", type=float, default=0.05, help="of all images")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds per arm for (a) and (b) (180; 45 with --quick): CPU "
                         "seconds on the CPU, wall seconds on a GPU")
    ap.add_argument("--pretrain-share", type=float, default=0.8,
                    help="of (b)'s budget spent on MAE pretraining")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--scratch-lr", type=float, default=1e-3)
    ap.add_argument("--ft-lr", type=float, default=1e-3, help="every stage of (b) and (c)")
    ap.add_argument("--mae-base-lr", type=float, default=1.5e-3)
    ap.add_argument("--decoder-dim", type=int, default=64)
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--datasets", default="ct,grey", help="ct, grey or both (comma list)")
    ap.add_argument("--grey-images", type=int, default=800, help="PNGs in the grey folder")
    ap.add_argument("--grey-amp", type=float, default=35.0, help="target shape contrast")
    ap.add_argument("--teacher-model", default="cnn_test_tiny")
    ap.add_argument("--teacher-share", type=float, default=0.1, help="of the arm budget")
    ap.add_argument("--cnn-lr", type=float, default=1e-2)
    ap.add_argument("--distill", default="soft", choices=["soft", "hard", "token"])
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher term")
    ap.add_argument("--kd-share", type=float, default=0.5,
                    help="(c)'s distillation fine-tuning, as a share of the arm budget")
    ap.add_argument("--formula", default="contours", choices=["contours", "fractals"])
    ap.add_argument("--formula-classes", type=int, default=16)
    ap.add_argument("--formula-per-class", type=int, default=64)
    ap.add_argument("--formula-base-lr", type=float, default=1e-2)
    ap.add_argument("--arms", default="scratch,mae,cnn,mae+kd,formula",
                    help="comma list; scratch always runs, mae/cnn/mae+kd run together")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader workers (a GPU starves on one process's augmentation)")
    ap.add_argument("--quick", action="store_true", help="small data, 45 s per arm, 1 seed")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_gain.json"))
    args = ap.parse_args()
    if args.quick:
        args.patients, args.slices, args.size, args.ct_img_size = 24, 8, 64, 32
        args.grey_images, args.seeds = 240, "0"
    if args.budget_s is None:  # an explicit --budget-s wins over --quick's
        args.budget_s = 45.0 if args.quick else 180.0
    if args.threads:
        torch.set_num_threads(args.threads)
    _Timer.gpu = args.device != "cpu" and torch.cuda.is_available()
    work = Path(tempfile.mkdtemp(prefix="vitdesk-pretrain-gain-"))
    try:
        rows, pooled = _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "bench": "pretrain_gain", "args": vars(args),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "budget_clock": "wall" if _Timer.gpu else "process_cpu", "rows": rows, "pooled": pooled,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    unit = "wall s" if _Timer.gpu else "CPU s"
    print(f"\n{'data':<5} {'seed':>4} {'arm':<8} {'epochs':<16} {unit:>7} "
          f"{'test acc [95% CI]':<24} {'test AUC [95% CI]':<24} majority")
    for r in rows:
        a, u = r["test"]["accuracy"], r["test"]["auc"]
        print(f"{r['dataset']:<5} {r['seed']:>4} {r['arm']:<8} {r['epochs']:<16} "
              f"{r['seconds']:>7.1f} {_ci(a):<24} {_ci(u):<24} "
              f"{r['test']['majority_accuracy']:.3f}")
    print("\npaired differences, every seed's held-out patients pooled (patient bootstrap):")
    for name, block in pooled.items():
        for comp, est in block.items():
            print(f"{name:<5} {comp:<18} accuracy {_ci(est['accuracy'], signed=True):<26} "
                  f"AUC {_ci(est['auc'], signed=True)}")
    print(f"wrote {args.out}")


def _ci(e: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(e['value'])} [{f.format(e['lo'])}, {f.format(e['hi'])}]"


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


def _bench(args, work: Path) -> tuple[list[dict], dict]:
    rows: list[dict] = []
    pooled: dict[str, dict] = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        a = argparse.Namespace(**vars(args))
        if name == "ct":
            src = args.data
            if src is None:
                src = work / "sample"
                generate_sample(src, patients=args.patients, slices=args.slices,
                                size=args.size, seed=0)
            a.img_size, a.label_fraction = args.ct_img_size, args.ct_label_fraction
        elif name == "grey":
            src = write_grey_folder(work / "grey", args.grey_images, size=48, seed=0,
                                    amp=args.grey_amp)
            a.img_size, a.label_fraction = args.grey_img_size, args.grey_label_fraction
        else:
            raise SystemExit(f"unknown dataset '{name}': use ct or grey")
        records = load_records(src)
        preds: dict[str, list] = {}
        for seed in [int(s) for s in args.seeds.split(",")]:
            seed_rows, seed_preds = _one_seed(a, work / name, records, seed)
            rows += [{"dataset": name, **r} for r in seed_rows]
            for arm, (y, probs, patients) in seed_preds.items():
                # a patient is (seed, id): every seed draws its own split
                preds.setdefault(arm, []).append((y, probs, [f"{seed}:{p}" for p in patients]))
        pooled[name] = _paired(preds)
    return rows, pooled


def _paired(preds: dict[str, list]) -> dict:
    """(b) - (a) and (c) - teacher on the pooled held-out slices, patient-paired bootstrap."""
    def cat(arm):
        y = np.concatenate([p[0] for p in preds[arm]])
        probs = np.concatenate([p[1] for p in preds[arm]])
        clusters = np.concatenate([np.asarray(p[2]) for p in preds[arm]])
        return y, probs, clusters

    out = {}
    for label, new, ref in (("mae - scratch", "mae", "scratch"),
                            ("mae+kd - cnn", "mae+kd", "cnn"),
                            ("mae+kd - scratch", "mae+kd", "scratch"),
                            ("formula - scratch", "formula", "scratch")):
        if new not in preds or ref not in preds:
            continue
        y, p_new, clusters = cat(new)
        y_ref, p_ref, _ = cat(ref)
        assert np.array_equal(y, y_ref)  # the same test slices in the same order
        k = p_new.shape[1]
        both = np.concatenate([p_new, p_ref], axis=1)  # one row per slice: both arms

        def acc_diff(yy, pp, k=k):
            return _accuracy(yy, pp[:, :k]) - _accuracy(yy, pp[:, k:])

        def auc_diff(yy, pp, k=k):
            return roc_auc(yy, pp[:, :k]) - roc_auc(yy, pp[:, k:])

        est = bootstrap({"accuracy": acc_diff, "auc": auc_diff}, y, both, clusters=clusters,
                        n_boot=2000, seed=0)
        out[label] = {m: e.to_dict() for m, e in est.items()}
    return out


def _one_seed(args, work: Path, records: list, seed: int) -> tuple[list[dict], dict]:
    classes = classes_of(records)
    window = WindowSpec.parse(args.window)
    mean, std = model_norm_stats(args.model)
    n_all = len({r.patient for r in records})
    splits = split_by_patient(records, fractions=(0.7, 0.0, 0.3), seed=seed)
    pool, test = splits["train"], splits["test"]
    labelled = _pick_labelled(pool, max(2, int(round(args.label_fraction * n_all))), seed)
    in_labelled = {(r.path, r.frame) for r in labelled}
    unlabelled = [dataclasses.replace(r, label=None) for r in pool]
    aug = AugmentConfig(seed=seed)
    test_ds = SliceDataset(test, classes, window, args.img_size, mean, std)
    pool_ds = SliceDataset(unlabelled, [], window, args.img_size, mean, std,
                           augment=AugmentConfig(rotate_deg=5.0, scale=(0.9, 1.2), hu_shift=0.0,
                                                 hu_scale=0.0, seed=seed))
    pdata = PretrainData(pool_ds, fingerprint(unlabelled), len({r.patient for r in unlabelled}))
    # (c)'s extra images: the pool without the labelled slices, with training augmentation
    rest_ds = SliceDataset([r for r in unlabelled if (r.path, r.frame) not in in_labelled],
                           classes, window, args.img_size, mean, std, augment=aug)
    print(f"seed {seed}: {len({r.patient for r in labelled})} labelled patients "
          f"({len(labelled)} slices), pool {len(pool)} slices, test {len(test)} slices "
          f"({len({r.patient for r in test})} patients)", flush=True)

    labelled_ds = SliceDataset(labelled, classes, window, args.img_size, mean, std, augment=aug)
    for ds in (labelled_ds, pool_ds, test_ds, rest_ds):  # fill the caches: no arm reads disk
        for i in range(len(ds)):
            ds[i]

    def labelled_data(with_rest: bool = False) -> TrainData:
        return TrainData(labelled_ds, None, classes, unlabelled=rest_ds if with_rest else None)

    # ---- calibrate: fixed and per-epoch CPU seconds of each kind of work --------------
    probes = iter(range(10**6))

    def probe(kind: str, n: int) -> float:
        out = work / f"probe-{kind}-{seed}-{next(probes)}"
        with _Timer() as t:
            if kind == "ft":
                train(_run_cfg(args, out, "full", "none", [n], seed), data=labelled_data())
            elif kind == "mae":
                pretrain(_pretrain_cfg(args, out, n, seed), data=pdata)
            elif kind == "formula":
                pretrain(_formula_cfg(args, out, n, seed))
            elif kind == "cnn":
                train(_run_cfg(args, out, "full", "none", [n], seed, model=args.teacher_model,
                               lr=args.cnn_lr), data=labelled_data())
            else:  # "kd": the student on labelled + teacher-labelled images
                train(_run_cfg(args, out, "full", "none", [n], seed, teacher=str(teacher_probe)),
                      data=labelled_data(with_rest=True), distill_mode=args.distill)
        return t.seconds

    teacher_probe = work / f"probe-teacher-{seed}"
    train(_run_cfg(args, teacher_probe, "full", "none", [1], seed, model=args.teacher_model,
                   lr=args.cnn_lr), data=labelled_data())
    arms = set(args.arms.split(","))
    mae_group = bool(arms & {"mae", "cnn", "mae+kd"})
    kinds = ["ft", *(["mae", "cnn", "kd"] if mae_group else []),
             *(["formula"] if "formula" in arms else [])]
    cost = {}
    for kind in kinds:
        probe(kind, 1)  # warm-up: imports and allocator growth
        one, three = probe(kind, 1), probe(kind, 3)
        per = max((three - one) / 2, one / 3)  # marginal epoch; never below a third (noise)
        cost[kind] = (per, max(one - per, 0.0))
    print(f"calibration ({'wall' if _Timer.gpu else 'CPU'} s/epoch + fixed): " + ", ".join(
        f"{k} {per:.2f} + {fix:.1f}" for k, (per, fix) in cost.items()), flush=True)

    def epochs(kind: str, budget: float, least: int = 1) -> int:
        per, fix = cost[kind]
        return max(least, int((budget - fix) / per))

    b = args.budget_s
    e_scratch = epochs("ft", b)
    staged = _staged_epochs(epochs("ft", b * (1 - args.pretrain_share), least=3))
    rows, preds = [], {}

    def record(arm: str, run: Path, epochs_text: str, seconds: float, wall: float,
               **extra) -> None:
        probs = _predict(run, test_ds)
        rows.append({"seed": seed, "arm": arm, "epochs": epochs_text,
                     "seconds": round(seconds, 1), "wall_s": round(wall, 1), **extra,
                     "test": _score(probs, test_ds, seed)})
        preds[arm] = (np.asarray(test_ds.targets), probs, [r.patient for r in test_ds.records])
        t = rows[-1]["test"]
        print(f"  {arm:<8} {epochs_text:<16} {seconds:6.1f} s  acc {_ci(t['accuracy'])}  "
              f"AUC {_ci(t['auc'])}", flush=True)

    # ---- (a) from scratch, full recipe ----------------------------------------------
    run_a = work / f"scratch-{seed}"
    with _Timer() as t_a:
        train(_run_cfg(args, run_a, "full", "none", [e_scratch], seed), data=labelled_data())
    record("scratch", run_a, str(e_scratch), t_a.seconds, t_a.wall)

    # ---- (d) formula-driven pretraining (no data), then staged fine-tuning ------------
    if "formula" in arms:
        e_fml = epochs("formula", b * args.pretrain_share)
        fml = work / f"formula-{seed}"
        with _Timer() as t_p:
            pretrain(_formula_cfg(args, fml, e_fml, seed))
        card = json.loads((fml / "card.json").read_text())
        run_d = work / f"formula-ft-{seed}"
        with _Timer() as t_f:
            train(_run_cfg(args, run_d, "staged", str(fml), staged, seed), data=labelled_data())
        record("formula", run_d, f"{e_fml}+{','.join(map(str, staged))}",
               t_p.seconds + t_f.seconds, t_p.wall + t_f.wall,
               pretrain_seconds=round(t_p.seconds, 1),
               formula_loss_first_last=[card["loss_per_epoch"][0], card["loss_per_epoch"][-1]])
    if not mae_group:
        return rows, preds

    # ---- (b) MAE on the pool, then staged fine-tuning ---------------------------------
    e_pre = epochs("mae", b * args.pretrain_share)
    e_cnn = epochs("cnn", b * args.teacher_share)
    staged_kd = _staged_epochs(epochs("kd", b * args.kd_share, least=3))
    enc = work / f"mae-{seed}"
    with _Timer() as t_p:
        pretrain(_pretrain_cfg(args, enc, e_pre, seed), data=pdata)
    card = json.loads((enc / "card.json").read_text())
    run_b = work / f"mae-ft-{seed}"
    with _Timer() as t_f:
        train(_run_cfg(args, run_b, "staged", str(enc), staged, seed), data=labelled_data())
    record("mae", run_b, f"{e_pre}+{','.join(map(str, staged))}", t_p.seconds + t_f.seconds,
           t_p.wall + t_f.wall, pretrain_seconds=round(t_p.seconds, 1),
           mae_loss_first_last=[card["loss_per_epoch"][0], card["loss_per_epoch"][-1]])

    # ---- the CNN teacher alone (full recipe from scratch on the labelled slices) -------
    run_t = work / f"cnn-{seed}"
    with _Timer() as t_t:
        train(_run_cfg(args, run_t, "full", "none", [e_cnn], seed, model=args.teacher_model,
                       lr=args.cnn_lr), data=labelled_data())
    record("cnn", run_t, str(e_cnn), t_t.seconds, t_t.wall)

    # ---- (c) (b)'s encoder, staged fine-tuning distilled from the CNN, which also labels
    # the unlabelled pool (``train --teacher RUN --unlabelled SRC``) -------------------
    student = f"{args.model}_distilled" if args.distill == "token" else args.model
    run_c = work / f"mae-kd-{seed}"
    with _Timer() as t_c:
        train(_run_cfg(args, run_c, "staged", str(enc), staged_kd, seed, model=student,
                       teacher=str(run_t)), data=labelled_data(with_rest=True),
              distill_mode=args.distill)
    record("mae+kd", run_c, f"{e_pre}+{','.join(map(str, staged_kd))}",
           t_p.seconds + t_t.seconds + t_c.seconds, t_p.wall + t_t.wall + t_c.wall,
           pretrain_seconds=round(t_p.seconds, 1), teacher_seconds=round(t_t.seconds, 1),
           student=student, distill=args.distill, unlabelled_images=len(rest_ds))
    return rows, preds


def _staged_epochs(total: int) -> list[int]:
    """Split ``total`` epochs about 2/10/88 % over the head / top / all stages.

    The head stage only has to align a fresh head before the backbone moves (LP-FT); on
    a few dozen labelled images a long head-only stage memorises them and leaves the
    backbone little gradient (measured: 10 % head epochs cost 3 points of accuracy).
    """
    staged = [max(1, round(total * 0.02)), max(1, round(total * 0.1))]
    staged.append(max(1, total - sum(staged)))
    return staged


if __name__ == "__main__":
    main()
