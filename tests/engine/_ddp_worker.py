"""Entry point of one process of the 2-process gloo DDP test (spawned, so importable)."""

from __future__ import annotations

import os
from pathlib import Path


def worker(rank: int, world: int, port: int, out: str, report_dir: str) -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from tests.engine._synth import data, tiny_cfg
    from vitdesk.engine import trainer as trainer_mod
    from vitdesk.engine.run import train

    # record what each rank's model ends with, to check DDP kept them in sync
    seen = {}
    original = trainer_mod.Trainer.fit

    def fit(self):
        state = original(self)
        seen["sum"] = float(sum(p.double().sum() for p in self.model.parameters()))
        seen["val_batches"] = len(self._val_indices())
        return state

    trainer_mod.Trainer.fit = fit
    cfg = tiny_cfg(out, epochs=2, batch=8)
    cfg.device = "cpu"
    train(cfg, data=data(32, 12))
    Path(report_dir, f"rank{rank}.txt").write_text(f"{seen['sum']!r} {seen['val_batches']}")
