"""Training throughput: the vitdesk trainer (listeners attached) vs a bare timm loop.

Same model, batch, optimizer (AdamW), loss (label-smoothed CE), gradient clipping and
per-step cosine schedule, data in memory; runs alternate so machine noise hits both.
Also: the sdpa vs eager choice of ``attention = auto`` with both timings, achieved
GFLOP/s (model FLOPs from FlopCounterMode, x3 for forward+backward) against a
same-run 2048x2048 float32 matmul rate. Table printed last; JSON in bench/results/.

    .venv/bin/python bench/train_throughput.py [--steps 6] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdesk.config import RunConfig, StageConfig  # noqa: E402
from vitdesk.engine.events import StepDone  # noqa: E402
from vitdesk.engine.models import (  # noqa: E402
    choose_attention_backend,
    create_model,
    set_attention_backend,
)
from vitdesk.engine.run import TrainData, train  # noqa: E402

MODEL = "vit_tiny_patch16_224"


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def model_flops(img: int, batch: int, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    m = create_model(MODEL, 2, img).to(device)
    x = torch.randn(batch, 3, img, img, device=device)
    with FlopCounterMode(display=False) as fc:
        m(x)
    return float(fc.get_total_flops())  # forward only


def make_data(n: int, img: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, img, img, generator=g), torch.arange(n) % 2)


def run_trainer(ds, img, batch, backend, device, out_root, amp) -> float:
    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size, cfg.model.drop_path = MODEL, img, 0.0
    cfg.model.attention = backend
    cfg.weights.pretrained = "none"
    cfg.data.batch_size, cfg.data.label_smoothing = batch, 0.1
    cfg.recipe.kind = "full"
    cfg.recipe.stages = [StageConfig("full", 1, 1e-4, "all", 1.0)]
    cfg.device = device.type
    cfg.amp = amp
    cfg.log_every = 1  # an event (and a loss sync) every step: the worst case
    cfg.out = tempfile.mkdtemp(dir=out_root)
    stamps: list[float] = []

    def timer(ev):
        if isinstance(ev, StepDone):
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    train(cfg, listeners=[timer], data=TrainData(ds, None, ["a", "b"]))
    return (len(stamps) - 1) * batch / (stamps[-1] - stamps[0])


def run_bare(ds, img, batch, backend, device, amp) -> float:
    from timm.scheduler import CosineLRScheduler

    torch.manual_seed(0)
    model = create_model(MODEL, 2, img).to(device)
    set_attention_backend(model, backend)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    sched = CosineLRScheduler(opt, t_initial=len(ds) // batch, t_in_epochs=False)
    loader = DataLoader(ds, batch_size=batch, shuffle=True)
    model.train()
    stamps = []
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step_update(step + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) * batch / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per timed run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating trainer/bare rounds")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", default="224,112")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off",
                    help="autocast for both loops (the trainer's 'auto' is bf16 on CUDA)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mm = matmul_gflops(device)
    rows = []
    out_root = tempfile.mkdtemp(prefix="vitdesk-bench-")
    for img in (int(s) for s in args.sizes.split(",")):
        ds = make_data(args.steps * args.batch, img)
        probe = create_model(MODEL, 2, img).to(device)
        amp_dtype = torch.bfloat16 if args.amp == "bf16" else None
        attn = choose_attention_backend(probe, ds.tensors[0][: args.batch].to(device), "auto",
                                        amp_dtype)
        backend = attn["backend"]
        fwd = model_flops(img, args.batch, device)
        trainer_r, bare_r = [], []
        for r in range(args.rounds):
            order = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
            for who in order:
                if who == "trainer":
                    trainer_r.append(run_trainer(ds, img, args.batch, backend, device, out_root,
                                                 args.amp))
                else:
                    bare_r.append(run_bare(ds, img, args.batch, backend, device, args.amp))
        t_ips, b_ips = statistics.median(trainer_r), statistics.median(bare_r)
        gflops = 3 * fwd / args.batch * t_ips / 1e9
        rows.append({
            "model": MODEL, "img_size": img, "batch": args.batch, "steps": args.steps,
            "attention": attn, "trainer_img_s": round(t_ips, 2), "bare_img_s": round(b_ips, 2),
            "ratio": round(t_ips / b_ips, 3), "trainer_runs": [round(v, 2) for v in trainer_r],
            "bare_runs": [round(v, 2) for v in bare_r],
            "model_gflop_per_img_fwd_bwd": round(3 * fwd / args.batch / 1e9, 3),
            "achieved_gflop_s": round(gflops, 2), "matmul_gflop_s": round(mm, 2),
            "fraction_of_matmul": round(gflops / mm, 3),
        })
    result = {"device": str(device), "amp": args.amp, "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": rows}
    out = ROOT / "bench" / "results" / f"train_throughput_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\ndevice {device}, torch threads {torch.get_num_threads()}, "
          f"matmul 2048^2 fp32: {mm:.1f} GFLOP/s  -> {out.relative_to(ROOT)}")
    print(f"{'img':>4} {'attn':>6} {'sdpa ms':>8} {'eager ms':>9} {'trainer im/s':>13} "
          f"{'bare im/s':>10} {'ratio':>6} {'GFLOP/s':>8} {'of mm':>6}")
    for r in rows:
        a = r["attention"]
        print(f"{r['img_size']:>4} {a['backend']:>6} {a['sdpa_ms']:>8.1f} {a['eager_ms']:>9.1f} "
              f"{r['trainer_img_s']:>13.2f} {r['bare_img_s']:>10.2f} {r['ratio']:>6.3f} "
              f"{r['achieved_gflop_s']:>8.1f} {r['fraction_of_matmul']:>6.2f}")


if __name__ == "__main__":
    main()
