"""Training tab: form <-> RunConfig, live run with pause/resume/cancel, resume, close."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitdesk.engine import checkpoint as ckpt
from vitdesk.engine.events import EpochEnded, StepDone
from vitdesk.engine.run import load_run
from vitdesk.gui.main_window import MainWindow
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.training_plan import RunProgress, find_backbones
from vitdesk.gui.tabs.training_tab import StepThrottle, TrainingTab
from vitdesk.imaging.synthetic import generate_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("training") / "sample"
    generate_sample(out, patients=4, slices=6, size=48, seed=0)
    return out


def _tiny(tab: TrainingTab, source, epochs=(1, 1, 1), weights="none", force_staged=True):
    """Set the form through its widgets: tiny ViT, 32 px, the staged recipe."""
    f = tab.form
    f.model_combo.setCurrentText("vit_test_tiny")
    f.img_spin.setValue(32)
    f.set_weights(weights)
    f.recipe_combo.setCurrentIndex(f.recipe_combo.findData("staged"))
    f.force_staged_box.setChecked(force_staged)
    for row, n in enumerate(epochs):
        f.stage_table.epochs_spin(row).setValue(n)
    f.batch_spin.setValue(4)
    f.attention_combo.setCurrentIndex(f.attention_combo.findData("eager"))
    f.src_radio.setChecked(True)
    f.src_edit.setText(str(source))


@pytest.fixture
def tab(qtbot):
    t = TrainingTab(Session())
    qtbot.addWidget(t)
    yield t
    t.shutdown(30000)


def _finite(a) -> bool:
    return len(a) > 0 and bool(np.all(np.isfinite(a)))


def test_form_widgets_write_the_run_config(tab, sample, tmp_path):
    f = tab.form
    _tiny(tab, sample, epochs=(2, 3, 4))
    f.accum_spin.setValue(3)
    f.drop_path_spin.setValue(0.25)
    f.patience_spin.setValue(5)
    f.mixup_spin.setValue(0.8)
    f.smoothing_spin.setValue(0.05)
    f.grad_ckpt_box.setChecked(True)
    f.balance_combo.setCurrentIndex(f.balance_combo.findData("sampler"))
    f.amp_combo.setCurrentIndex(f.amp_combo.findData("off"))
    f.pool_combo.setCurrentIndex(f.pool_combo.findData("token"))
    assert f.cfg.data.patient_id == "check"  # CSV patient IDs checked by default
    f.patient_combo.setCurrentIndex(f.patient_combo.findData("dicom"))
    assert f.cfg.data.patient_id == "dicom"
    f.patient_combo.setCurrentIndex(f.patient_combo.findData("check"))
    f.stage_table.cellWidget(1, 2).setValue(5e-4)
    f.stage_table.cellWidget(1, 3).setCurrentText("top:1")
    cfg = f.cfg
    assert (cfg.model.name, cfg.model.img_size, cfg.weights.pretrained) == (
        "vit_test_tiny", 32, "none")
    assert cfg.data.batch_size == 4 and cfg.optim.accumulation == 3
    assert cfg.model.drop_path == 0.25 and cfg.patience == 5 and cfg.data.mixup == 0.8
    assert cfg.data.label_smoothing == 0.05 and cfg.model.grad_checkpointing
    assert cfg.data.balance == "sampler" and cfg.amp == "off" and cfg.model.pool == "token"
    assert cfg.model.attention == "eager" and cfg.recipe.force_staged
    assert [s.epochs for s in cfg.recipe.stages] == [2, 3, 4]
    assert cfg.recipe.stages[1].lr == pytest.approx(5e-4)
    assert cfg.recipe.stages[1].unfreeze == "top:1"
    run = f.run_config(out=str(tmp_path / "r"))
    assert run.data.source == str(sample) and run.out == str(tmp_path / "r")
    assert "total 9 epoch(s)" in f.plan_label.text() and not f.problem

    # presets replace the stage table
    f.recipe_combo.setCurrentIndex(f.recipe_combo.findData("head"))
    assert [s.unfreeze for s in f.cfg.recipe.stages] == ["head"]
    assert f.stage_table.rowCount() == 1

    # a config pushed into the form shows in the widgets and round-trips
    pushed = run
    pushed.data.batch_size, pushed.model.img_size = 6, 40
    f.set_config(pushed)
    assert f.batch_spin.value() == 6 and f.img_spin.value() == 40
    assert f.stage_table.rowCount() == 3 and f.stage_table.epochs_spin(2).value() == 4


def test_staged_recipe_without_weights_switches_to_full_with_a_warning(tab, sample):
    _tiny(tab, sample, epochs=(2, 3, 4), force_staged=False)
    f = tab.form
    assert f.warning_label.isVisibleTo(tab) and "meaningless" in f.warning_label.text()
    cfg = f.run_config(out="x")
    assert cfg.recipe.kind == "full"
    assert [(s.unfreeze, s.epochs) for s in cfg.recipe.stages] == [("all", 9)]
    assert "1. full: 9 ep" in f.plan_label.text()
    f.force_staged_box.setChecked(True)
    # left: the 4x4 patch grid of an 8-px-patch ViT at 32 px
    assert "meaningless" not in f.warning_label.text()
    assert "4x4 grid" in f.warning_label.text()
    assert len(f.run_config(out="x").recipe.stages) == 3
    f.img_spin.setValue(64)
    assert not f.warning_label.isVisibleTo(tab)


def test_bad_settings_disable_start_with_the_reason(tab, sample):
    _tiny(tab, sample)
    assert tab.start_button.isEnabled()
    tab.form.img_spin.setValue(36)  # not a multiple of the patch size 8
    assert not tab.start_button.isEnabled()
    assert "img_size=36" in tab.form.problem and "use 32 or 40" in tab.form.problem
    tab.form.known_models = {"vit_test_tiny", "vit_tiny_patch16_224"}
    tab.form.img_spin.setValue(32)
    tab.form.model_combo.setCurrentText("vit_tiny_patch16_244")
    assert "did you mean vit_tiny_patch16_224" in tab.form.problem
    assert not tab.start_button.isEnabled()


def test_run_curves_pause_resume_cancel_then_resume_from_folder(qtbot, tab, sample, tmp_path):
    _tiny(tab, sample, epochs=(1, 1, 400))
    out = tmp_path / "run"
    task = tab.start(out=str(out))
    assert task is not None and tab.is_training()
    assert not tab.start_button.isEnabled() and tab.pause_button.isEnabled()
    plots = tab.plots
    qtbot.waitUntil(lambda: len(plots.epoch_loss.data) >= 3, timeout=30000)
    n_epochs = len(plots.epoch_loss.data)
    qtbot.waitUntil(lambda: len(plots.epoch_loss.data) > n_epochs, timeout=10000)
    plots.flush()
    for c in (plots.step_loss, plots.lr, plots.epoch_loss, plots.val_loss, plots.val_acc):
        assert _finite(c.data.y), c.item.name()
        assert len(c.item.xData) == len(c.data)  # drawn with setData
    assert np.all(np.diff(plots.step_loss.data.x) > 0)
    assert len(plots.stage_lines) == 3 * 3  # three stages, a line on each of 3 plots
    log = [tab.log.item(i).text() for i in range(tab.log.count())]
    assert len(log) >= n_epochs and any("head 1: loss" in line for line in log[:4]), log
    assert "stage 3/3 all" in tab.status_label.text() or tab.progress.stage == 2

    tab.pause()
    assert tab.resume_button.isEnabled() and not tab.pause_button.isEnabled()
    # the step in flight ends (slow on a loaded machine), then the worker blocks
    frozen = -1
    for _ in range(20):
        if tab.progress.global_step == frozen:
            break
        frozen = tab.progress.global_step
        qtbot.wait(600)
    qtbot.wait(600)
    assert tab.progress.global_step == frozen and task.is_running()
    tab.resume()
    qtbot.waitUntil(lambda: tab.progress.global_step > frozen, timeout=10000)

    tab.cancel()
    qtbot.waitUntil(lambda: task.has_ended(), timeout=30000)
    qtbot.waitUntil(lambda: tab.start_button.isEnabled(), timeout=5000)
    assert "Cancelled" in tab.status_label.text()
    cp = ckpt.load_checkpoint(out / "checkpoints", "last")
    stopped_at = cp.meta["global_step"]
    assert stopped_at >= frozen
    loaded = load_run(out)
    assert loaded.classes == ["lesion", "normal"] and loaded.img_size == 32

    # resume from the folder: past epochs are redrawn, training continues past the checkpoint
    task2 = tab.resume_run(out)
    assert task2 is not None
    assert len(plots.epoch_loss.data) >= 3  # prefilled from history.jsonl
    qtbot.waitUntil(lambda: tab.progress.global_step > stopped_at, timeout=30000)
    tab.cancel()
    qtbot.waitUntil(lambda: task2.has_ended(), timeout=30000)
    assert ckpt.load_checkpoint(out / "checkpoints", "last").meta["global_step"] > stopped_at


def test_finished_run_is_reported_and_registered_in_the_workspace(qtbot, sample, tmp_path):
    session = Session()
    session.new_workspace(tmp_path / "ws")
    tab = TrainingTab(session)
    qtbot.addWidget(tab)
    _tiny(tab, sample, epochs=(1, 1, 1))
    tab.form.src_radio.setChecked(True)
    finished = []
    tab.run_finished.connect(finished.append)
    task = tab.start()
    qtbot.waitUntil(lambda: task.has_ended(), timeout=60000)
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    run_dir = finished[0]
    assert run_dir.parent == (tmp_path / "ws" / "runs").resolve() or \
        run_dir.parent == tmp_path / "ws" / "runs"
    assert (run_dir / "checkpoints" / "best.json").is_file()
    assert "Best val acc" in tab.result_label.text() and str(run_dir) in tab.result_label.text()
    runs = session.workspace.runs()
    assert len(runs) == 1 and runs[0].model == "vit_test_tiny"
    acc = runs[0].metrics["best_val_acc"]
    assert acc is not None and 0.0 <= acc <= 1.0 and math.isfinite(acc)
    assert len(tab.plots.epoch_loss.data) == 3 and tab.bar.value() == 1000
    session.close_workspace()


def test_closing_the_window_during_training_asks_then_cancels_cleanly(qtbot, sample, tmp_path,
                                                                     monkeypatch):
    w = MainWindow()
    qtbot.addWidget(w)
    tab = w.training_tab
    _tiny(tab, sample, epochs=(1, 1, 400))
    out = tmp_path / "run"
    task = tab.start(out=str(out))
    qtbot.waitUntil(lambda: len(tab.plots.epoch_loss.data) >= 1, timeout=30000)
    answers = [False, True]
    asked = []
    monkeypatch.setattr(tab, "ask_stop", lambda: asked.append(1) or answers.pop(0))
    w.close()  # "No": the window stays, training goes on
    assert task.is_running() and len(asked) == 1
    w.close()  # "Yes": cancel, wait for the thread, close
    assert len(asked) == 2
    assert not task.is_running()
    cp = ckpt.load_checkpoint(out / "checkpoints", "last")
    assert cp.meta["global_step"] >= 3
    assert load_run(out, kind="last").classes == ["lesion", "normal"]


def test_engine_probe_fills_devices_and_model_names(qtbot, tab):
    tab.show()  # first show starts the background probe
    qtbot.waitUntil(lambda: tab.probe_task is not None and tab.probe_task.has_ended(),
                    timeout=60000)
    qtbot.waitUntil(lambda: tab.form.known_models is not None, timeout=5000)
    assert "vit_base_patch16_224" in tab.form.known_models
    devices = [tab.form.device_combo.itemData(i) for i in range(tab.form.device_combo.count())]
    assert devices[0] == "cpu" and ("cuda" in devices) == torch.cuda.is_available()


def test_step_throttle_and_eta():
    got = []
    th = StepThrottle(got.append, interval=10.0)
    for i in range(5):
        th(StepDone(0, 0, i, i + 1, 0.5, 1e-3, 100.0))
    th(EpochEnded(0, 0, 5, 0.5, 0.6, 0.5, 1e-3, 1.0))
    assert [type(e).__name__ for e in got] == ["StepDone", "EpochEnded"] and th.dropped == 4

    p = RunProgress([2, 2], ["head", "all"])
    p.on_event(StepDone(0, 0, 1, 1, 0.7, 1e-3, 50.0), now=0.0)
    p.on_event(EpochEnded(0, 0, 10, 0.7, 0.7, 0.5, 1e-3, 1.0), now=9.0)
    assert p.eta_seconds() is None  # time per step needs two steps
    p.on_event(StepDone(0, 1, 11, 11, 0.6, 1e-3, 50.0), now=10.0)
    # 40 steps in all (4 epochs x 10), 11 done, 1 s per step
    assert p.steps_per_epoch == 10 and p.eta_seconds() == pytest.approx(29.0)
    assert "stage 1/2 head" in p.status() and "ETA 29s" in p.status()


def test_backbones_are_found_from_their_cards(tmp_path):
    good = tmp_path / "pretrain" / "mae1"
    good.mkdir(parents=True)
    (good / "encoder.safetensors").write_bytes(b"x")
    (good / "card.json").write_text('{"format": "vitdesk-mae-card-1", "encoder": '
                                    '"encoder.safetensors", "model": "vit_test_tiny", '
                                    '"img_size": 32, "epochs": 3, "window_label": "lung"}')
    unfinished = tmp_path / "pretrain" / "mae2"
    unfinished.mkdir()
    (unfinished / "card.json").write_text("{not json")
    found = find_backbones(tmp_path)
    assert [(b.model, b.img_size, b.epochs) for b in found] == [("vit_test_tiny", 32, 3)]
    assert "mae1" in found[0].label()


@pytest.fixture
def labelled_workspace(qtbot, sample, tmp_path):
    """A session whose workspace holds the sample's series and its slice labels."""
    session = Session()
    session.new_workspace(tmp_path / "ws")
    task = session.import_path(sample)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=30000)
    qtbot.waitUntil(lambda: len(session.workspace.series()) == 4, timeout=5000)
    session.workspace.import_labels_csv(sample / "labels.csv")
    yield session
    session.shutdown()


def test_training_on_the_workspace_labels_then_pretraining_lists_the_encoder(
        qtbot, labelled_workspace, sample):
    session = labelled_workspace
    tab = TrainingTab(session)
    qtbot.addWidget(tab)
    _tiny(tab, sample, epochs=(1, 1, 1))
    tab.form.ws_radio.setChecked(True)
    assert tab.form.run_config(out="x").data.source == str(session.workspace.folder)
    task = tab.start()
    qtbot.waitUntil(lambda: task.has_ended(), timeout=60000)
    assert task.error is None and len(tab.plots.epoch_loss.data) == 3
    assert len(session.workspace.runs()) == 1

    # MAE pretraining on the same workspace: curve, progress, then the weights list
    panel = tab.pretrain
    panel.epochs_spin.setValue(2)
    panel.batch_spin.setValue(8)
    assert panel.start_button.isEnabled()
    ptask = panel.start()
    qtbot.waitUntil(lambda: ptask.has_ended(), timeout=60000)
    assert ptask.error is None, ptask.error
    out = ptask.result
    assert out.parent == session.workspace.folder / "pretrain"
    assert len(panel.plot.epoch.data) == 2 and _finite(panel.plot.epoch.data.y)
    assert panel.bar.value() == 2 and "Encoder ready" in panel.status.text()
    qtbot.waitUntil(lambda: tab.form.cfg.weights.pretrained == str(out), timeout=5000)
    labels = [tab.form.weights_combo.itemText(i) for i in range(tab.form.weights_combo.count())]
    assert any(text.startswith(f"MAE {out.name}: vit_test_tiny 32px, 2 ep") for text in labels)


def test_weights_that_cannot_load_are_flagged_before_start(tab, sample, tmp_path):
    _tiny(tab, sample)
    tab.form.set_weights("hub")
    assert "test model without hub weights" in tab.form.problem
    tab.form.set_weights(str(tmp_path / "missing.safetensors"))
    assert "not found" in tab.form.problem and not tab.start_button.isEnabled()
    tab.form.set_weights("none")
    assert not tab.form.problem and tab.start_button.isEnabled()
