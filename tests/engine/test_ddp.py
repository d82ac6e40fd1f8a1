"""Two CPU processes with gloo: DDP trains in sync and only rank 0 writes the run folder."""

from __future__ import annotations

import json
import socket

import pytest
import timm  # noqa: F401  (imported before forking so the workers share them)
import torch.distributed as dist
import torch.multiprocessing as mp

import vitdesk.engine.run  # noqa: F401
from tests.engine._ddp_worker import worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_gloo_run_finishes_and_rank0_writes(tmp_path):
    out, reports = tmp_path / "run", tmp_path / "reports"
    reports.mkdir()
    # fork: the children inherit the imported torch/timm (spawn re-imports them: slow)
    ctx = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(worker, args=(2, _free_port(), str(out), str(reports)), nprocs=2,
                       join=True, start_method=ctx)
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 2  # one line per epoch, not one per rank
    # 32 samples, batch 8, 2 ranks: 2 optimizer steps per epoch
    assert [h["step"] for h in hist] == [2, 4]
    assert all(0.0 <= h["val_acc"] <= 1.0 for h in hist)
    assert (out / "checkpoints" / "last.json").is_file() and (out / "config.toml").is_file()
    env = json.loads((out / "env.json").read_text())
    assert env["world_size"] == 2
    r0, r1 = ((reports / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert float(r0[0]) == pytest.approx(float(r1[0]), rel=1e-9)  # weights in sync
    assert int(r0[1]) + int(r1[1]) == 12  # the val set is split, not duplicated
