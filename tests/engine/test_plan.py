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
    # another image size is fine: the teacher sees each slice at its own
    plan_run(_cfg(weights__pretrained="none", teacher__run=str(_teacher(tmp_path / "s", img=32))))
    for teacher, words in [(_teacher(tmp_path / "lung", window="lung"), "window 'lung'"),
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


# ---- the planner ------------------------------------------------------------------------
from vitdesk.engine.plan import (  # noqa: E402
    FORWARD_SHARE,
    LAST_CHECKPOINT_S,
    Fingerprint,
    RunCosts,
    choose_batch,
    choose_geometry,
    data_fingerprint,
    epoch_seconds,
    parse_budget,
    plan_for_data,
)


def test_budget_text():
    assert parse_budget("20m") == 1200 and parse_budget("90s") == 90
    assert parse_budget("1h30m") == 5400 and parse_budget("45") == 45
    assert parse_budget(None) is None
    for bad in ("soon", "0m", "20x", "m20"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)


@pytest.mark.parametrize(("native", "own", "random_init", "img", "patches"), [
    (28, 16, True, 24, [2]),        # 28 px digits: no upsampling, 12x12 grid of 2-px patches
    (32, 8, True, 32, [2, 4]),      # 16x16 or 8x8
    (64, 8, True, 64, [4, 8]),      # the demo's slices: 16x16 of 4 px, else 8x8 of 8
    (128, 16, True, 128, [8, 16]),
    (512, 16, True, 224, [16]),     # CT at 512: capped at 224, 14x14
    (64, 16, False, 128, [16]),     # hub weights keep 16-px patches: 8x8 needs 128 px
    (512, 16, False, 224, [16]),
])
def test_geometry_keeps_native_resolution_and_an_8x8_grid(native, own, random_init, img,
                                                          patches):
    got_img, got_patches, why = choose_geometry(native, own, random_init)
    assert (got_img, got_patches) == (img, patches)
    assert all(8 <= got_img // p <= 16 and got_img % p == 0 for p in got_patches)
    assert got_img <= max(native, 8 * got_patches[0])  # upsampled only as far as needed
    assert why and all(isinstance(w, str) for w in why)


def test_batch_follows_the_set_size():
    assert [choose_batch(n) for n in (50, 200, 460, 5000)] == [8, 8, 16, 64]


def _fp(images=768, native=64, classes=None):
    return Fingerprint(images, 64, classes or {"lesion": 300, "normal": 468}, native, "dicom")


def test_plan_for_data_fits_the_budget_with_the_measured_step():
    from vitdesk.engine.plan import AUTO_MODELS

    SMALLEST = AUTO_MODELS[0][0]  # noqa: N806 (the name the plan starts from)
    assert SMALLEST == "vit_test_tiny_convstem"
    calls = []

    def step(name, img, patch, batch):  # a machine where vit_tiny is 10x slower
        calls.append((name, img, patch, batch))
        return (0.02 if name == SMALLEST else 0.2), 100.0

    cfg = _cfg()
    cfg.model.name = "auto"
    p = plan_for_data(cfg, _fp(), budget_s=60, step_seconds=step)
    c = p.cfg
    # the conv stem keeps its own 8-px patches (an 8x8 grid): no finer grid is tried
    assert (c.model.name, c.model.img_size, c.model.patch_size) == (SMALLEST, 64, 0)
    assert {(n, pt) for n, _i, pt, _b in calls if n == SMALLEST} == {(SMALLEST, 8)}
    assert any("convolutional stem sees every pixel" in r for r in p.reasons)
    assert c.weights.pretrained == "none" and c.recipe.kind == "full"
    assert c.data.batch_size == 32 and c.data.balance == "loss"  # 468:300 > 1.5
    steps_per_epoch = -(-int(768 * 0.7) // 32)
    epochs = c.recipe.stages[0].epochs
    # the epoch's steps plus validation's forward passes (4 batches of 115 images)
    per_epoch = steps_per_epoch * 0.02 + 4 * 0.02 * FORWARD_SHARE
    assert per_epoch == pytest.approx(epoch_seconds(0.02, steps_per_epoch, 32, 537, 115,
                                                    RunCosts()))
    assert epochs == min(300, int(60 * 0.9 / per_epoch))
    assert p.estimate.seconds <= 60 and p.estimate.steps == epochs * steps_per_epoch
    assert p.estimate.seconds == pytest.approx(epochs * per_epoch)
    assert any("budget" in r for r in p.reasons)
    # a long budget on a small set still trains the smallest ViT (a wider one overfits)
    p = plan_for_data(cfg, _fp(), budget_s=3600, step_seconds=step)
    assert p.cfg.model.name == SMALLEST and any("too few" in r for r in p.reasons)
    # on a large set it buys the larger ViT, still with its 16x16 grid of 4-px patches
    big = _fp(images=20000, classes={"lesion": 8000, "normal": 12000})
    p = plan_for_data(cfg, big, budget_s=36000, step_seconds=step)
    assert p.cfg.model.name == "vit_tiny_patch16_224" and p.cfg.model.patch_size == 4
    assert p.cfg.recipe.stages[0].epochs >= 20
    # a plain-stem ViT from random weights takes the finest grid the budget allows: 4-px
    # patches when they fit, and the 8x8 grid of 8-px patches when they do not
    def slow_fine(name, img, patch, batch):
        return (0.5 if patch == 4 else 0.02), 100.0

    plain = _cfg()
    plain.model.name, plain.weights.pretrained = "vit_test_tiny", "none"
    p = plan_for_data(plain, _fp(), budget_s=60, step_seconds=lambda *a: (0.02, 100.0))
    assert (p.cfg.model.name, p.cfg.model.patch_size) == ("vit_test_tiny", 4)
    p = plan_for_data(plain, _fp(), budget_s=60, step_seconds=slow_fine)
    assert (p.cfg.model.name, p.cfg.model.patch_size) == ("vit_test_tiny", 0)  # its own 8
    assert any("a finer grid does not fit the budget" in r for r in p.reasons)
    # what the user gave is kept
    cfg.data.batch_size, cfg.model.img_size = 8, 32
    p = plan_for_data(cfg, _fp(), budget_s=60, step_seconds=step,
                      explicit={"data.batch_size", "model.img_size"})
    assert p.cfg.data.batch_size == 8 and p.cfg.model.img_size == 32
    # and the planned run passes every rule of the plan
    planned = plan_run(p.cfg, check_files=False)
    assert planned.cfg.model.patch_size == p.cfg.model.patch_size


def test_the_estimate_counts_what_a_run_pays_beside_its_steps():
    """Image reads and augmentation, validation, history/metrics/best writes and the
    ``last`` checkpoint (per stage and every LAST_CHECKPOINT_S) are in the estimate and
    take epochs from the budget."""
    cfg = _cfg()
    cfg.model.name = "auto"

    def step(name, img, patch, batch):
        return 0.02, 100.0

    costs = RunCosts(epoch_writes=0.05, last_checkpoint=0.4, first_read=0.003,
                     train_item=0.001, val_item=0.0002)
    bare = plan_for_data(cfg, _fp(), budget_s=120, step_seconds=step)
    p = plan_for_data(cfg, _fp(), budget_s=120, step_seconds=step, costs=costs)
    epochs = p.cfg.recipe.stages[0].epochs
    assert epochs < bare.cfg.recipe.stages[0].epochs
    train_n, val_n, spe = 537, 115, 17  # 768 images at 0.7/0.15, batch 32
    per_epoch = (spe * 0.02 + train_n * 0.001 + 4 * 0.02 * FORWARD_SHARE + val_n * 0.0002
                 + 0.05)
    train = epochs * per_epoch + (train_n + val_n) * 0.003
    expected = train + (1 + int(train // LAST_CHECKPOINT_S)) * 0.4
    assert p.estimate.seconds == pytest.approx(expected)
    assert 100 <= p.estimate.seconds <= 120  # it fills the budget, with 10 % spare
    # the old per-epoch overhead argument still adds to the writes
    q = plan_for_data(cfg, _fp(), budget_s=120, step_seconds=step, costs=costs,
                      epoch_overhead_s=0.1)
    assert q.cfg.recipe.stages[0].epochs < epochs


def test_fingerprint_of_an_image_folder(tmp_path):
    from tests.pngdata import write_square_pngs

    root = write_square_pngs(tmp_path / "d", per_class=6, size=40)
    sampled = []
    fp = data_fingerprint(str(root), sampled=sampled)
    assert (fp.images, fp.native_px, fp.kind) == (12, 40, "image")
    assert len(sampled) == 12 and {r.label for r in sampled} == {"lesion", "normal"}
    assert fp.classes == {"lesion": 6, "normal": 6}
    assert fp.describe() == ("12 images of 12 patients, 2 classes (lesion 6, normal 6), "
                             "native 40 px")


def test_patch_size_is_for_random_weights_only():
    cfg = _cfg(weights__pretrained="hub", model__name="vit_tiny_patch16_224",
               model__img_size=64, model__patch_size=4)
    with pytest.raises(ConfigError, match="hub weights"):
        plan_run(cfg, check_files=True)
    with pytest.raises(ConfigError, match="no patches"):
        plan_run(_cfg(model__name="cnn_test_tiny", weights__pretrained="none",
                      model__patch_size=4))
    ok = plan_run(_cfg(weights__pretrained="none", model__patch_size=4, recipe__kind="full"))
    assert not ok.notices  # 64 px / 4 = 16x16: no coarse-grid notice
