"""``last`` is written at a stage's end, on cancel and at most every LAST_CHECKPOINT_S;
the probe times what a run pays beside its steps on the run's own data and disk."""

from __future__ import annotations

import pytest
import torch

from tests.engine._synth import data, tiny_cfg
from vitdesk.engine import trainer as trainer_mod
from vitdesk.engine.checkpoint import load_checkpoint
from vitdesk.engine.events import CheckpointSaved, StepDone
from vitdesk.engine.run import train
from vitdesk.errors import Cancelled
from vitdesk.jobs import CancelToken


def _saved(events, kind):
    return [e for e in events if isinstance(e, CheckpointSaved) and e.kind == kind]


def test_short_epochs_write_last_once_per_stage(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(trainer_mod, "LAST_CHECKPOINT_S", 3600.0)
    events = []
    run = train(tiny_cfg(tmp_path / "run", epochs=4), listeners=[events.append],
                data=data(32, 16))
    assert len(_saved(events, "last")) == 1  # one full stage of 4 epochs: at its end
    last = load_checkpoint(run / "checkpoints", "last")
    assert last.meta["train_state"]["epoch"] == 4 and last.meta["global_step"] == 8
    # with no interval every epoch writes it, as before
    monkeypatch.setattr(trainer_mod, "LAST_CHECKPOINT_S", 0.0)
    events = []
    train(tiny_cfg(tmp_path / "every", epochs=4), listeners=[events.append],
          data=data(32, 16))
    assert len(_saved(events, "last")) == 4


def test_a_cancel_between_writes_still_leaves_a_resumable_last(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(trainer_mod, "LAST_CHECKPOINT_S", 3600.0)
    token = CancelToken()

    def stop(ev):
        if isinstance(ev, StepDone) and ev.global_step == 5:  # in the third epoch
            token.cancel()

    cfg = tiny_cfg(tmp_path / "cut", epochs=4)
    cfg.log_every = 1
    with pytest.raises(Cancelled):
        train(cfg, token, [stop], data=data(32, 16))
    last = load_checkpoint(tmp_path / "cut" / "checkpoints", "last")
    state = last.meta["train_state"]
    assert (state["epoch"], state["batch"], last.meta["global_step"]) == (2, 1, 5)
    train(cfg, data=data(32, 16), resume=True)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints", "last").meta["global_step"] == 8


def test_probe_times_reads_augmentation_and_writes(tmp_path):
    from tests.pngdata import write_square_pngs
    from vitdesk.config import RunConfig
    from vitdesk.engine.plan import data_fingerprint
    from vitdesk.engine.probe import measure_checkpoint_costs, measure_item_costs

    root = write_square_pngs(tmp_path / "d", per_class=6, size=40)
    sampled = []
    data_fingerprint(str(root), sampled=sampled)
    cfg = RunConfig()
    cfg.data.source = str(root)
    read, item, val_item = measure_item_costs(cfg, sampled, 40)
    assert 0 <= read < 1 and 0 < item < 1 and 0 < val_item < 1
    assert val_item <= item * 2  # validation reads the cached, unaugmented image
    writes, last = measure_checkpoint_costs(tmp_path / "out", "vit_test_tiny", 32, 4)
    assert 0 < writes < 5 and 0 < last < 5
    assert not any(p.name.startswith(".vitdesk-probe-") for p in tmp_path.iterdir())
