"""Domain-adversarial adaptation: gradient reversal, schedule, held-out target patients."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from tests.engine._synth import CLASSES, squares, tiny_cfg
from vitdesk.data.records import SliceRecord
from vitdesk.engine.dann import (
    DANNHook,
    grad_reverse,
    pooled_features,
    reversal_weight,
    target_records,
)
from vitdesk.engine.models import create_model
from vitdesk.engine.plan import plan_run
from vitdesk.engine.run import TrainData, train
from vitdesk.engine.trainer import StepContext
from vitdesk.errors import ConfigError


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_gradient_reversal_flips_and_scales(lam):
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, lam)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -lam * w)


def test_reversal_schedule():
    assert reversal_weight(0.0) == 0.0
    assert reversal_weight(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert reversal_weight(1.0) == pytest.approx(0.99991, abs=1e-5)
    values = [reversal_weight(p / 10) for p in range(11)]
    assert values == sorted(values)
    assert reversal_weight(2.0) == reversal_weight(1.0)  # clamped


def _rec(patient: str, i: int, label: str | None = "normal") -> SliceRecord:
    return SliceRecord(path=f"/data/{patient}/{i}.dcm", label=label, patient=patient)


def test_target_patients_of_a_test_split_are_never_trained_on():
    splits = {"train": [_rec("p1", 0)], "val": [_rec("p2", 0)], "test": [_rec("p3", 0)]}
    target = [_rec(p, i, None) for p in ("p1", "p2", "p3", "p4") for i in range(3)]
    keep, dropped = target_records(target, splits)
    assert {r.patient for r in keep} == {"p1", "p4"} and dropped == 6
    # the run's own data as target: only its training patients remain
    own = [r for recs in splits.values() for r in recs]
    keep, dropped = target_records(own, splits)
    assert [r.patient for r in keep] == ["p1"] and dropped == 2


def test_domain_loss_trains_the_head_and_reverses_the_backbone_gradient():
    torch.manual_seed(0)
    model = create_model("vit_test_tiny", 2, 32).eval()  # no dropout: two passes compare
    x = squares(4, 0).tensors[0]
    target = TensorDataset(squares(8, 1).tensors[0] + 2.0, torch.full((8,), -1))
    dim = int(pooled_features(model, x[:1]).shape[-1])
    hook = DANNHook(target, dim, seed=0)
    ctx = StepContext(model, x, torch.zeros(4, dtype=torch.long), None, step=3, progress=1.0)
    hook.loss(ctx).backward()
    g_rev = model.patch_embed.proj.weight.grad.clone()
    head_grad = hook.head.net[0].weight.grad.clone()
    assert head_grad.abs().sum() > 0 and g_rev.abs().sum() > 0
    # the same loss without reversal: the backbone gradient has the opposite sign
    model.zero_grad()
    hook.head.zero_grad()
    xt = hook.target_batch(3, 4)
    f = pooled_features(model, torch.cat([x, xt]))
    logit = hook.head(f)
    dom = torch.cat([torch.zeros(4), torch.ones(4)])
    torch.nn.functional.binary_cross_entropy_with_logits(logit, dom).backward()
    lam = reversal_weight(1.0)
    torch.testing.assert_close(g_rev, -lam * model.patch_embed.proj.weight.grad,
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head_grad, hook.head.net[0].weight.grad, rtol=1e-4, atol=1e-6)
    # deterministic target draws by (seed, step)
    assert torch.equal(hook.target_batch(3, 4), DANNHook(target, dim, 0).target_batch(3, 4))


def test_adapted_run_trains_and_records(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_cfg(tmp_path / "dann", epochs=2)
    target = TensorDataset(squares(32, 9).tensors[0] * 1.5 + 0.5, torch.full((32,), -1))
    run = train(cfg, data=TrainData(squares(64, 0), squares(32, 1), list(CLASSES),
                                    target=target))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["adapt"]["target_slices"] == 32 and metrics["finished"]
    assert 0.0 <= metrics["best_val_acc"] <= 1.0


def test_adapt_rules(tmp_path):
    cfg = tiny_cfg(tmp_path / "r")
    cfg.adapt.source = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="adapt.source .* not found"):
        plan_run(cfg)
    cfg.adapt.source, cfg.adapt.weight = str(tmp_path), 0.0
    with pytest.raises(ConfigError, match="adapt.weight=0.0"):
        plan_run(cfg)
    cfg.adapt.weight = 1.0
    cfg.model.name = "vit_test_tiny_distilled"
    with pytest.raises(ConfigError, match="adapt.source: vit_test_tiny_distilled"):
        plan_run(cfg)


def test_cli_refuses_a_missing_target(tmp_path, capsys):
    from vitdesk.cli import main

    code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--model",
                 "vit_test_tiny", "--device", "cpu", "--adapt", str(tmp_path / "elsewhere")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "adapt.source" in err and len(err.splitlines()) == 1


def test_a_cancelled_adapted_run_resumes_to_the_same_history(tmp_path):
    """The domain classifier is in the ``last`` checkpoint and target draws follow the
    batch index: cut + resume reproduces the uninterrupted run."""
    from vitdesk.engine.events import StepDone
    from vitdesk.errors import Cancelled
    from vitdesk.jobs import CancelToken

    target = TensorDataset(squares(16, 9).tensors[0] + 1.0, torch.full((16,), -1))
    new = TrainData(squares(24, 0), squares(8, 1), list(CLASSES), target=target)

    def cfg_at(name):
        cfg = tiny_cfg(tmp_path / name, epochs=2, batch=8)
        cfg.log_every = 1
        return cfg

    def history(run):
        return [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]

    full = train(cfg_at("full"), data=new)
    token = CancelToken()

    def stop(ev):
        if isinstance(ev, StepDone) and ev.global_step == 4:
            token.cancel()

    with pytest.raises(Cancelled):
        train(cfg_at("cut"), token, [stop], data=new)
    cut = train(cfg_at("cut"), data=new, resume=True)
    for x, y in zip(history(full), history(cut), strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)
