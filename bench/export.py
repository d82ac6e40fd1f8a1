"""Inference throughput of an exported model: PyTorch eager (the reference, same run) vs
TorchScript, ONNX Runtime fp32 and ONNX Runtime int8 (dynamic quantisation), at batch 1
and 16, on this CPU.

Models: ``vit_tiny_patch16_224`` at 224 px (random init: no download) and the test model
``vit_test_tiny`` at 32 px. The graphs are written by vitdesk's own exporter
(:mod:`vitdesk.engine.export`). Every backend gets the same thread count; timings
alternate between backends round by round so machine noise hits all of them; the
median of the rounds is reported. Also: agreement of the int8 argmax with fp32 and the
largest probability difference on the same random inputs. Table printed last; JSON in
bench/results/.

    .venv/bin/python bench/export.py [--threads 1] [--rounds 5] [--iters 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdesk.engine.export import write_int8, write_onnx, write_torchscript  # noqa: E402
from vitdesk.engine.exported_model import ort_session, softmax  # noqa: E402
from vitdesk.engine.models import create_model  # noqa: E402

MODELS = [("vit_tiny_patch16_224", 224), ("vit_test_tiny", 32)]
BATCHES = (1, 16)
BACKENDS = ("eager", "torchscript", "ort_fp32", "ort_int8")


def _runners(model: torch.nn.Module, folder: Path, img: int, threads: int) -> dict:
    onnx_path, int8_path, ts_path = folder / "m.onnx", folder / "m.int8.onnx", folder / "m.pt"
    write_onnx(model, onnx_path, img)
    write_int8(onnx_path, int8_path)
    write_torchscript(model, ts_path, img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(ts_path)).eval()
    fp32, int8 = ort_session(onnx_path, threads), ort_session(int8_path, threads)

    def torch_run(m):
        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return m(torch.from_numpy(x)).numpy()
        return run

    return {"eager": torch_run(model), "torchscript": torch_run(ts),
            "ort_fp32": lambda x: fp32.run(None, {"input": x})[0],
            "ort_int8": lambda x: int8.run(None, {"input": x})[0]}


def _time(fn, x: np.ndarray, iters: int) -> float:
    """Images per second of ``iters`` calls."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return iters * len(x) / (time.perf_counter() - t0)


def bench_model(name: str, img: int, threads: int, rounds: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, 2, img).eval()
    rng = np.random.default_rng(0)
    out: dict = {"model": name, "img_size": img,
                 "parameters": int(sum(p.numel() for p in model.parameters()))}
    with tempfile.TemporaryDirectory() as tmp:
        runners = _runners(model, Path(tmp), img, threads)
        x_check = rng.standard_normal((64, 3, img, img)).astype(np.float32)
        p32 = softmax(np.concatenate([runners["ort_fp32"](x_check[i:i + 16])
                                      for i in range(0, 64, 16)]))
        p8 = softmax(np.concatenate([runners["ort_int8"](x_check[i:i + 16])
                                     for i in range(0, 64, 16)]))
        pe = softmax(runners["eager"](x_check))
        out["fp32_max_abs_diff_vs_eager"] = float(np.abs(p32 - pe).max())
        out["int8_agreement_with_fp32"] = float((p8.argmax(1) == p32.argmax(1)).mean())
        out["int8_max_abs_prob_diff"] = float(np.abs(p8 - p32).max())
        for batch in BATCHES:
            x = rng.standard_normal((batch, 3, img, img)).astype(np.float32)
            n = max(1, iters * (4 if batch == 1 else 1))
            for fn in runners.values():  # warm-up: first calls allocate and pick kernels
                fn(x)
                fn(x)
            samples: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for _ in range(rounds):
                for b in BACKENDS:
                    samples[b].append(_time(runners[b], x, n))
            med = {b: statistics.median(v) for b, v in samples.items()}
            out[f"batch{batch}"] = {b: {"images_per_s": med[b],
                                        "speedup_vs_eager": med[b] / med["eager"],
                                        "rounds": samples[b]} for b in BACKENDS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads, every backend")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="calls per round (x4 at batch 1)")
    ap.add_argument("--models", default=",".join(n for n, _ in MODELS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    chosen = [(n, s) for n, s in MODELS if n in args.models.split(",")]
    results = [bench_model(n, s, args.threads, args.rounds, args.iters) for n, s in chosen]
    doc = {"bench": "export", "threads": args.threads, "rounds": args.rounds,
           "iters": args.iters, "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "machine": platform.machine(),
           "processor": platform.processor(), "results": results}
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"export-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"JSON: {path}")
    print(f"\nimages/s, median of {args.rounds} rounds, {args.threads} thread(s); "
          "speed-up vs PyTorch eager in brackets")
    head = f"{'model':<22}{'px':>4}{'batch':>6}" + "".join(f"{b:>20}" for b in BACKENDS)
    print(head)
    print("-" * len(head))
    for r in results:
        for batch in BATCHES:
            row = r[f"batch{batch}"]
            cells = "".join(f"{row[b]['images_per_s']:>11.1f} ({row[b]['speedup_vs_eager']:.2f}x)"
                            for b in BACKENDS)
            print(f"{r['model']:<22}{r['img_size']:>4}{batch:>6}{cells}")
        print(f"{'':<32}int8 vs fp32: argmax agreement {r['int8_agreement_with_fp32']:.3f}, "
              f"max |dp| {r['int8_max_abs_prob_diff']:.4f}; fp32 vs eager max |dp| "
              f"{r['fp32_max_abs_diff_vs_eager']:.1e}")


if __name__ == "__main__":
    main()
