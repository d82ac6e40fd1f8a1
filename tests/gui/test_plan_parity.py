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
