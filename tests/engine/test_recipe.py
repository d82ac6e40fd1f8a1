"""Staged freezing, layer-decay LRs, the schedule, gradient accumulation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.engine._synth import CLASSES, data, squares, tiny_cfg
from vitdesk.config import OptimConfig, StageConfig, default_stages
from vitdesk.engine.checkpoint import load_checkpoint
from vitdesk.engine.models import create_model
from vitdesk.engine.recipe import (
    apply_stage,
    build_optimizer,
    build_scheduler,
    trainable_modules,
)
from vitdesk.engine.run import TrainData, train


def _model():
    torch.manual_seed(0)
    return create_model("vit_test_tiny", num_classes=2, img_size=32)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_stages_freeze_exactly_what_they_say():
    model = _model()
    head, top, everything = default_stages("staged", top_blocks=1)
    apply_stage(model, head)
    assert _trainable(model) == {"head.weight", "head.bias"}
    apply_stage(model, top)
    got = _trainable(model)
    assert {n.split(".")[0] for n in got} == {"head", "blocks", "norm"}
    assert all(n.startswith("blocks.1.") for n in got if n.startswith("blocks"))
    assert not any(n.startswith(("blocks.0.", "patch_embed", "pos_embed", "cls_token"))
                   for n in got)
    apply_stage(model, everything)
    assert _trainable(model) == {n for n, _ in model.named_parameters()}
    assert trainable_modules(model, StageConfig("x", 1, 1e-3, "top:9")) [1:3] == [
        "blocks.0", "blocks.1"]  # N beyond the depth: every block


def test_frozen_weights_do_not_change_under_adamw_weight_decay():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage = StageConfig("top", 1, 1e-2, "top:1")
    apply_stage(model, stage)
    opt = build_optimizer(model, stage, OptimConfig(weight_decay=0.5))
    ds = squares(8, 0)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(ds.tensors[0]), ds.tensors[1])
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        if k.startswith(("blocks.1.", "head.", "norm.")):
            assert not same, f"{k} should have trained"
        else:
            assert same, f"frozen {k} changed"
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(p.requires_grad for p in model.parameters() if id(p) in in_opt)


def test_layer_decay_lrs_per_block_and_no_decay_on_norms_and_embeddings():
    model = _model()
    stage = StageConfig("all", 1, 1e-3, "all", layer_decay=0.5)
    apply_stage(model, stage)
    opt = build_optimizer(model, stage, OptimConfig(weight_decay=0.05, warmup_fraction=0.0))
    sched = build_scheduler(opt, stage, 10, OptimConfig(warmup_fraction=0.0))
    sched.step_update(0)
    lr_of, wd_of = {}, {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            lr_of[names[id(p)]] = g["lr"]
            wd_of[names[id(p)]] = g["weight_decay"]
    # depth 2: layers are embed (0), blocks.0 (1), blocks.1 (2), head (3)
    assert lr_of["head.weight"] == pytest.approx(1e-3)
    assert lr_of["blocks.1.attn.qkv.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr_of["blocks.0.mlp.fc1.weight"] == pytest.approx(1e-3 * 0.25)
    assert lr_of["patch_embed.proj.weight"] == pytest.approx(1e-3 * 0.125)
    assert lr_of["pos_embed"] == pytest.approx(1e-3 * 0.125)
    for name in ("pos_embed", "cls_token", "norm.weight", "blocks.0.norm1.bias", "head.bias"):
        assert wd_of[name] == 0.0, name
    assert wd_of["blocks.0.attn.qkv.weight"] == 0.05


def test_schedule_warmup_end_and_end_values_honour_lr_scale():
    model = _model()
    stage = StageConfig("all", 2, 1e-3, "all", layer_decay=0.5)
    optim = OptimConfig(warmup_fraction=0.25, min_lr=1e-6)
    apply_stage(model, stage)
    opt = build_optimizer(model, stage, optim)
    sched = build_scheduler(opt, stage, 10, optim)  # 20 updates, 5 of warmup

    def lrs():
        return sorted({round(g["lr"] / g.get("lr_scale", 1.0), 12) for g in opt.param_groups})

    sched.step_update(0)
    assert lrs() == [pytest.approx(1e-5)]
    sched.step_update(2)
    assert lrs() == [pytest.approx(1e-5 + 2 * (1e-3 - 1e-5) / 5)]
    sched.step_update(5)  # warmup end: the full base LR
    assert lrs() == [pytest.approx(1e-3)]
    sched.step_update(5 + 15 // 2)  # half way through the cosine (t = 7 of 15)
    mid = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * 7 / 15))
    assert lrs() == [pytest.approx(mid)]
    sched.step_update(20)
    assert lrs() == [pytest.approx(1e-6)]
    head = [g for g in opt.param_groups if g.get("lr_scale") == 1.0][0]
    low = min(opt.param_groups, key=lambda g: g["lr_scale"])
    assert low["lr"] == pytest.approx(head["lr"] * low["lr_scale"])


def _one_step_weights(tmp_path, name, batch, accum):
    cfg = tiny_cfg(tmp_path / name, epochs=1, lr=0.5, batch=batch)
    cfg.optim.opt, cfg.optim.weight_decay, cfg.optim.clip_grad = "sgd", 0.0, 0.0
    cfg.optim.accumulation = accum
    train(cfg, data=TrainData(squares(16, 3), None, list(CLASSES)))
    cp = load_checkpoint(tmp_path / name / "checkpoints", "last")
    hist = [json.loads(x) for x in (tmp_path / name / "history.jsonl").read_text().splitlines()]
    return cp, hist


def test_accumulating_k_steps_equals_one_k_times_larger_batch(tmp_path):
    big, hist_big = _one_step_weights(tmp_path, "big", batch=16, accum=1)
    acc, hist_acc = _one_step_weights(tmp_path, "acc", batch=4, accum=4)
    assert big.meta["global_step"] == acc.meta["global_step"] == 1
    assert hist_big[0]["train_loss"] == pytest.approx(hist_acc[0]["train_loss"], rel=1e-5)
    torch.manual_seed(0)
    # random init resolves model.pool to avg (see resolve_pool): build the same model
    init = create_model("vit_test_tiny", num_classes=2, img_size=32, pool="avg").state_dict()
    moved = 0.0
    for k, w in big.weights.items():
        # SGD: the update is lr * grad, so equal weights mean equal gradients
        assert torch.allclose(w, acc.weights[k], atol=2e-6), k
        moved = max(moved, float((w - init[k]).abs().max()))
    assert moved > 1e-3  # the step really changed the weights


def test_head_recipe_leaves_backbone_untouched_in_a_real_run(tmp_path):
    from safetensors.torch import save_file

    init = _model().state_dict()
    save_file({k: v.contiguous() for k, v in init.items()}, str(tmp_path / "init.safetensors"))
    cfg = tiny_cfg(tmp_path / "run", kind="head", epochs=1)
    cfg.recipe.stages = [StageConfig("head", 1, 1e-2, "head")]
    cfg.weights.pretrained = str(tmp_path / "init.safetensors")
    cfg.optim.weight_decay = 0.3
    train(cfg, data=data(32, 8))
    w = load_checkpoint(tmp_path / "run" / "checkpoints", "last").weights
    for k, v in init.items():
        if k.startswith("head."):
            assert not torch.equal(v, w[k])
        else:
            assert torch.equal(v, w[k]), f"frozen {k} changed"


def test_trainer_loss_matches_timm_losses():
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from vitdesk.engine.trainer import Trainer

    cfg = tiny_cfg("unused")
    cfg.data.label_smoothing = 0.1
    t = Trainer.__new__(Trainer)  # only the loss is exercised
    t.cfg, t.loss_weights = cfg, None
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    assert float(t._loss(logits, y)) == pytest.approx(
        float(LabelSmoothingCrossEntropy(0.1)(logits, y)), rel=1e-6)
    soft = torch.softmax(torch.randn(6, 3), -1)
    assert float(t._loss(logits, soft)) == pytest.approx(
        float(SoftTargetCrossEntropy()(logits, soft)), rel=1e-6)
    t.loss_weights = torch.tensor([1.0, 1.0, 1.0])
    assert float(t._loss(logits, soft)) == pytest.approx(
        float(SoftTargetCrossEntropy()(logits, soft)), rel=1e-6)
