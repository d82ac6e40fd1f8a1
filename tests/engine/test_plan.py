"""The run plan: every rule about a run before it starts (vitdesk.engine.plan), torch-free."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitdesk.config import RunConfig, save_config
from vitdesk.engine.plan import apply_rules, distill_mode, plan_resume, plan_run
from vitdesk.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**fields) -> RunConfig:
    cfg = RunConfig()
    cfg.data.source, cfg.out = "data", "runs/x"
    cfg.model.name, cfg.model.img_size = "vit_test_tiny", 64
    for dotted, value in fields.items():
        cfg.set(dotted.replace("__", "."), value)
    return cfg


def _stages(plan) -> list[tuple[str, int, str]]:
    return [(s.name, s.epochs, s.unfreeze) for s in plan.cfg.recipe.stages]


# (fields, --epochs, expected stages, words each notice must hold, in order)
CASES = [
    # random weights, staged: one full stage of the staged plan's total (2+3+5)
    (dict(weights__pretrained="none"), None, [("full", 10, "all")], ["meaningless"]),
    (dict(weights__pretrained="none"), "1,2,3", [("full", 6, "all")], ["meaningless"]),
    (dict(weights__pretrained="none"), "4", [("full", 4, "all")], ["meaningless"]),
    # forced: the stages stay, --epochs per stage
    (dict(weights__pretrained="none", recipe__force_staged=True), "1,1,0",
     [("head", 1, "head"), ("top", 1, "top:4"), ("all", 0, "all")], []),
    # hub weights: staged as asked
    (dict(model__name="vit_tiny_patch16_224", model__img_size=224), "2",
     [("head", 2, "head"), ("top", 2, "top:4"), ("all", 2, "all")], []),
    # a CNN trains one full stage, whatever its weights
    (dict(model__name="cnn_test_tiny", weights__pretrained="none"), None,
     [("full", 10, "all")], ["is a CNN"]),
    (dict(model__name="resnet18"), "3", [("full", 3, "all")], ["is a CNN"]),
    # a coarse grid is named
    (dict(weights__pretrained="none", recipe__kind="full", model__img_size=32), None,
     [("full", 10, "all")], ["4x4 grid"]),
    (dict(weights__pretrained="none", recipe__kind="full"), "2", [("full", 2, "all")], []),
]


@pytest.mark.parametrize(("fields", "epochs", "stages", "notices"), CASES)
def test_rules_give_the_stage_plan_and_the_notices(fields, epochs, stages, notices):
    plan = plan_run(_cfg(**fields), epochs=epochs, check_files=False)
    assert _stages(plan) == stages
    assert len(plan.notices) == len(notices), plan.notices
    for text, words in zip(plan.notices, notices, strict=True):
        assert words in text
    again = plan_run(plan.cfg, check_files=False)  # planning a planned run changes nothing
    assert again.cfg.to_dict() == plan.cfg.to_dict()


@pytest.mark.parametrize(("fields", "pool"), [
    (dict(weights__pretrained="none"), "avg"),
    (dict(weights__pretrained="hub"), "token"),
    (dict(weights__pretrained="hub", model__pool="avg"), "avg"),
    (dict(model__name="vit_test_tiny_distilled", weights__pretrained="none"), "token"),
    (dict(model__name="cnn_test_tiny", weights__pretrained="none"), "auto"),
])
def test_pool_is_resolved_by_the_weights(fields, pool):
    assert plan_run(_cfg(**fields), check_files=False).cfg.model.pool == pool


def test_refusals_name_the_field_and_the_fix(tmp_path):
    for fields, epochs, words in [
        (dict(model__name="cnn_test_tiny", weights__pretrained="none", recipe__kind="head"),
         None, "use --recipe full"),
        (dict(weights__pretrained="none", recipe__force_staged=True), "1,2", "3 stage"),
        (dict(weights__pretrained="none"), "two", "--epochs"),
        (dict(weights__pretrained=str(tmp_path / "no.pth")), None, "not found"),
        (dict(weights__pretrained="hub"), None, "test model without hub weights"),
        (dict(model__img_size=36), None, "divisible"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("+", r"\+")):
            plan_run(_cfg(**fields), epochs=epochs)


def _teacher(folder: Path, img: int = 64, window: str = "soft_tissue") -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    c = RunConfig()
    c.model.name, c.model.img_size, c.data.window = "cnn_test_tiny", img, window
    save_config(c, folder / "config.toml")
    return folder


def test_distillation_mode_and_teacher_compatibility(tmp_path):
    assert distill_mode("vit_test_tiny") == "soft"
    assert distill_mode("vit_test_tiny_distilled") == "token"
    assert distill_mode("vit_test_tiny_distilled", "hard") == "hard"
    with pytest.raises(ConfigError, match=r"\*_distilled"):
        distill_mode("vit_test_tiny", "token")
    with pytest.raises(ConfigError, match="soft, hard, token"):
        distill_mode("vit_test_tiny", "kl")
    run = _teacher(tmp_path / "t")
    plan = plan_run(_cfg(weights__pretrained="none", teacher__run=str(run)))
    assert plan.cfg.teacher.mode == "soft"  # recorded resolved in config.toml
    plan = plan_run(_cfg(model__name="vit_test_tiny_distilled", weights__pretrained="none",
                         teacher__run=str(run)))
    assert plan.cfg.teacher.mode == "token"
    for teacher, words in [(_teacher(tmp_path / "small", img=32), "image size 32, this run 64"),
                           (_teacher(tmp_path / "lung", window="lung"), "window 'lung'"),
                           (tmp_path / "none", "not found")]:
        with pytest.raises(ConfigError, match=words):
            plan_run(_cfg(weights__pretrained="none", teacher__run=str(teacher)))
    # a mode without a teacher is said, not silently dropped
    plan = plan_run(_cfg(weights__pretrained="none", teacher__mode="hard"))
    assert any("has no effect without a teacher" in n for n in plan.notices)


def test_backbone_card_notices(tmp_path):
    import json

    folder = tmp_path / "mae"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({
        "format": "vitdesk-mae-card-1", "img_size": 32,
        "window": {"windows": [[400.0, 40.0]], "clahe": False}}))
    plan = apply_rules(_cfg(weights__pretrained=str(folder), data__window="lung"))
    text = " | ".join(plan.notices)
    assert "pretrained at 32 px" in text and "64 px" in text
    assert plan.cfg.model.pool == "avg"  # an MAE encoder never trained its class token


def test_resume_keeps_the_stored_config_and_refuses_a_change():
    stored = plan_run(_cfg(weights__pretrained="none", seed=3), epochs="1,1,1",
                      check_files=False).cfg
    requested = apply_rules(_cfg(weights__pretrained="none", seed=4)).cfg
    with pytest.raises(ConfigError, match="seed is 3 in the run but 4 here"):
        plan_resume(stored, requested, {"seed"}, None, take={}, run="r")
    same = apply_rules(_cfg(weights__pretrained="none", seed=3)).cfg
    plan = plan_resume(stored, same, {"seed", "recipe.kind"}, "1,1,1",
                       take={"data.source": "elsewhere", "device": "cpu"}, run="r")
    assert [s.epochs for s in plan.cfg.recipe.stages] == [3]
    assert plan.cfg.data.source == "elsewhere" and plan.cfg.seed == 3
    with pytest.raises(ConfigError, match="cannot change"):
        plan_resume(stored, same, {"seed"}, None, take={"seed": 5}, run="r")


def test_plan_module_imports_neither_torch_nor_qt():
    code = ("import sys, vitdesk.engine.plan, vitdesk.engine.cards\n"
            "print(' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    loaded = set(out.stdout.split())
    assert "torch" not in loaded and "PySide6" not in loaded
