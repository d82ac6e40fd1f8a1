"""Training tab's plan panel: the same plan as ``vitdesk plan`` for the same data and
budget, a budget field, and "Use this plan" filling the form that Start trains."""

from __future__ import annotations

import pytest

from vitdesk.cli import main
from vitdesk.engine import probe
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.training_tab import TrainingTab
from vitdesk.imaging.synthetic import generate_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "sample"
    generate_sample(out, patients=6, slices=6, size=48, seed=0)
    return out


@pytest.fixture
def steady_machine(monkeypatch):
    """Measured costs fixed, so two plans of the same inputs can be compared exactly."""
    monkeypatch.setattr(probe, "measure_step",
                        lambda name, img, patch, batch, device="cpu", **k: (0.01, 321.0))
    monkeypatch.setattr(probe, "measure_checkpoint_costs", lambda *a, **k: (0.01, 0.1))
    monkeypatch.setattr(probe, "measure_item_costs", lambda *a, **k: (0.001, 5e-4, 1e-4))


@pytest.fixture
def tab(qtbot):
    t = TrainingTab(Session())
    qtbot.addWidget(t)
    yield t
    t.shutdown(30000)


def _plan_in_gui(qtbot, tab, source, budget):
    tab.form.src_radio.setChecked(True)
    tab.form.src_edit.setText(str(source))
    panel = tab.plan_panel
    panel.budget_edit.setText(budget)
    task = panel.start()
    assert task is not None
    # the button comes back on the task's ``done``, which follows ``finished``/``errored``;
    # is_running() turns False before those queued signals reach the GUI thread
    qtbot.waitUntil(panel.plan_button.isEnabled, timeout=120_000)
    return panel


@pytest.mark.parametrize("budget", ["2m", "20s"])
def test_gui_shows_the_plan_vitdesk_plan_prints(qtbot, tab, sample, tmp_path, capsys,
                                               steady_machine, budget):
    assert main(["plan", "--data", str(sample), "--budget", budget,
                 "--out", str(tmp_path / "cli")]) == 0
    cli = capsys.readouterr().out.splitlines()
    panel = _plan_in_gui(qtbot, tab, sample, budget)
    assert panel.plan is not None, panel.status.text()
    assert panel.shown_lines() == cli
    text = "\n".join(cli)
    assert "model: vit_test_tiny" in text and "image size 48 px" in text
    assert "estimate: about" in text and "peak memory about 321 MB" in text
    assert any(line.strip().startswith("1. full:") for line in cli)


def test_use_this_plan_fills_the_form_that_start_trains(qtbot, tab, sample, steady_machine):
    panel = _plan_in_gui(qtbot, tab, sample, "2m")
    planned = panel.plan.cfg
    assert panel.use_button.isEnabled()
    panel.use_button.click()
    cfg = tab.form.run_config()  # valid: Start would train it
    assert (cfg.model.name, cfg.model.img_size, cfg.model.patch_size) == (
        planned.model.name, planned.model.img_size, planned.model.patch_size)
    assert cfg.data.batch_size == planned.data.batch_size
    assert [(s.name, s.epochs, s.lr) for s in cfg.recipe.stages] == [
        (s.name, s.epochs, s.lr) for s in planned.recipe.stages]
    assert cfg.weights.pretrained == "none" and tab.start_button.isEnabled()


def test_the_gui_plan_times_steps_with_the_threads_its_run_trains_with(
        qtbot, tab, sample, steady_machine, monkeypatch):
    import os

    import torch

    from vitdesk.gui.tabs.training_tab import training_threads

    seen = []

    def step(name, img, patch, batch, device="cpu", threads=None):
        seen.append((threads, torch.get_num_threads()))
        return 0.01, 321.0

    monkeypatch.setattr(probe, "measure_step", step)
    before = torch.get_num_threads()
    panel = _plan_in_gui(qtbot, tab, sample, "2m")
    assert panel.plan is not None and seen
    want = max(1, min(before, (os.cpu_count() or 2) - 1))
    assert training_threads(before) == want
    assert all(s == (want, want) for s in seen)
    assert torch.get_num_threads() == before  # put back


def test_a_bad_budget_or_no_data_is_named_without_a_worker(qtbot, tab, sample):
    panel = tab.plan_panel
    tab.form.src_radio.setChecked(True)
    tab.form.src_edit.setText(str(sample))
    panel.budget_edit.setText("soon")
    assert panel.start() is None
    assert "not a duration" in panel.status.text() and not panel.use_button.isEnabled()
    panel.budget_edit.setText("5m")
    tab.form.src_edit.setText("")
    assert panel.start() is None
    assert "no training data" in panel.status.text()
