"""Benchmark: numbers a clinician can trust, on a trained run of the synthetic CT sample
and of a greyscale image folder.

For each data set: train a small run, then measure on its held-out test split and on
shifted copies of new patients (CT: +300 HU, Gaussian noise of 150 HU, the sample
generator's scanner profiles B and C; images: +60 grey levels):

- shift alarm rate (nominal 5 %) in- and out-of-distribution and the AUROC of the
  shifted cases against held-out in-distribution ones; reference in the same run: the
  old in-sample threshold (95th percentile of the training features' own distances);
- ECE before and after temperature scaling (test split), and the temperature against
  netcal's fit on the same validation probabilities (when netcal is installed);
- split-conformal coverage and refer rate at alpha = 0.1 (LAC and APS).

Prints a table last and writes JSON (default bench/results/trust.json).

    .venv/bin/python bench/trust.py [--patients 24] [--slices 8]
        [--images 80] [--epochs 12] [--out bench/results/trust.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _hu_copy(src: Path, dst: Path, offset: float, noise: float, seed: int = 0) -> Path:
    """A copy of a DICOM sample with every slice's HU offset and/or noised."""
    import pydicom

    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for p in sorted(dst.rglob("*.dcm")):
        ds = pydicom.dcmread(p)
        ds.RescaleIntercept = float(ds.RescaleIntercept) + offset
        if noise:
            arr = ds.pixel_array.astype(np.int32)
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            arr = arr + np.rint(rng.normal(0, noise / slope, arr.shape)).astype(np.int32)
            info = np.iinfo(ds.pixel_array.dtype)
            ds.PixelData = np.clip(arr, info.min, info.max).astype(
                ds.pixel_array.dtype).tobytes()
        ds.save_as(p)
    return dst


def _png_copy(src: Path, dst: Path, offset: int) -> Path:
    """A copy of an image folder with every grey level raised by ``offset``."""
    import cv2

    shutil.copytree(src, dst)
    for p in sorted(dst.rglob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int32) + offset
        cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8))
    return dst


def _train(data: Path, out: Path, epochs: int, model: str, img_size: int) -> Path:
    from vitdesk.config import RunConfig, StageConfig
    from vitdesk.engine.run import train

    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size = model, img_size
    cfg.weights.pretrained = "none"
    # a quarter of the patients for validation: calibration, conformal and the shift
    # threshold are all set on them
    cfg.data.source, cfg.data.fractions, cfg.data.batch_size = str(data), [0.5, 0.25, 0.25], 8
    cfg.data.balance = "loss"
    cfg.recipe.kind = "full"
    cfg.recipe.stages = [StageConfig("full", epochs, 2e-3, "all", 1.0)]
    cfg.device, cfg.out, cfg.seed = "cpu", str(out), 0
    return train(cfg)


def _in_sample_rate(run: Path, n_max: int = 512) -> float:
    """The old rule, for reference: threshold at the 95th percentile of the training
    features' own distances; its alarm rate on the run's test split."""
    from vitdesk.analysis.shift import extract_features
    from vitdesk.data.dataset import SliceDataset
    from vitdesk.data.splits import load_split
    from vitdesk.engine.run import load_run

    lr = load_run(run)
    splits = load_split(run / "split.json")

    def feats(records: list) -> np.ndarray:
        records = records[:n_max]
        ds = SliceDataset(records, lr.classes, lr.window, lr.img_size, lr.mean,
                          lr.std, channels=3, augment=None, cache=False)
        batches = (torch.stack([ds[j][0] for j in range(i, min(i + 32, len(ds)))])
                   for i in range(0, len(ds), 32))
        return extract_features(lr.model, batches)

    from scipy.linalg import pinvh
    from sklearn.covariance import LedoitWolf

    tf, ef = feats(splits["train"]), feats(splits["test"])
    lw = LedoitWolf().fit(tf)
    prec = pinvh(lw.covariance_)

    def dist(f: np.ndarray) -> np.ndarray:
        d = f - tf.mean(0)
        return np.sqrt(np.einsum("nd,de,ne->n", d, prec, d))

    return float((dist(ef) > np.percentile(dist(tf), 95)).mean())


def _netcal_temperature(run: Path) -> float | None:
    from vitdesk.engine.calibration import validation_probs
    from vitdesk.engine.run import load_run

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from netcal.scaling import TemperatureScaling
    except ImportError:
        return None
    y, p = validation_probs(load_run(run))
    ts = TemperatureScaling()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts.fit(p.astype(np.float64), y)  # netcal silently returns 1 on float32 input
    return 1.0 / float(np.ravel(ts.temperature)[0])


def measure(name: str, run: Path, ood: dict[str, Path], new_in: Path) -> dict:
    """Every trust number of one trained run."""
    from vitdesk.analysis.conformal import evaluate_sets, run_conformal
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.engine.run import load_run

    kw = dict(robustness=False, fairness=False, attention_samples=0, n_boot=300,
              shift_train_cases=512, device="cpu")
    t0 = time.perf_counter()
    ev = evaluate_run(run, conformal_alpha=0.1, **kw)
    # APS on the same calibrated probabilities (evaluate scored LAC)
    aps = run_conformal(load_run(run), ev.calibration["temperature"], 0.1, "aps")
    aps_res = (evaluate_sets(aps, ev.plain_probs, ev.labels, ev.patients, n_boot=300)
               if aps is not None else None)
    shift = {"test split": ev.shift.to_dict()}
    new = evaluate_run(run, new_in, conformal_alpha=None, **kw)
    shift["new patients"] = new.shift.to_dict()
    for label, folder in ood.items():
        shift[label] = evaluate_run(run, folder, conformal_alpha=None, **kw).shift.to_dict()
    for d in shift.values():
        d.pop("outliers", None)
    return {
        "dataset": name, "n_test_slices": ev.n_slices, "n_test_patients": ev.n_patients,
        "slice_accuracy": ev.metrics.slice.estimates["accuracy"].value,
        "shift": shift, "shift_in_sample_reference_rate": _in_sample_rate(run),
        "calibration": {k: v for k, v in ev.calibration.items() if not k.startswith("bins")},
        "netcal_temperature": _netcal_temperature(run),
        "conformal_lac": ev.conformal.to_dict() if ev.conformal is not None else None,
        "conformal_aps": aps_res.to_dict() if aps_res is not None else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _rows(r: dict) -> list[tuple[str, str, str]]:
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [("slice accuracy [p >= 0.5] (test)", f(r["slice_accuracy"]), "")]
    for label, d in r["shift"].items():
        rows.append((f"shift alarm rate: {label}",
                     f"{f(d['fraction_above'])} (AUROC {f(d.get('auroc'))})",
                     f"expected {f(d['expected_rate'])}, ref. {d['reference']} "
                     f"n={d['n_reference']}"))
    rows.append(("shift alarm rate, old in-sample threshold (test)",
                 f(r["shift_in_sample_reference_rate"]), "reference (biased)"))
    c = r["calibration"]
    rows.append(("ECE before -> after temperature (test)",
                 f"{f(c['ece_before'])} -> {f(c['ece_after'])}",
                 f"T={f(c['temperature'])}"
                 + ("" if c.get("applied", True) else
                    f" (fit {f(c.get('fitted_temperature'))} not applied: worse on held-out "
                    "validation patients)")
                 + f", netcal T={f(r['netcal_temperature'])}"))
    for key in ("conformal_lac", "conformal_aps"):
        k = r.get(key)
        if k:
            rows.append((f"{k['method'].upper()} alpha 0.1: coverage / refer rate",
                         f"{f(k['coverage'])} / {f(k['refer_rate'])}",
                         f"CI {f(k['coverage_ci'][0])}-{f(k['coverage_ci'][1])} / "
                         f"{f(k['refer_rate_ci'][0])}-{f(k['refer_rate_ci'][1])}, "
                         f"n_cal={k['n_calibration']}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="CT slice rows = columns")
    ap.add_argument("--images", type=int, default=80, help="PNG images per class")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--model", default="vit_test_tiny")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "trust.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vitdesk.imaging.synthetic import generate_sample

    results = []
    with tempfile.TemporaryDirectory(prefix="vitdesk-trust-") as tmp:
        root = Path(tmp)
        ct = generate_sample(root / "ct", patients=args.patients, slices=args.slices,
                             size=args.size, seed=0).out_dir
        new_ct = generate_sample(root / "ct_new", patients=max(4, args.patients // 3),
                                 slices=args.slices, size=args.size, seed=7).out_dir
        run = _train(ct, root / "run_ct", args.epochs, args.model, args.img_size)
        ood = {"+300 HU": _hu_copy(new_ct, root / "ct_offset", 300.0, 0.0),
               "noise 150 HU": _hu_copy(new_ct, root / "ct_noise", 0.0, 150.0)}
        for name in ("B", "C"):  # the same new patients acquired by another site's scanner
            ood[f"scanner {name}"] = generate_sample(
                root / f"ct_scanner_{name}", patients=max(4, args.patients // 3),
                slices=args.slices, size=args.size, seed=7, scanner=name).out_dir
        results.append(measure("synthetic CT", run, ood, new_ct))

        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.pngdata import write_square_pngs

        png = write_square_pngs(root / "png", per_class=args.images, size=48, seed=0)
        new_png = write_square_pngs(root / "png_new", per_class=max(10, args.images // 3),
                                    size=48, seed=7)
        run = _train(png, root / "run_png", args.epochs, args.model, args.img_size)
        results.append(measure("greyscale images", run,
                               {"+60 grey": _png_copy(new_png, root / "png_bright", 60)},
                               new_png))
    doc = {"bench": "trust", "settings": vars(args), "results": results,
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out}")
    for r in results:
        print(f"\n{r['dataset']}: {r['n_test_slices']} test slices of "
              f"{r['n_test_patients']} patients")
        rows = _rows(r)
        w = max(len(a) for a, _, _ in rows)
        v = max(len(b) for _, b, _ in rows)
        for a, b, c in rows:
            print(f"  {a:<{w}}  {b:<{v}}  {c}")


if __name__ == "__main__":
    main()
