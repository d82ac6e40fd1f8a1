"""Training end to end: learning, events, resume, cancel, bad input, run folder safety."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.engine._synth import CLASSES, data, squares, tiny_cfg
from vitdesk.config import StageConfig
from vitdesk.engine.checkpoint import load_checkpoint
from vitdesk.engine.events import EpochEnded, StageStarted, StepDone, TrainingDone
from vitdesk.engine.run import TrainData, load_run, train
from vitdesk.errors import Cancelled, CheckpointError, ConfigError, DataError, ModelError
from vitdesk.jobs import CancelToken, Notice


def _history(run):
    return [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tiny_vit_learns_the_synthetic_finding(tmp_path):
    events = []
    cfg = tiny_cfg(tmp_path / "run", epochs=4, lr=2e-3)
    cfg.log_every = 2
    run = train(cfg, listeners=[events.append], data=data(128, 64))
    hist = _history(run)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[-1]["val_acc"] >= 0.85  # chance is 0.5
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # notices come first (here: 8-px patches at 32 px are a coarse 4x4 grid)
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("4x4 grid" in n for n in notes)
    kinds = [type(e) for e in events if not isinstance(e, Notice)]
    assert kinds[0] is StageStarted and kinds[-1] is TrainingDone
    steps = [e for e in events if isinstance(e, StepDone)]
    assert steps and all(isinstance(e.loss, float) and e.images_per_s > 0 for e in steps)
    assert [e.global_step for e in steps][:2] == [2, 4]
    for e in events:  # plain data only
        for v in vars(e).values():
            assert not isinstance(v, torch.Tensor)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and metrics["best_val_acc"] >= 0.85
    env = json.loads((run / "env.json").read_text())
    assert env["attention"]["backend"] == "eager" and env["seed"] == 0
    loaded = load_run(run)
    assert loaded.classes == CLASSES and not loaded.model.training
    x, y = squares(32, 5).tensors
    with torch.no_grad():
        acc = (loaded.model(x).argmax(-1) == y).float().mean().item()
    assert acc >= 0.8


def _staged_cfg(out):
    cfg = tiny_cfg(out, kind="staged")
    cfg.recipe.force_staged = True  # random weights: the plan would train one full stage
    cfg.recipe.stages = [StageConfig("head", 1, 3e-3, "head"),
                         StageConfig("top", 2, 1e-3, "top:1"),
                         StageConfig("all", 1, 5e-4, "all", layer_decay=0.7)]
    cfg.model.drop_path = 0.1  # torch RNG in the forward pass
    cfg.data.mixup = 0.4  # numpy RNG in the batch
    cfg.data.label_smoothing = 0.1
    cfg.optim.warmup_fraction = 0.2
    cfg.log_every = 1
    return cfg


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    return train(_staged_cfg(tmp_path_factory.mktemp("full") / "run"), data=data(48, 16))


# 48 samples, batch 16: 3 steps per epoch. Step 5 is mid-epoch in stage 2; after step 6
# the next cancel check is in the validation of stage 2's first epoch.
@pytest.mark.parametrize("cancel_at,batch", [(5, 2), (6, 3)])
def test_resume_after_cancel_reproduces_the_uninterrupted_run(
        tmp_path, uninterrupted, cancel_at, batch):
    full = uninterrupted
    ref = _history(full)
    assert [(h["stage"], h["epoch"]) for h in ref] == [(0, 0), (1, 0), (1, 1), (2, 0)]

    token = CancelToken()
    failed = []

    def stop_mid_stage_two(ev):
        if isinstance(ev, StepDone) and ev.global_step == cancel_at:
            token.cancel()
        if type(ev).__name__ == "TrainingFailed":
            failed.append(ev.message)

    cfg = _staged_cfg(tmp_path / "cut")
    with pytest.raises(Cancelled):
        train(cfg, token, [stop_mid_stage_two], data=data(48, 16))
    assert failed and "cancel" in failed[0]
    last = load_checkpoint(tmp_path / "cut" / "checkpoints", "last")
    assert last.meta["train_state"]["stage"] == 1
    assert last.meta["train_state"]["batch"] == batch
    assert len(_history(tmp_path / "cut")) == 1

    train(cfg, data=data(48, 16), resume=True)
    got = _history(tmp_path / "cut")
    assert len(got) == len(ref)
    for a, b in zip(ref, got, strict=True):
        assert (a["stage"], a["epoch"], a["step"]) == (b["stage"], b["epoch"], b["step"])
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    w_ref = load_checkpoint(full / "checkpoints", "last").weights
    w_got = load_checkpoint(tmp_path / "cut" / "checkpoints", "last").weights
    for k in w_ref:
        assert torch.allclose(w_ref[k], w_got[k], atol=1e-5), k


def test_bad_input_raises_before_anything_is_written(tmp_path):
    prev = train(tiny_cfg(tmp_path / "prev", epochs=1), data=data(32, 8))
    before = _snapshot(prev)

    cfg = tiny_cfg(prev, epochs=1)  # an existing run folder without --resume
    with pytest.raises(ConfigError, match="already exists"):
        train(cfg, data=data(32, 8))
    cfg = tiny_cfg(tmp_path / "new", epochs=1)
    cfg.model.img_size = 36
    with pytest.raises(ConfigError, match="divisible by the patch size 8"):
        train(cfg, data=data(32, 8))
    cfg = tiny_cfg(tmp_path / "new", epochs=1)
    cfg.model.name = "vit_tiny_patch16_22"
    with pytest.raises(ModelError, match="did you mean"):
        train(cfg, data=data(32, 8))
    one = squares(16, 0)
    one.tensors[1].zero_()
    with pytest.raises(DataError, match="2"):
        train(tiny_cfg(tmp_path / "new", epochs=1), data=TrainData(one, None, ["normal"]))
    with pytest.raises(DataError, match="only class normal"):
        train(tiny_cfg(tmp_path / "new", epochs=1), data=TrainData(one, None, CLASSES))
    cfg = tiny_cfg(tmp_path / "new", epochs=1)
    cfg.model.attention = "flash"
    cfg.device = "cpu"
    with pytest.raises(ConfigError, match="flash-attn"):
        train(cfg, data=data(32, 8))
    cfg = tiny_cfg(tmp_path / "new", epochs=1)
    cfg.weights.pretrained = str(tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="weights '.*' not found"):  # the plan's check
        train(cfg, data=data(32, 8))
    assert not (tmp_path / "new").exists()
    assert _snapshot(prev) == before


def test_corrupt_checkpoint_on_resume_is_a_checkpoint_error(tmp_path):
    run = train(tiny_cfg(tmp_path / "run", epochs=1), data=data(32, 8))
    ck = run / "checkpoints"
    meta = json.loads((ck / "last.json").read_text())
    (ck / meta["weights"]).write_bytes(b"not safetensors")
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_cfg(run, epochs=2), data=data(32, 8), resume=True)
    assert _snapshot(run) == before
    (ck / "last.json").write_text("{ half")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_cfg(run, epochs=2), data=data(32, 8), resume=True)
    with pytest.raises(CheckpointError, match="resume"):
        train(tiny_cfg(tmp_path / "empty", epochs=1), data=data(32, 8), resume=True)


def test_balance_early_stopping_and_ema_options_run(tmp_path):
    x, y = squares(40, 2).tensors
    y[:30] = 0  # imbalanced 30 : 10
    cfg = tiny_cfg(tmp_path / "run", epochs=6, lr=1e-9)  # lr ~0: val loss cannot improve
    cfg.data.balance = "loss"
    cfg.model.ema = True
    cfg.model.ema_decay = 0.5
    cfg.patience = 1
    run = train(cfg, data=TrainData(torch.utils.data.TensorDataset(x, y), squares(16, 1),
                                    CLASSES))
    hist = _history(run)
    assert len(hist) < 6  # early stopping ended the stage
    assert all(math.isfinite(h["val_loss"]) for h in hist)
    cfg = tiny_cfg(tmp_path / "run2", epochs=1)
    cfg.data.balance = "sampler"
    events = []
    train(cfg, listeners=[events.append],
          data=TrainData(torch.utils.data.TensorDataset(x, y), None, CLASSES))
    ends = [e for e in events if isinstance(e, EpochEnded)]
    assert len(ends) == 1 and math.isnan(ends[0].val_acc)


def test_distillation_from_a_teacher_run(tmp_path):
    from vitdesk.engine.trainer import Distiller

    teacher_run = train(tiny_cfg(tmp_path / "teacher", epochs=2, lr=2e-3), data=data(64, 16))
    teacher = load_run(teacher_run).model
    x = squares(8, 4).tensors[0]
    with torch.no_grad():
        t_logits = teacher(x)
    d = Distiller(teacher, temperature=2.0, alpha=1.0)
    assert float(d(x, t_logits.clone(), torch.tensor(5.0))) == pytest.approx(0.0, abs=1e-5)
    assert float(d(x, -t_logits, torch.tensor(0.0))) > 0.01
    half = Distiller(teacher, temperature=2.0, alpha=0.5)
    assert float(half(x, t_logits.clone(), torch.tensor(4.0))) == pytest.approx(2.0, abs=1e-4)

    cfg = tiny_cfg(tmp_path / "student", epochs=1)
    cfg.teacher.run = str(teacher_run)
    cfg.teacher.alpha = 0.7
    run = train(cfg, data=data(32, 16))
    assert len(_history(run)) == 1
    # another image size: the teacher sees each batch at its own 32 px
    cfg = tiny_cfg(tmp_path / "student48", epochs=1, img_size=48)
    cfg.teacher.run = str(teacher_run)
    run48 = train(cfg, data=data(32, 16, size=48))
    assert json.loads((run48 / "metrics.json").read_text())["teacher"]["img_size"] == 32
