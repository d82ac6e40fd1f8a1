"""Benchmark: load a 300-slice 512x512 CT series with vitdesk, SimpleITK and plain pydicom.

Writes the series (shuffled file names, so nobody gets sorted input for free)
into a temporary folder, checks the three loaders return the same HU volume,
then times them alternately (ABCABC...) because shared machines are noisy.
Prints a table last and writes ``bench/results/load_series.json``.

    .venv/bin/python bench/load_series.py [--slices 300] [--size 512] [--repeats 3]
                                          [--pool-probe]

``--pool-probe`` also times the header parse of every file in one process against
the best a process pool could do (fork, one worker per CPU, files in chunks of 50,
results not even sent back): vitdesk scans in one process because on 2 CPUs the
pool's lower bound is no faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut

from vitdesk.imaging.dicom import load_series
from vitdesk.imaging.scan import scan_path

RESULTS = Path(__file__).resolve().parent / "results" / "load_series.json"


def write_series(folder: Path, slices: int, size: int) -> None:
    """A smooth synthetic body with noise, written by the sample engineer's writer."""
    from vitdesk.imaging.dicom_write import write_ct_series

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    body = np.where(r < 0.8, 40.0, -1000.0).astype(np.float32)
    hu = np.empty((slices, size, size), np.float32)
    for k in range(slices):
        hu[k] = body + rng.normal(0, 20, (size, size)).astype(np.float32) + k
    paths = write_ct_series(folder, hu, spacing=(1.25, 0.7, 0.7), origin=(-180, -180, -300),
                            rng_seed=0, series_description="bench")
    # Shuffle names so file order says nothing about slice order.
    perm = rng.permutation(len(paths))
    tmp = [p.rename(p.with_name(f"tmp_{i:05d}")) for i, p in enumerate(paths)]
    for i, p in zip(perm, tmp, strict=True):
        p.rename(p.with_name(f"X{i:05d}.dcm"))


def load_vitdesk(folder: Path) -> np.ndarray:
    scan = scan_path(folder)
    (series,) = scan.series
    return load_series(series).hu


def load_sitk(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    return sitk.GetArrayFromImage(img)


def load_pydicom(folder: Path) -> np.ndarray:
    slices = []
    for name in os.listdir(folder):
        ds = pydicom.dcmread(folder / name)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        pos = float(np.dot(np.cross(iop[:3], iop[3:]), np.asarray(ds.ImagePositionPatient, float)))
        slices.append((pos, apply_modality_lut(ds.pixel_array, ds)))
    slices.sort(key=lambda s: s[0])
    return np.stack([s[1] for s in slices]).astype(np.float32)


def second_open(folder: Path, cache_path: Path, repeats: int) -> dict[str, list[float]]:
    """Header scan times: parsing every file vs a second open with a HeaderCache."""
    from vitdesk.imaging.header_cache import HeaderCache

    with HeaderCache(cache_path) as cache:
        scan_path(folder, cache=cache)  # the first open fills the cache
    ref = scan_path(folder)
    times: dict[str, list[float]] = {"first (parse)": [], "second (cache)": []}
    for _ in range(repeats):
        t = time.perf_counter()
        scan_path(folder)
        times["first (parse)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        with HeaderCache(cache_path) as cache:
            again = scan_path(folder, cache=cache)
        times["second (cache)"].append(time.perf_counter() - t)
        n = len(ref.series[0].files)
        assert again.series[0].files == ref.series[0].files and cache.hits == n
    return times


def _classify_chunk(chunk: list[str]) -> list[str]:
    """Parse headers in a worker; only the kinds come back (the pool's lower bound)."""
    from vitdesk.imaging.scan import _classify

    return [_classify(Path(f))[0] for f in chunk]


def pool_probe(folder: Path, repeats: int) -> dict[str, list[float]]:
    """Header parse of every file: one process vs a process pool's lower bound."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from vitdesk.imaging.scan import _classify

    files = sorted(str(f) for f in folder.iterdir())
    chunks = [files[i:i + 50] for i in range(0, len(files), 50)]
    times: dict[str, list[float]] = {"one process": [], "pool lower bound": []}
    for _ in range(repeats):
        t = time.perf_counter()
        for f in files:
            _classify(Path(f))
        times["one process"].append(time.perf_counter() - t)
        t = time.perf_counter()
        with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=mp.get_context("fork")) as ex:
            kinds = [k for c in ex.map(_classify_chunk, chunks) for k in c]
        times["pool lower bound"].append(time.perf_counter() - t)
        assert kinds == ["image"] * len(files)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pool-probe", action="store_true",
                    help="also time a process pool's lower bound for the header parse")
    args = ap.parse_args()

    loaders = {"vitdesk": load_vitdesk, "SimpleITK": load_sitk, "pydicom loop": load_pydicom}
    times: dict[str, list[float]] = {k: [] for k in loaders}
    with tempfile.TemporaryDirectory(prefix="vitdesk-bench-") as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        write_series(folder, args.slices, args.size)
        print(f"wrote {args.slices} slices {args.size}x{args.size} in "
              f"{time.perf_counter() - t0:.1f} s")
        # Warm-up + agreement check (file cache warm for everyone afterwards).
        ref = None
        for name, fn in loaders.items():
            vol = np.asarray(fn(folder), np.float32)
            if ref is None:
                ref = vol
            else:
                assert vol.shape == ref.shape, f"{name}: shape {vol.shape} != {ref.shape}"
                assert np.array_equal(vol, ref), f"{name}: HU differ from vitdesk"
            del vol
        del ref
        print("all three loaders return identical HU volumes")
        for _ in range(args.repeats):
            for name, fn in loaders.items():
                t = time.perf_counter()
                fn(folder)
                times[name].append(time.perf_counter() - t)

        cache_times = second_open(folder, Path(tmp) / "header_cache.sqlite", args.repeats)
        pool_times = pool_probe(folder, args.repeats) if args.pool_probe else {}

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "slices": args.slices, "size": args.size, "repeats": args.repeats,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "pydicom": pydicom.__version__, "SimpleITK": sitk.Version_VersionString(),
        "seconds": times, "median_s": med,
        "speedup_vs_sitk": med["SimpleITK"] / med["vitdesk"],
        "speedup_vs_pydicom_loop": med["pydicom loop"] / med["vitdesk"],
        # best-of-N is less sensitive to other jobs on a shared machine than the median
        "speedup_vs_sitk_best": min(times["SimpleITK"]) / min(times["vitdesk"]),
        "speedup_vs_pydicom_loop_best": min(times["pydicom loop"]) / min(times["vitdesk"]),
        "load_average": os.getloadavg(),
        "header_scan_s": cache_times,
        "second_open_speedup": statistics.median(cache_times["first (parse)"])
        / statistics.median(cache_times["second (cache)"]),
    }
    if pool_times:
        result["header_parse_pool_probe_s"] = pool_times
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {RESULTS}")
    print("header scan of the folder, first open vs second open with the workspace cache:")
    for name, ts in cache_times.items():
        print(f"  {name:<16}{statistics.median(ts):>8.3f} s median")
    print(f"  second open {result['second_open_speedup']:.1f}x faster\n")
    if pool_times:
        print("header parse of every file, one process vs a process pool's lower bound:")
        for name, ts in pool_times.items():
            print(f"  {name:<18}{statistics.median(ts):>8.3f} s median{min(ts):>8.3f} s min")
        print()
    print(f"load average {result['load_average'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'loader':<14}{'median s':>10}{'min s':>10}{'slices/s':>10}{'vitdesk x':>11}"
          f"{'best x':>8}")
    best = min(times["vitdesk"])
    for name in loaders:
        m = med[name]
        print(f"{name:<14}{m:>10.3f}{min(times[name]):>10.3f}{args.slices / m:>10.0f}"
              f"{m / med['vitdesk']:>11.2f}{min(times[name]) / best:>8.2f}")



if __name__ == "__main__":
    main()
