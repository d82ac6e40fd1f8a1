"""Formula-driven pretraining: generated classes, learning, resume, loading, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vitdesk.cli import main
from vitdesk.engine import checkpoint as ckpt
from vitdesk.engine.events import StepDone
from vitdesk.engine.formula import (
    FormulaDataset,
    contour_formulas,
    fractal_formulas,
)
from vitdesk.engine.pretrain import PretrainConfig, pretrain, read_card
from vitdesk.engine.weights import build_model
from vitdesk.errors import Cancelled, ConfigError
from vitdesk.jobs import CancelToken

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _cfg(out, **kw) -> PretrainConfig:
    base = dict(formula="contours", formula_classes=6, formula_per_class=16,
                model="vit_test_tiny", img_size=32, epochs=20, batch_size=16, base_lr=0.1,
                warmup_epochs=1.0, attention="eager", device="cpu", out=str(out))
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def formula_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("formula") / "enc"
    pretrain(_cfg(out))
    return out


@pytest.mark.parametrize("kind", ["contours", "fractals"])
def test_images_are_reproducible_labelled_and_fresh_each_epoch(kind):
    ds = FormulaDataset(kind, 5, 3, 32, MEAN, STD, seed=1)
    assert len(ds) == 15
    x, y = ds[7]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 7 % 5
    again = FormulaDataset(kind, 5, 3, 32, MEAN, STD, seed=1)
    assert torch.equal(again[7][0], x)
    ds.set_epoch(1)
    assert not torch.equal(ds[7][0], x)  # a new instance of the same formula
    other_seed = FormulaDataset(kind, 5, 3, 32, MEAN, STD, seed=2)
    assert not torch.equal(other_seed[7][0], x)
    for i in range(len(ds)):
        img = ds.image(i)
        assert img.min() >= 0.0 and img.max() <= 1.0
        # a shape, not an empty or a filled frame
        bright = float((img > img.mean() + 2 * 0.03).mean())
        assert 0.01 < bright < 0.8, (kind, i, bright)


def test_formulas_are_distinct_classes():
    cs = contour_formulas(40, seed=0)
    assert len({(c.f1, c.f2, c.orbits, c.vertices) for c in cs}) == 40
    fs = fractal_formulas(6, seed=0)
    assert len(fs) == 6 and all(2 <= len(f.a) <= 4 for f in fs)
    # contractive maps: the attractor exists
    assert all(np.linalg.norm(f.a, ord=2, axis=(1, 2)).max() <= 1.0 + 1e-9 for f in fs)
    assert contour_formulas(40, seed=0) == cs


def test_bad_formula_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="contours, fractals"):
        _cfg(tmp_path / "a", formula="spirals").validate()
    with pytest.raises(ConfigError, match="formula_classes"):
        _cfg(tmp_path / "a", formula_classes=1).validate()


def test_the_formulas_are_learnt(formula_run):
    card = read_card(formula_run)
    losses = card["loss_per_epoch"]
    assert card["objective"] == "formula" and card["window"] is None
    assert card["formula"] == {"kind": "contours", "classes": 6, "per_class": 16}
    assert len(losses) == 20
    # chance is ln 6 = 1.79: the first epoch is near it, the last ones clearly below
    assert losses[0] > 1.6 and np.mean(losses[-3:]) < losses[0] - 0.25, losses


def test_encoder_loads_for_finetuning_without_head_or_window(formula_run):
    from vitdesk.config import RunConfig
    from vitdesk.engine.run import _check_backbone_card, resolve_pool
    from vitdesk.jobs import Notice

    enc = load_file(str(formula_run / "encoder.safetensors"))
    assert not any(k.startswith("head") for k in enc)
    model, report = build_model("vit_test_tiny", 2, 32, pretrained=str(formula_run), pool="avg")
    sd = model.state_dict()
    assert set(sd) - set(enc) == {"head.weight", "head.bias"}
    assert all(torch.equal(sd[k], enc[k]) for k in enc)
    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size = "vit_test_tiny", 32
    cfg.weights.pretrained = str(formula_run)
    cfg.data.window = "soft_tissue"
    assert resolve_pool(cfg) == "avg"
    seen: list = []
    _check_backbone_card(cfg, [seen.append])
    assert not [e for e in seen if isinstance(e, Notice)]  # no CT window to mismatch


def test_cancel_then_resume_restores_the_formula_head(tmp_path):
    kw = dict(epochs=2, formula_per_class=4, log_every=1)  # 24 images: 2 steps an epoch
    ref = pretrain(_cfg(tmp_path / "ref", **kw))
    token = CancelToken()

    def stop(ev):
        if isinstance(ev, StepDone) and ev.global_step == 3:
            token.cancel()

    part = tmp_path / "part"
    with pytest.raises(Cancelled):
        pretrain(_cfg(part, **kw), token, [stop])
    state = ckpt.load_checkpoint(part / "checkpoints", "last").state
    assert set(state["decoder"]) == {"encoder.head.weight", "encoder.head.bias"}
    pretrain(_cfg(part, resume=True, **kw))
    a = load_file(str(ref / "encoder.safetensors"))
    b = load_file(str(part / "encoder.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_formula_pretraining_and_its_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    base = ["pretrain", "--model", "vit_test_tiny", "--img-size", "32", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu"]
    assert main([*base, "--formula", "fractals", "--formula-classes", "3",
                 "--formula-per-class", "4", "--base-lr", "0.01", "--workers", "1",
                 "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["formula"]["kind"] == "fractals" and card["data"]["n_images"] == 12
    assert card["base_lr"] == 0.01 and card["lr"] == pytest.approx(0.01 * 16 / 256)
    assert "formula pretraining (fractals)" in capsys.readouterr().err
    assert main([*base, "--formula", "contours", "--data", str(tmp_path),
                 "--out", str(tmp_path / "x")]) == 2
    assert "leave out --data" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "y")]) == 2
    assert "--formula contours|fractals" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_report_names_a_formula_backbone(formula_run):
    from vitdesk.report.from_run import backbone_details, backbone_provenance

    short, text = backbone_provenance(str(formula_run), "")
    assert "formula" in short and "contours" in text and "no patient data" in text
    assert "no patient images" in backbone_details(str(formula_run))
