"""Benchmark: batched TTA (all views in one forward) vs a per-view forward loop.

Same model, same inputs, same 10 views (hflip x {1.0, 0.9, 1.1} zoom + 2 corner
crops). Checks the probabilities agree, reports images/s of both and the ratio.
Prints a table last and writes JSON (default bench/results/tta.json).

    .venv/bin/python bench/tta.py [--model vit_tiny_patch16_224] [--img-sizes 112,224]
        [--batch-sizes 1,4] [--max-batch 16] [--out bench/results/tta_112.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import timm
import torch

from vitdesk.analysis.tta import TTAConfig, tta_predict, tta_predict_loop


def _time_pair(fa, fb, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of two functions, interleaved so both see the same
    machine load (these machines are shared and noisy)."""
    fa(), fb()  # warm-up (allocator, kernels)
    best_a = best_b = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        best_a, best_b = min(best_a, t1 - t0), min(best_b, t2 - t1)
    return best_a, best_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_tiny_patch16_224")
    ap.add_argument("--img-sizes", default="112,224")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch-sizes", default="1,4", help="images per input batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-batch", type=int, default=16, help="images per forward (batched)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tta.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TTAConfig(hflip=True, scales=(1.0, 0.9, 1.1), crops=("tl", "br"),
                       max_batch=args.max_batch)
    rows = []
    cases = [(int(s), int(b)) for s in args.img_sizes.split(",")
             for b in args.batch_sizes.split(",")]
    for size, bs in cases:
        model = timm.create_model(args.model, pretrained=False, num_classes=2, img_size=size)
        model.eval()
        x = torch.randn(args.images, 3, size, size)
        batches = [x[i : i + bs] for i in range(0, len(x), bs)]
        res_b = tta_predict(model, batches, config)
        res_l = tta_predict_loop(model, batches, config)
        max_diff = float(abs(res_b.view_probs - res_l.view_probs).max())
        t_b, t_l = _time_pair(lambda b=batches, m=model: tta_predict(m, b, config),
                              lambda b=batches, m=model: tta_predict_loop(m, b, config),
                              args.repeats)
        rows.append({
            "model": args.model, "img_size": size, "images": args.images,
            "batch_size": bs, "views": len(config.views()), "max_batch": args.max_batch,
            "batched_s": t_b, "loop_s": t_l,
            "batched_img_per_s": args.images / t_b, "loop_img_per_s": args.images / t_l,
            "speedup": t_l / t_b, "max_abs_prob_diff": max_diff,
        })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "timm": timm.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    head = (f"{'model':<22}{'px':>5}{'batch':>6}{'views':>6}{'batched s':>11}{'loop s':>9}"
            f"{'speedup':>9}{'max|dp|':>10}")
    print(head)
    for r in rows:
        print(f"{r['model']:<22}{r['img_size']:>5}{r['batch_size']:>6}{r['views']:>6}{r['batched_s']:>11.3f}"
              f"{r['loop_s']:>9.3f}{r['speedup']:>8.2f}x{r['max_abs_prob_diff']:>10.1e}")


if __name__ == "__main__":
    main()
