"""Training form: the Teacher (distillation) group <-> ``cfg.teacher``, checks, hand-over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vitdesk.config import RunConfig, TeacherConfig, save_config
from vitdesk.errors import ConfigError
from vitdesk.gui.session import Session
from vitdesk.gui.tabs import training_tab
from vitdesk.gui.tabs.training_form import TrainingForm
from vitdesk.gui.tabs.training_tab import TrainingTab
from vitdesk.gui.tabs.training_teacher import TeacherBox, check_teacher


def _fake_run(folder: Path, img: int = 32, window: str = "soft_tissue",
              model: str = "vit_test_tiny", mtime: float | None = None) -> Path:
    """A folder that looks like a finished run: config.toml and checkpoints/."""
    (folder / "checkpoints").mkdir(parents=True)
    c = RunConfig()
    c.model.name, c.model.img_size, c.data.window = model, img, window
    save_config(c, folder / "config.toml")
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


@pytest.fixture
def ws(tmp_path) -> Path:
    """A workspace-like folder with two runs: ``new`` (listed first) and ``old``."""
    folder = tmp_path / "ws"
    _fake_run(folder / "runs" / "old", mtime=1_000_000)
    _fake_run(folder / "runs" / "new", mtime=2_000_000)
    return folder


@pytest.fixture
def form(qtbot, ws) -> TrainingForm:
    f = TrainingForm(lambda: str(ws))
    qtbot.addWidget(f)
    f.model_combo.setCurrentText("vit_test_tiny")
    f.img_spin.setValue(32)
    f.set_weights("none")
    return f


def _items(box: TeacherBox) -> list[str]:
    return [box.run_combo.itemData(i) for i in range(box.run_combo.count())]


def test_teacher_choices_land_in_the_run_config(form, ws):
    box = form.teacher_box
    assert _items(box) == ["", str(ws / "runs" / "new"), str(ws / "runs" / "old")]
    assert form.run_config(out="-").teacher == TeacherConfig()  # none by default
    assert not box.mode_combo.isEnabled() and not box.unlabelled_box.isEnabled()

    box.run_combo.setCurrentIndex(2)
    box.mode_combo.setCurrentIndex(box.mode_combo.findData("hard"))
    box.alpha_spin.setValue(0.3)
    assert not box.temperature_spin.isEnabled()  # hard labels use no temperature
    box.unlabelled_box.setChecked(True)
    cfg = form.run_config(out="-")
    assert cfg.teacher.run == str(ws / "runs" / "old")
    assert (cfg.teacher.mode, cfg.teacher.alpha) == ("hard", 0.3)
    assert cfg.teacher.unlabelled == str(ws)  # the open workspace by default
    assert form.problem == ""
    assert "old" in box.hint_label.text() and "this workspace" in box.hint_label.text()

    box.mode_combo.setCurrentIndex(box.mode_combo.findData("soft"))
    box.temperature_spin.setValue(2.5)
    assert box.temperature_spin.isEnabled()
    other = ws.parent / "more_images"
    other.mkdir()
    box.unlabelled_edit.setText(str(other))
    cfg = form.run_config(out="-")
    assert (cfg.teacher.mode, cfg.teacher.temperature) == ("soft", 2.5)
    assert cfg.teacher.unlabelled == str(other)
    assert "T 2.5" in box.hint_label.text() and "more_images" in box.hint_label.text()

    # no teacher: nothing could label the unlabelled images, so they go too
    box.run_combo.setCurrentIndex(0)
    assert not box.unlabelled_box.isChecked()
    assert form.run_config(out="-").teacher.run == ""
    assert form.run_config(out="-").teacher.unlabelled == ""
    assert form.problem == ""


def test_auto_mode_follows_the_student(form, ws):
    box = form.teacher_box
    box.run_combo.setCurrentIndex(1)
    assert box.mode() == "" and box.temperature_spin.isEnabled()
    assert "soft, T 4" in box.hint_label.text()
    form.model_combo.setCurrentText("vit_test_tiny_distilled")
    assert "distillation token" in box.hint_label.text()


def test_set_config_shows_the_teacher_without_writing(qtbot, form, ws, tmp_path):
    outside = _fake_run(tmp_path / "elsewhere" / "teacher")
    cfg = form.run_config(out="-", validate=False)
    cfg.teacher = TeacherConfig(run=str(outside), temperature=2.0, alpha=0.8, mode="soft",
                                unlabelled=str(ws))
    writes: list[tuple[str, object]] = []
    box = form.teacher_box
    box.write = lambda path, value: writes.append((path, value))
    form.set_config(cfg)
    assert writes == []
    assert box.teacher_run() == str(outside)  # added to the list though not in runs/
    assert "elsewhere/teacher" in box.run_combo.currentText()
    assert (box.mode(), box.alpha_spin.value(), box.temperature_spin.value()) == (
        "soft", 0.8, 2.0)
    assert box.unlabelled_box.isChecked() and box.unlabelled_edit.text() == str(ws)
    assert form.cfg.teacher == cfg.teacher

    form.set_config(RunConfig())  # and back to no teacher
    assert writes == []
    assert box.teacher_run() == "" and not box.unlabelled_box.isChecked()


def test_standalone_box_writes_dotted_paths(qtbot, ws):
    writes: list[tuple[str, object]] = []
    box = TeacherBox(lambda: str(ws), lambda p, v: writes.append((p, v)))
    qtbot.addWidget(box)
    box.show_config(TeacherConfig(run=str(ws / "runs" / "new"), mode="hard"))
    assert writes == []
    box.mode_combo.setCurrentIndex(box.mode_combo.findData("token"))
    box.unlabelled_box.setChecked(True)
    box.run_combo.setCurrentIndex(0)
    assert writes == [("teacher.mode", "token"), ("teacher.unlabelled", str(ws)),
                      ("teacher.unlabelled", ""), ("teacher.run", "")]


def test_unlabelled_with_mixup_shows_the_problem(form):
    box = form.teacher_box
    box.run_combo.setCurrentIndex(1)
    box.unlabelled_box.setChecked(True)
    assert form.problem == ""
    form.mixup_spin.setValue(0.2)
    assert "mixup" in form.problem and "teacher.unlabelled" in form.problem
    assert form.problem_label.isVisibleTo(form)
    assert form.problem_label.text() == form.problem
    form.mixup_spin.setValue(0.0)
    assert form.problem == "" and not form.problem_label.isVisibleTo(form)


def test_a_folder_that_is_not_a_run_is_flagged(form, ws, tmp_path):
    box = form.teacher_box
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not box.choose_run(plain)
    assert "not a run folder" in box.problem_label.text()
    assert box.problem_label.isVisibleTo(form)
    assert form.cfg.teacher.run == ""  # nothing written

    outside = _fake_run(tmp_path / "other" / "teacher")
    assert box.choose_run(outside)
    assert form.cfg.teacher.run == str(outside) and box.problem == ""
    assert not box.problem_label.isVisibleTo(form)
    box.refresh_workspace()  # a chosen folder stays listed
    assert str(outside) in _items(box) and box.teacher_run() == str(outside)

    # a config naming a teacher that is gone: the form says so and Start stays off
    cfg = form.run_config(out="-", validate=False)
    cfg.teacher.run = str(tmp_path / "gone")
    form.set_config(cfg)
    assert "gone" in form.problem and "not found" in form.problem
    assert "not found" in box.problem_label.text()


def test_check_teacher_catches_what_training_would_refuse(ws, tmp_path):
    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size = "vit_test_tiny", 32
    cfg.teacher.run = str(ws / "runs" / "new")
    check_teacher(cfg)  # compatible: no error
    cfg.model.img_size = 64
    check_teacher(cfg)  # another image size too: the teacher sees slices at its own
    for change, words in (
            (lambda c: setattr(c.data, "window", "lung"), "window 'soft_tissue'"),
            (lambda c: setattr(c.teacher, "mode", "token"), "*_distilled"),
            (lambda c: setattr(c.teacher, "unlabelled", str(tmp_path / "x")), "not found")):
        bad = RunConfig.from_dict(cfg.to_dict())
        change(bad)
        with pytest.raises(ConfigError) as err:
            check_teacher(bad)
        assert words in str(err.value)
    cfg.model.name = "vit_test_tiny_distilled"
    cfg.teacher.mode = "token"
    check_teacher(cfg)


def test_workspace_change_relists_runs_and_moves_the_default_source(qtbot, tmp_path):
    current = {"ws": None}
    f = TrainingForm(lambda: current["ws"])
    qtbot.addWidget(f)
    box = f.teacher_box
    assert _items(box) == [""] and box.unlabelled_edit.text() == ""
    ws = tmp_path / "ws2"
    _fake_run(ws / "runs" / "a")
    current["ws"] = str(ws)
    f.refresh_workspace()
    assert _items(box) == ["", str(ws / "runs" / "a")]
    assert box.unlabelled_edit.text() == str(ws)


def test_start_hands_the_teacher_to_training(qtbot, monkeypatch, tmp_path):
    seen: list[RunConfig] = []

    def fake_training(cfg, resume=False, cancel=None, listener=None):
        seen.append(cfg)
        return Path(cfg.out)

    monkeypatch.setattr(training_tab, "run_training", fake_training)
    tab = TrainingTab(Session())
    qtbot.addWidget(tab)
    f, box = tab.form, tab.form.teacher_box
    f.model_combo.setCurrentText("vit_test_tiny")
    f.img_spin.setValue(32)
    f.set_weights("none")
    data = tmp_path / "data"
    data.mkdir()
    f.src_radio.setChecked(True)
    f.src_edit.setText(str(data))
    teacher = _fake_run(tmp_path / "teacher_run")
    assert box.choose_run(teacher)
    box.mode_combo.setCurrentIndex(box.mode_combo.findData("soft"))
    box.alpha_spin.setValue(0.7)
    box.unlabelled_box.setChecked(True)
    assert box.unlabelled_edit.text() == ""  # no workspace open: the user names one
    box.unlabelled_edit.setText(str(data))
    assert f.problem == "" and tab.start_button.isEnabled()
    task = tab.start(out=str(tmp_path / "student"))
    assert task is not None
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=10000)
    t = seen[0].teacher
    assert (t.run, t.mode, t.alpha, t.unlabelled) == (str(teacher), "soft", 0.7, str(data))
    tab.shutdown(5000)


def test_run_training_passes_the_teacher_to_the_engine(monkeypatch, tmp_path):
    import vitdesk.engine.run as engine_run

    got = {}
    monkeypatch.setattr(engine_run, "train",
                        lambda cfg, cancel, listeners, resume=False: got.setdefault("cfg", cfg))
    cfg = RunConfig()
    cfg.teacher = TeacherConfig(run="/runs/t", temperature=3.0, alpha=0.25, mode="hard",
                                unlabelled="/imgs")
    training_tab.run_training(cfg)
    assert got["cfg"].teacher == cfg.teacher
