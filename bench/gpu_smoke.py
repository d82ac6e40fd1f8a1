"""CUDA smoke check of the engine (run on a GPU machine; not part of the test suite).

Trains a small ViT on synthetic images on CUDA with the staged recipe and
automatic mixed precision, cancels and resumes, loads the run back, runs
batched TTA and attention maps on the GPU, and prints one line per check plus a
table last. Exit 1 if a check fails.

    PYTHONPATH=. python bench/gpu_smoke.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitdesk.config import RunConfig  # noqa: E402
from vitdesk.engine.events import EpochEnded, StepDone  # noqa: E402
from vitdesk.engine.run import TrainData, load_run, train  # noqa: E402
from vitdesk.errors import Cancelled  # noqa: E402
from vitdesk.jobs import CancelToken  # noqa: E402


def squares(n: int, seed: int, size: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.3
    y = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, size - size // 4, (2,), generator=g).tolist()
        x[i, :, r:r + size // 4, c:c + size // 4] += 1.5
    return TensorDataset(x, y)


def config(out: Path, model: str, size: int, device: str) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = model
    cfg.model.img_size = size
    cfg.model.attention = "auto"
    cfg.weights.pretrained = "none"
    cfg.recipe.kind = "staged"
    cfg.recipe.force_staged = True  # random init: staged only to exercise freezing on CUDA
    cfg.set_epochs("1,1,2")
    cfg.data.batch_size = 64
    cfg.device = device
    cfg.amp = "auto"
    cfg.out = str(out)
    return cfg


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda", help="cpu runs a tiny dry run of this script")
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    rows: list[tuple[str, str]] = [
        ("device", torch.cuda.get_device_name() if dev == "cuda" else "cpu")]
    ok = True
    size, model = (224, "vit_tiny_patch16_224") if dev == "cuda" else (32, "vit_test_tiny")
    data = TrainData(squares(512, 0, size), squares(128, 1, size), ["normal", "lesion"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        events: list = []
        t0 = time.perf_counter()
        run = train(config(tmp / "full", model, size, dev), listeners=[events.append], data=data)
        secs = time.perf_counter() - t0
        env = json.loads((run / "env.json").read_text())
        epochs = [e for e in events if isinstance(e, EpochEnded)]
        steps = [e for e in events if isinstance(e, StepDone)]
        rows += [("train seconds", f"{secs:.1f}"),
                 ("env device / amp", f"{env.get('device')} / {env.get('amp')}"),
                 ("attention choice", json.dumps(env.get("attention"))),
                 ("final val acc", f"{epochs[-1].val_acc:.3f}"),
                 ("images/s (last step event)", f"{steps[-1].images_per_s:.0f}" if steps else "-")]
        ok &= dev in str(env.get("device")) and epochs[-1].val_acc > 0.6

        # cancel mid-run, then resume: must finish with the same number of epochs
        token = CancelToken()

        def stop(ev):
            if isinstance(ev, StepDone) and ev.global_step >= 12:
                token.cancel()

        cfg = config(tmp / "part", model, size, dev)
        cfg.log_every = 1
        try:
            train(cfg, token, [stop], data=data)
            rows.append(("cancel", "did not stop"))
            ok = False
        except Cancelled:
            rows.append(("cancel", "stopped, last checkpoint written"))
        resumed = train(config(tmp / "part", model, size, dev), data=data, resume=True)
        hist = (resumed / "history.jsonl").read_text().splitlines()
        rows.append(("resume history lines", str(len(hist))))
        ok &= len(hist) == 4

        loaded = load_run(run, device=dev)
        from vitdesk.analysis.attention import attention_maps
        from vitdesk.analysis.tta import TTAConfig, tta_predict

        x = data.val.tensors[0][:16]
        res = tta_predict(loaded.model, [x], TTAConfig(hflip=True, scales=(0.9, 1.0, 1.1)),
                          device=dev)
        rows.append(("TTA probs sum", f"{float(res.probs.sum(1).mean()):.4f}"))
        ok &= abs(float(res.probs.sum(1).mean()) - 1) < 1e-3
        maps = attention_maps(loaded.model, x[:2].to(dev))
        rows.append(("rollout map shape", str(tuple(maps.rollout.shape))))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
