"""Memory and speed of gradient checkpointing: vit_small_patch16_224, batch 32.

Each case (off / on) runs in a fresh subprocess so its peak RSS (CPU) or CUDA
allocator peak is its own. Reports peak memory, the reduction, and the slowdown
of a training step. Table printed last; JSON in bench/results/.

    .venv/bin/python bench/grad_checkpointing.py [--steps 2] [--batch 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "vit_small_patch16_224"


def child(ckpt: bool, steps: int, batch: int, img: int, device: str) -> dict:
    import resource
    import time

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT))
    from vitdesk.engine.models import create_model, set_attention_backend

    dev = torch.device(device)
    torch.manual_seed(0)
    model = create_model(MODEL, 2, img).to(dev)
    set_attention_backend(model, "sdpa" if dev.type == "cuda" else "eager")
    model.set_grad_checkpointing(ckpt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, img, img, device=dev)
    y = torch.arange(batch, device=dev) % 2
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"grad_checkpointing": ckpt, "step_s": min(times[1:] or times),
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_steps_mib": rss_before}
    if dev.type == "cuda":
        out["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2, help="steps per case (first is warmup)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        res = child(args.child == "on", args.steps, args.batch, args.img, args.device)
        print("RESULT " + json.dumps(res))
        return
    cases = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
               "--batch", str(args.batch), "--img", str(args.img), "--device", args.device,
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ),
                              check=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        cases[mode] = json.loads(line[len("RESULT "):])
    key = "cuda_peak_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    off, on = cases["off"], cases["on"]
    summary = {
        "model": MODEL, "batch": args.batch, "img_size": args.img, "device": args.device,
        "metric": key, "off": off, "on": on,
        "memory_reduction": round(1 - on[key] / off[key], 3),
        "activation_reduction": (
            round(1 - (on[key] - on["rss_before_steps_mib"]) /
                  (off[key] - off["rss_before_steps_mib"]), 3) if key == "peak_rss_mib" else None),
        "slowdown": round(on["step_s"] / off["step_s"], 3),
    }
    out = ROOT / "bench" / "results" / f"grad_checkpointing_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\n{MODEL}, batch {args.batch}, {args.img} px, {args.device} -> "
          f"{out.relative_to(ROOT)}")
    print(f"{'checkpointing':>13} {key:>14} {'before steps':>13} {'step s':>8}")
    for mode in ("off", "on"):
        c = cases[mode]
        print(f"{mode:>13} {c[key]:>14.0f} {c['rss_before_steps_mib']:>13.0f} "
              f"{c['step_s']:>8.2f}")
    act = summary["activation_reduction"]
    act_text = f"{act:.1%}" if act is not None else "-"
    print(f"memory reduction {summary['memory_reduction']:.1%} (activations {act_text}), "
          f"slowdown x{summary['slowdown']:.2f}")


if __name__ == "__main__":
    main()
