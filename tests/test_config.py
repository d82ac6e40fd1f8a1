"""RunConfig: TOML round trip, overrides, the stage plan, validation messages."""

from __future__ import annotations

import pytest

from vitdesk.config import RunConfig, StageConfig, dumps_toml, load_config, save_config
from vitdesk.errors import ConfigError


def test_toml_round_trip_keeps_every_field(tmp_path):
    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size, cfg.model.attention = "vit_small_patch16_224", 160, "sdpa"
    cfg.data.window = "lung,mediastinum,bone"
    cfg.data.fractions = [0.6, 0.2, 0.2]
    cfg.data.source = 'C:\\data\\"ct"'
    cfg.recipe.stages = [StageConfig("head", 1, 1e-3, "head"),
                         StageConfig("all", 4, 1e-4, "all", layer_decay=0.65)]
    cfg.optim.betas = [0.9, 0.95]
    cfg.teacher.run = "runs/teacher"
    save_config(cfg, tmp_path / "c.toml")
    back = load_config(tmp_path / "c.toml")
    assert back == cfg
    assert back.recipe.stages[1].layer_decay == 0.65


def test_resolved_spells_out_the_default_plan_and_epochs():
    cfg = RunConfig()
    cfg.recipe.top_blocks = 3
    cfg.set_epochs("1,2,3")
    plan = cfg.resolved().recipe.stages
    assert [(s.unfreeze, s.epochs) for s in plan] == [("head", 1), ("top:3", 2), ("all", 3)]
    assert plan[2].layer_decay < 1.0 and plan[0].lr > plan[2].lr
    cfg = RunConfig()
    cfg.recipe.kind = "full"
    cfg.set_epochs("7")
    assert [(s.unfreeze, s.epochs) for s in cfg.resolved().recipe.stages] == [("all", 7)]
    with pytest.raises(ConfigError, match="1 stage"):
        cfg.set_epochs("1,2")


def test_set_converts_types_and_names_unknown_fields():
    cfg = RunConfig()
    cfg.set("model.img_size", "64")
    cfg.set("model.ema", "yes")
    cfg.set("data.fractions", "0.8,0.1,0.1")
    assert cfg.model.img_size == 64 and cfg.model.ema is True
    assert cfg.data.fractions == [0.8, 0.1, 0.1]
    with pytest.raises(ConfigError, match="model.imgsize"):
        cfg.set("model.imgsize", 64)
    with pytest.raises(ConfigError, match="expected int"):
        cfg.set("data.batch_size", "many")


@pytest.mark.parametrize("field,value,needle", [
    ("model.img_size", 100, "not divisible by the patch size 16 of vit_tiny_patch16_224: use 96"),
    ("model.attention", "fast", "model.attention='fast'"),
    ("amp", "fp8", "amp='fp8'"),
    ("data.window", "lung,brain", "data.window"),
    ("data.fractions", [0.5, 0.2, 0.2], "sum to 1"),
    ("data.batch_size", 0, "data.batch_size=0"),
    ("data.balance", "oversample", "data.balance"),
    ("optim.accumulation", 0, "optim.accumulation=0"),
    ("data.label_smoothing", 0.9, "data.label_smoothing"),
])
def test_validation_names_the_field_and_the_fix(field, value, needle):
    cfg = RunConfig()
    cfg.set(field, value)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert needle in str(err.value)


def test_bad_stage_and_bad_files(tmp_path):
    cfg = RunConfig()
    cfg.recipe.stages = [StageConfig("mid", 1, 1e-3, "top4")]
    with pytest.raises(ConfigError, match=r"recipe.stages\[0\] \(mid\).unfreeze='top4'"):
        cfg.validate()
    (tmp_path / "bad.toml").write_text("[model\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text("[model]\nnmae = 'x'\n")
    with pytest.raises(ConfigError, match="unknown field 'nmae'"):
        load_config(tmp_path / "typo.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    assert "[[recipe.stages]]" in dumps_toml({"recipe": {"stages": [{"a": 1}]}})


def test_staged_on_a_random_backbone_switches_to_one_full_stage():
    from vitdesk.config import RunConfig

    cfg = RunConfig()
    cfg.weights.pretrained = "none"
    cfg.recipe.kind = "staged"
    assert cfg.staged_on_random_backbone()
    cfg.switch_to_full(sum(s.epochs for s in cfg.stage_plan()))
    plan = cfg.stage_plan()
    assert cfg.recipe.kind == "full" and len(plan) == 1 and plan[0].unfreeze == "all"
    assert not cfg.staged_on_random_backbone()
    forced = RunConfig()
    forced.weights.pretrained = "none"
    forced.recipe.force_staged = True
    assert not forced.staged_on_random_backbone()
    pretrained = RunConfig()
    pretrained.weights.pretrained = "/some/encoder.safetensors"
    assert not pretrained.staged_on_random_backbone()


def test_a_coarse_patch_grid_is_flagged():
    from vitdesk.config import coarse_grid_warning

    text = coarse_grid_warning("vit_test_tiny", 32)  # 8-px patches: 4x4 tokens
    assert text and "4x4 grid of 8-px patches" in text and "64 px" in text
    assert coarse_grid_warning("vit_test_tiny", 64) is None
    assert coarse_grid_warning("vit_small_patch16_224", 224) is None
    assert "128 px" in coarse_grid_warning("vit_small_patch16_224", 64)
    assert coarse_grid_warning("resnet18", 32) is None  # CNNs have no patches


def test_run_folder_problem_names_what_is_missing(tmp_path):
    from vitdesk.config import run_folder_problem

    assert "not found" in run_folder_problem(tmp_path / "nope", "--baseline")
    assert "no config.toml" in run_folder_problem(tmp_path, "teacher run")
    (tmp_path / "config.toml").write_text("")
    assert "no checkpoints/" in run_folder_problem(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    assert run_folder_problem(tmp_path) is None
