"""CNN models (teachers) and DeiT-style distillation into a ViT student."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.engine._synth import CLASSES, data, squares, tiny_cfg
from tests.pngdata import write_square_pngs
from vitdesk.config import StageConfig
from vitdesk.engine.models import adapt_state_dict, create_model, is_cnn, is_distilled
from vitdesk.engine.recipe import apply_stage, trainable_modules
from vitdesk.engine.run import load_run, train
from vitdesk.engine.trainer import Distiller
from vitdesk.errors import ConfigError


def _history(run):
    return [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]


def _accuracy(model, ds) -> float:
    x, y = ds.tensors
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def _cnn_cfg(out, epochs=3, lr=1e-2):
    cfg = tiny_cfg(out, epochs=epochs, lr=lr)
    cfg.model.name = "cnn_test_tiny"
    cfg.model.attention = "auto"  # a CNN has no attention: recorded as n/a, no timing pass
    return cfg


@pytest.fixture(scope="module")
def cnn_teacher(tmp_path_factory):
    """A tiny CNN trained with the full recipe on the bright-square task (the teacher)."""
    torch.set_num_threads(1)
    cfg = _cnn_cfg(tmp_path_factory.mktemp("cnn") / "teacher")
    return train(cfg, data=data(128, 64))


def test_tiny_cnn_trains_above_chance_and_loads_back(cnn_teacher):
    hist = _history(cnn_teacher)
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_acc"] >= 0.8  # chance is 0.5
    env = json.loads((cnn_teacher / "env.json").read_text())
    assert env["attention"]["backend"] == "n/a"
    loaded = load_run(cnn_teacher)
    assert is_cnn(loaded.model) and not hasattr(loaded.model, "blocks")
    assert loaded.classes == CLASSES and not loaded.model.training
    assert _accuracy(loaded.model, squares(64, 7)) >= 0.8


def test_cnn_takes_any_image_size_and_staged_needs_pretrained_weights(tmp_path):
    m = create_model("cnn_test_tiny", num_classes=3, img_size=37)
    assert m(torch.randn(2, 3, 37, 37)).shape == (2, 3)
    r18 = create_model("resnet18", num_classes=2, img_size=50, drop_path_rate=0.1)
    assert r18(torch.randn(1, 3, 50, 50)).shape == (1, 2)
    # staged on a CNN: top:N unfreezes the last residual blocks by timm's group_matcher
    names = trainable_modules(m, StageConfig("top", 1, 1e-3, "top:1"))
    assert names[0] == "fc" and all(n == "fc" or n.startswith("layer4.") for n in names)
    apply_stage(m, StageConfig("top", 1, 1e-3, "top:1"))
    assert m.layer4[0].conv1.weight.requires_grad and not m.layer3[0].conv1.weight.requires_grad
    assert type(m.bn1).__name__ == "BatchNorm2d"  # same structure as a fresh model
    cfg = _cnn_cfg(tmp_path / "staged")
    # (a staged recipe on a CNN is planned to one full stage: vitdesk.engine.plan)
    cfg.recipe.kind, cfg.recipe.stages = "head", []
    with pytest.raises(ConfigError, match="recipe full"):
        train(cfg, data=data(16, 8))
    assert not (tmp_path / "staged").exists()


def test_distilled_model_eval_output_is_the_mean_of_both_heads():
    torch.manual_seed(0)
    m = create_model("vit_test_tiny_distilled", num_classes=2, img_size=32)
    assert is_distilled(m)
    x = torch.randn(3, 3, 32, 32)
    m.set_distilled_training(True)
    m.train()
    with torch.no_grad():
        cls, dist = m(x)  # training: the two heads separately (no dropout in this config)
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert not torch.allclose(cls, dist)  # two independently initialised heads
    torch.testing.assert_close(out, (cls + dist) / 2)


def test_hard_distillation_loss_matches_the_formula(cnn_teacher):
    teacher = load_run(cnn_teacher).model
    x, y = squares(8, 3).tensors
    g = torch.Generator().manual_seed(1)
    cls, dist = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    with torch.no_grad():
        t_label = teacher(x).argmax(-1)
    alpha = 0.3
    ce_y = F.cross_entropy(cls, y)
    expected = (1 - alpha) * ce_y + alpha * F.cross_entropy(dist, t_label)
    for mode in ("hard", "token"):
        d = Distiller(teacher, temperature=4.0, alpha=alpha, mode=mode)
        assert float(d(x, (cls, dist), ce_y)) == pytest.approx(float(expected), rel=1e-6)
    # a plain student: the teacher term uses its only logits
    d = Distiller(teacher, temperature=4.0, alpha=alpha, mode="hard")
    plain = (1 - alpha) * ce_y + alpha * F.cross_entropy(dist, t_label)
    assert float(d(x, dist, ce_y)) == pytest.approx(float(plain), rel=1e-6)
    with pytest.raises(ValueError, match="mode"):
        Distiller(teacher, 4.0, 0.5, mode="kl")


@pytest.mark.parametrize("mode,student", [("soft", "vit_test_tiny"),
                                          ("hard", "vit_test_tiny"),
                                          ("token", "vit_test_tiny_distilled")])
def test_vit_student_distils_from_a_cnn_teacher(tmp_path, cnn_teacher, mode, student):
    from vitdesk.engine import trainer as trainer_mod

    teacher_before = {k: v.clone() for k, v in load_run(cnn_teacher).model.state_dict().items()}
    seen = {}
    real_step = trainer_mod.Trainer._optimizer_step

    def spy(self):  # the gradients of the first update, before they are zeroed
        if not seen:
            seen.update({n: p.grad.abs().sum().item() for n, p in self.model.named_parameters()
                         if p.grad is not None})
            seen["_teacher_training"] = self.distiller.teacher.training
            seen["_teacher_grads"] = any(p.requires_grad
                                         for p in self.distiller.teacher.parameters())
        real_step(self)

    trainer_mod.Trainer._optimizer_step = spy
    try:
        cfg = tiny_cfg(tmp_path / "student", epochs=1)
        cfg.model.name = student
        cfg.teacher.run = str(cnn_teacher)
        # token mode with alpha 1: only the teacher term, which reaches the dist head alone
        cfg.teacher.alpha = 1.0 if mode == "token" else 0.5
        run = train(cfg, data=data(32, 16), distill_mode=mode)
    finally:
        trainer_mod.Trainer._optimizer_step = real_step
    hist = _history(run)
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"])
    assert not seen["_teacher_training"] and not seen["_teacher_grads"]
    if mode == "token":
        assert seen["head_dist.weight"] > 0 and seen["dist_token"] > 0
        assert seen["head.weight"] == 0  # the cls head learns from labels only
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["teacher"]["mode"] == mode and metrics["teacher"]["run"] == str(cnn_teacher)
    assert metrics["teacher"]["model"] == "cnn_test_tiny"
    env = json.loads((run / "env.json").read_text())
    assert env["teacher"]["mode"] == mode
    # the teacher's files and weights are untouched
    after = load_run(cnn_teacher).model.state_dict()
    assert all(torch.equal(teacher_before[k], after[k]) for k in teacher_before)
    loaded = load_run(run)
    out = loaded.model(squares(4, 9).tensors[0])
    assert isinstance(out, torch.Tensor) and out.shape == (4, 2)  # eval: one averaged output


def test_token_mode_needs_a_distilled_student(tmp_path, cnn_teacher):
    cfg = tiny_cfg(tmp_path / "s", epochs=1)
    cfg.teacher.run = str(cnn_teacher)
    with pytest.raises(ConfigError, match="distillation token"):
        train(cfg, data=data(16, 8), distill_mode="token")
    assert not (tmp_path / "s").exists()


def test_mae_encoder_loads_into_the_distilled_student():
    enc = create_model("vit_test_tiny", num_classes=2, img_size=32)
    enc.reset_classifier(0)
    sd = {k: v for k, v in enc.state_dict().items() if not k.startswith("head.")}
    from vitdesk.engine.weights import load_weights_into

    student = create_model("vit_test_tiny_distilled", num_classes=2, img_size=32)
    report = load_weights_into(student, adapt_state_dict(student, sd), "mae")
    assert set(report.missing) == {"dist_token", "head.weight", "head.bias",
                                   "head_dist.weight", "head_dist.bias"}
    got = student.state_dict()
    torch.testing.assert_close(got["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])
    # cls and dist positions both start from the encoder's cls position
    torch.testing.assert_close(got["pos_embed"][:, 0], sd["pos_embed"][:, 0])
    torch.testing.assert_close(got["pos_embed"][:, 1], sd["pos_embed"][:, 0])
    torch.testing.assert_close(got["pos_embed"][:, 2:], sd["pos_embed"][:, 1:])


def test_cli_trains_a_cnn_and_distils_into_a_vit(tmp_path, capsys):
    from vitdesk.cli import main

    root = write_square_pngs(tmp_path / "data")
    common = ["--data", str(root), "--img-size", "32", "--pretrained", "none",
              "--batch-size", "8", "--device", "cpu", "--epochs", "1"]
    cnn = tmp_path / "cnn"
    assert main(["train", "--model", "cnn_test_tiny", *common, "--out", str(cnn)]) == 0
    cfg = tomllib.loads((cnn / "config.toml").read_text())
    assert cfg["recipe"]["kind"] == "full" and cfg["model"]["name"] == "cnn_test_tiny"
    assert "staged fine-tuning" not in capsys.readouterr().err  # full by default, no warning
    assert is_cnn(load_run(cnn).model)
    vit = tmp_path / "vit"
    assert main(["train", "--model", "vit_test_tiny_distilled", *common, "--recipe", "full",
                 "--teacher", str(cnn), "--distill", "token", "--alpha", "0.4",
                 "--out", str(vit)]) == 0
    metrics = json.loads((vit / "metrics.json").read_text())
    assert metrics["teacher"] == {"run": str(cnn), "mode": "token", "temperature": 4.0,
                                  "alpha": 0.4, "model": "cnn_test_tiny", "img_size": 32}
    assert tomllib.loads((vit / "config.toml").read_text())["teacher"]["alpha"] == 0.4
    assert main(["train", "--model", "vit_test_tiny", *common, "--recipe", "full",
                 "--teacher", str(cnn), "--distill", "token", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "distillation token" in capsys.readouterr().err


def test_teacher_at_own_size_maps_the_student_batch_to_the_teachers_preprocessing():
    from vitdesk.data.preprocess import letterbox_resize, normalise
    from vitdesk.engine.distill import TeacherAtOwnSize

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3))

    # a windowed slice in [0, 1], not square: both runs letterbox it
    rng = np.random.default_rng(0)
    unit = np.clip(rng.normal(0.5, 0.1, (3, 60, 90)), 0, 1).astype(np.float32)
    unit[:, 20:40, 30:60] = 0.9
    sm, ss, tm, ts = (0.5,) * 3, (0.5,) * 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    student = torch.as_tensor(normalise(letterbox_resize(unit, 64), sm, ss))[None]
    own = torch.as_tensor(normalise(letterbox_resize(unit, 32), tm, ts))[None]
    TeacherAtOwnSize(Spy(), 32, sm, ss, tm, ts)(student)
    got = seen[-1]
    assert got.shape == own.shape == (1, 3, 32, 32)
    # the teacher gets what its own preprocessing gives, up to interpolation
    assert float((got - own).abs().mean()) < 0.05
    # ... and not the student's normalisation
    assert float((student[:, :, ::2, ::2] - own).abs().mean()) > 0.1
    # same size and statistics: exactly the input
    x = torch.randn(2, 3, 32, 32)
    TeacherAtOwnSize(Spy(), 32, sm, ss, sm, ss)(x)
    assert torch.equal(seen[-1], x)


def test_a_64px_cnn_teaches_a_32px_vit(tmp_path, cnn_teacher):
    """The CNN teacher was trained at 32 px; a second one at 64 px teaches a 32-px
    student, seeing each batch at 64 px."""
    from vitdesk.engine import distill as trainer_mod

    tcfg = _cnn_cfg(tmp_path / "teacher64", epochs=2)
    tcfg.model.img_size = 64
    teacher = train(tcfg, data=data(64, 32, size=64))
    sizes = []
    real = trainer_mod.TeacherAtOwnSize.forward

    def spy(self, x):
        out = real(self, x)
        sizes.append((x.shape[-1], self.size))
        return out

    trainer_mod.TeacherAtOwnSize.forward = spy
    try:
        cfg = tiny_cfg(tmp_path / "student", epochs=1)
        cfg.teacher.run = str(teacher)
        run = train(cfg, data=data(32, 16), distill_mode="soft")
    finally:
        trainer_mod.TeacherAtOwnSize.forward = real
    assert sizes and set(sizes) == {(32, 64)}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["teacher"]["img_size"] == 64 and metrics["teacher"]["model"] == "cnn_test_tiny"
    assert np.isfinite(_history(run)[0]["train_loss"])
