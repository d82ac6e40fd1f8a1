"""The same run asked for through `vitdesk train` and through the workbench's training form
gives the same resolved config and the same notices (both go through vitdesk.engine.plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitdesk.cli import build_parser
from vitdesk.commands.train import plan_from_args
from vitdesk.config import RunConfig, save_config
from vitdesk.errors import ConfigError
from vitdesk.gui.tabs.training_form import TrainingForm


def _teacher(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    c = RunConfig()
    c.model.name, c.model.img_size = "cnn_test_tiny", 64
    save_config(c, folder / "config.toml")
    return folder


# One row per request: model, image size, weights, recipe, per-stage epochs (None: the
# recipe's defaults), force staged, teacher (True: a compatible run), distillation mode.
CASES = [
    ("vit_test_tiny", 64, "none", "staged", None, False, False, ""),
    ("vit_test_tiny", 32, "none", "staged", (1, 2, 3), False, False, ""),
    ("vit_test_tiny", 64, "none", "staged", (1, 1, 1), True, False, ""),
    ("cnn_test_tiny", 64, "none", "staged", None, False, False, ""),
    ("vit_test_tiny", 64, "none", "full", (4,), False, False, ""),
    ("vit_test_tiny_distilled", 64, "none", "full", (2,), False, True, ""),
    ("vit_test_tiny", 64, "none", "full", (2,), False, True, "hard"),
    ("vit_test_tiny", 64, "none", "head", (3,), False, False, ""),
]


def _cli(data, out, teacher, case):
    model, img, weights, recipe, epochs, force, use_teacher, mode = case
    argv = ["train", "--data", str(data), "--out", str(out), "--device", "cpu",
            "--model", model, "--img-size", str(img), "--pretrained", weights,
            "--recipe", recipe]
    if epochs:
        argv += ["--epochs", ",".join(map(str, epochs))]
    if force:
        argv.append("--force-staged")
    if use_teacher:
        argv += ["--teacher", str(teacher)]
    if mode:
        argv += ["--distill", mode]
    return plan_from_args(build_parser().parse_args(argv))


def _gui(form, data, out, teacher, case):
    model, img, weights, recipe, epochs, force, use_teacher, mode = case
    form.model_combo.setCurrentText(model)
    form.img_spin.setValue(img)
    form.set_weights(weights)
    form.recipe_combo.setCurrentIndex(form.recipe_combo.findData(recipe))
    form.force_staged_box.setChecked(force)
    for row, n in enumerate(epochs or ()):
        form.stage_table.epochs_spin(row).setValue(n)
    if use_teacher:
        assert form.teacher_box.choose_run(teacher)
    box = form.teacher_box.mode_combo
    box.setCurrentIndex(box.findData(mode))
    form.src_radio.setChecked(True)
    form.src_edit.setText(str(data))
    cfg = form.run_config(out=str(out))
    return cfg, form.warning.splitlines()


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_cli_and_form_plan_the_same_run(qtbot, tmp_path, case):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    teacher = _teacher(tmp_path / "teacher")
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    form.recipe_combo.setCurrentIndex(form.recipe_combo.findData(case[3]))  # stage rows
    cli = _cli(data, out, teacher, case)
    cfg, notices = _gui(form, data, out, teacher, case)
    assert not form.problem, form.problem
    assert cfg.to_dict() == cli.cfg.to_dict()
    assert notices == cli.notices
    # and the rule really ran: the values a user would see
    stages = [(s.name, s.epochs) for s in cfg.recipe.stages]
    expected = {0: [("full", 10)], 1: [("full", 6)], 2: [("head", 1), ("top", 1), ("all", 1)],
                3: [("full", 10)], 4: [("full", 4)], 5: [("full", 2)], 6: [("full", 2)],
                7: [("head", 3)]}[CASES.index(case)]
    assert stages == expected
    if case[6]:
        assert cfg.teacher.mode == ("token" if "distilled" in case[0] else case[7])


REFUSED = [
    (("cnn_test_tiny", 64, "none", "head", None, False, False, ""), "use --recipe full"),
    (("vit_test_tiny", 64, "none", "full", (2,), False, True, "token"), "*_distilled"),
    (("vit_test_tiny", 36, "none", "full", (2,), False, False, ""), "divisible"),
]


@pytest.mark.parametrize(("case", "words"), REFUSED)
def test_cli_and_form_refuse_with_the_same_message(qtbot, tmp_path, case, words):
    data = tmp_path / "data"
    data.mkdir()
    teacher = _teacher(tmp_path / "teacher")
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    form.recipe_combo.setCurrentIndex(form.recipe_combo.findData(case[3]))
    with pytest.raises(ConfigError) as cli_err:
        _cli(data, tmp_path / "run", teacher, case)
    with pytest.raises(ConfigError) as gui_err:
        _gui(form, data, tmp_path / "run", teacher, case)
    assert words in str(cli_err.value)
    assert str(gui_err.value) == str(cli_err.value)
    assert form.problem == str(cli_err.value)  # what the form shows before Start


# ---- continue from a run and adapt to a new site (issue 15) ------------------------------
def _parent(folder: Path, finished: bool = True) -> Path:
    """A run folder as a finished run leaves it (config, best checkpoint, metrics)."""
    import json

    (folder / "checkpoints").mkdir(parents=True)
    c = RunConfig()
    c.model.name, c.model.img_size, c.data.window = "vit_test_tiny", 32, "soft_tissue"
    c.weights.pretrained = "none"
    save_config(c, folder / "config.toml")
    if finished:
        (folder / "checkpoints" / "best.json").write_text("{}", encoding="utf-8")
        (folder / "metrics.json").write_text(json.dumps({"finished": True}), encoding="utf-8")
    return folder


def _sites_cli(data, out, argv):
    base = ["train", "--data", str(data), "--out", str(out), "--device", "cpu",
            "--recipe", "full", "--epochs", "2"]
    return plan_from_args(build_parser().parse_args(base + argv))


def _sites_gui(form, data, out, parent=None, rehearsal=0, ewc=0.0, target=None, model=None):
    form.recipe_combo.setCurrentIndex(form.recipe_combo.findData("full"))
    form.stage_table.epochs_spin(0).setValue(2)
    if model:
        form.model_combo.setCurrentText(model)
        form.set_weights("none")
    if parent is not None:
        form.sites_box.choose_parent(parent)
        form.sites_box.rehearsal_spin.setValue(rehearsal)
        form.sites_box.ewc_spin.setValue(ewc)
    if target is not None:
        form.sites_box.choose_target(target)
    form.src_radio.setChecked(True)
    form.src_edit.setText(str(data))
    return form.run_config(out=str(out)), form.warning.splitlines()


def test_cli_and_form_plan_the_same_continued_run(qtbot, tmp_path):
    data, out = tmp_path / "new", tmp_path / "run"
    data.mkdir()
    parent = _parent(tmp_path / "runs" / "first")
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    cli = _sites_cli(data, out, ["--continue", str(parent), "--rehearsal", "40",
                                 "--ewc", "100"])
    cfg, notices = _sites_gui(form, data, out, parent=parent, rehearsal=40, ewc=100.0)
    assert not form.problem, form.problem
    assert cfg.to_dict() == cli.cfg.to_dict()
    assert notices == cli.notices
    # the parent's model, size and window; its weights, not the form's
    assert (cfg.model.name, cfg.model.img_size, cfg.data.window) == (
        "vit_test_tiny", 32, "soft_tissue")
    assert cfg.weights.pretrained == "none"
    assert (cfg.continual.continue_from, cfg.continual.rehearsal, cfg.continual.ewc) == (
        str(parent), 40, 100.0)
    assert any("continues run 'first'" in n and "40 earlier slices" in n for n in notices)
    assert not form.model_combo.isEnabled()  # the parent's model, not editable here
    # unticking forgets the parent and what it would have remembered
    form.sites_box.continue_box.setChecked(False)
    cfg = form.run_config(out=str(out))
    assert (cfg.continual.continue_from, cfg.continual.rehearsal, cfg.continual.ewc) == (
        "", 0, 0.0)
    assert form.model_combo.isEnabled()


def test_cli_and_form_plan_the_same_adapted_run(qtbot, tmp_path):
    data, target, out = tmp_path / "a", tmp_path / "b", tmp_path / "run"
    data.mkdir()
    target.mkdir()
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    cli = _sites_cli(data, out, ["--adapt", str(target), "--model", "vit_test_tiny",
                                 "--img-size", "32", "--pretrained", "none"])
    _sites_gui(form, data, out, target=target, model="vit_test_tiny")
    form.img_spin.setValue(32)  # after the model (choosing one sets its native size)
    cfg = form.run_config(out=str(out))
    assert not form.problem, form.problem
    assert cfg.to_dict() == cli.cfg.to_dict()
    assert form.warning.splitlines() == cli.notices
    assert (cfg.adapt.source, cfg.adapt.weight) == (str(target), 0.1)


SITE_REFUSED = [
    ("unfinished", "has not finished training"),
    ("missing-target", "not found"),
    ("distilled", "has two heads"),
]


@pytest.mark.parametrize(("case", "words"), SITE_REFUSED)
def test_cli_and_form_refuse_continue_and_adapt_alike(qtbot, tmp_path, case, words):
    data, out = tmp_path / "new", tmp_path / "run"
    data.mkdir()
    form = TrainingForm(lambda: None)
    qtbot.addWidget(form)
    if case == "unfinished":
        parent = _parent(tmp_path / "runs" / "first", finished=False)
        argv, kw = ["--continue", str(parent)], {"parent": parent}
    else:
        target = tmp_path / ("nowhere" if case == "missing-target" else "b")
        if case != "missing-target":
            target.mkdir()
        model = "vit_test_tiny_distilled" if case == "distilled" else "vit_test_tiny"
        argv = ["--adapt", str(target), "--model", model, "--img-size", "64",
                "--pretrained", "none"]
        kw = {"target": target, "model": model}
    with pytest.raises(ConfigError) as cli_err:
        _sites_cli(data, out, argv)
    with pytest.raises(ConfigError) as gui_err:
        _sites_gui(form, data, out, **kw)
    assert words in str(cli_err.value)
    assert str(gui_err.value) == str(cli_err.value)
    assert form.problem == str(cli_err.value)  # the form's problem line, before Start
