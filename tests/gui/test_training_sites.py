"""The Training tab's "Sites and time" group end to end: a tiny continued run and a tiny
adapted run started from the workbench finish, and the Report tab shows their forgetting
and source/target figures (the same section the CLI report writes)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.config import load_config
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.report_tab import ReportTab
from vitdesk.gui.tabs.training_tab import TrainingTab


@pytest.fixture(scope="module")
def site_b(tmp_path_factory) -> Path:
    """Another small labelled sample (other patients and seed): the new site."""
    from vitdesk.imaging.synthetic import generate_sample

    out = tmp_path_factory.mktemp("siteb") / "b"
    generate_sample(out, patients=6, slices=6, size=48, seed=1)
    return out


@pytest.fixture
def tab(qtbot):
    t = TrainingTab(Session())
    qtbot.addWidget(t)
    yield t
    t.shutdown(30000)


def _one_epoch(tab: TrainingTab, data: Path) -> None:
    f = tab.form
    f.recipe_combo.setCurrentIndex(f.recipe_combo.findData("full"))
    f.stage_table.epochs_spin(0).setValue(1)
    f.batch_spin.setValue(8)
    f.attention_combo.setCurrentIndex(f.attention_combo.findData("eager"))
    f.src_radio.setChecked(True)
    f.src_edit.setText(str(data))


def _train(qtbot, tab: TrainingTab, out: Path) -> Path:
    finished: list[Path] = []
    tab.run_finished.connect(finished.append)
    task = tab.start(out=str(out))
    assert task is not None, tab.form.problem
    qtbot.waitUntil(lambda: task.has_ended(), timeout=120000)
    qtbot.waitUntil(lambda: bool(finished), timeout=5000)
    return Path(finished[0])


def _report(qtbot, run_dir: Path, out: Path) -> tuple[ReportTab, str]:
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    rtab = ReportTab(session, current)
    qtbot.addWidget(rtab)
    current.set_run(load_run(run_dir, "cpu"))
    rtab.out_edit.setText(str(out))
    rtab.robust_check.setChecked(False)
    rtab.shift_check.setChecked(False)
    rtab.att_spin.setValue(0)
    rtab.boot_spin.setValue(50)
    with qtbot.waitSignal(rtab.build().done, timeout=120000):
        pass
    assert rtab.files is not None, rtab.status.text()
    return rtab, html.unescape((out / "report.html").read_text(encoding="utf-8"))


def _row(text: str, label: str) -> str:
    """The value cell of the report table row whose first cell starts with ``label``."""
    m = re.search(re.escape(label) + r"[^<]*</td>\s*<td>([^<]*)</td>", text)
    assert m, f"no row '{label}' in the report"
    return m.group(1)


def test_continue_from_a_run_trains_and_reports_forgetting(qtbot, tab, tiny_run,  # noqa: F811
                                                           site_b, tmp_path):
    parent = shutil.copytree(tiny_run, tmp_path / "runs" / "first")
    f = tab.form
    _one_epoch(tab, site_b)
    f.sites_box.choose_parent(parent)
    f.sites_box.rehearsal_spin.setValue(6)
    f.sites_box.ewc_spin.setValue(10.0)
    assert not f.problem, f.problem
    assert "Continues first" in f.sites_box.hint_label.text()
    child = _train(qtbot, tab, tmp_path / "runs" / "second")

    cfg = load_config(child / "config.toml")
    assert cfg.continual.continue_from == "first"  # by folder name only: no path
    assert (cfg.continual.rehearsal, cfg.continual.ewc) == (6, 10.0)
    assert (cfg.model.name, cfg.model.img_size) == ("vit_test_tiny", 32)  # the parent's
    assert (parent / "rehearsal.npz").is_file()  # the buffer the run replayed

    rtab, text = _report(qtbot, child, tmp_path / "rep")
    assert rtab.earlier_row.isVisibleTo(rtab)  # a continued run: the earlier data field
    assert "Learning across sites and over time" in text
    p_acc = float(_row(text, "Parent's accuracy there"))
    r_acc = float(_row(text, "This run's accuracy there"))
    forget = _row(text, "Forgetting, parent - this run")
    value, lo, hi = (float(x) for x in re.findall(r"-?\d+\.\d+", forget)[:3])
    assert abs(value - (p_acc - r_acc)) <= 0.0015 and lo <= value + 1e-9 <= hi + 2e-9

    # the same figures as the analysis gives (vitdesk evaluate --earlier)
    from vitdesk.analysis.forgetting import forgetting
    from vitdesk.engine.run import load_run

    direct = forgetting(load_run(child, "cpu"), None, n_boot=50)
    assert (round(direct["parent_acc"], 3), round(direct["run_acc"], 3)) == (p_acc, r_acc)
    assert str(tmp_path) not in text  # no run or data folder paths in a report


def test_adapt_to_unlabelled_studies_trains_and_reports_target_accuracy(
        qtbot, tab, sample_dir, site_b, tmp_path):  # noqa: F811
    f = tab.form
    f.model_combo.setCurrentText("vit_test_tiny")
    f.img_spin.setValue(32)
    f.set_weights("none")
    _one_epoch(tab, sample_dir)
    f.sites_box.choose_target(site_b)
    f.sites_box.weight_spin.setValue(0.5)
    assert not f.problem, f.problem
    assert "Adapts to the unlabelled images of b (weight 0.5)" in f.sites_box.hint_label.text()
    run = _train(qtbot, tab, tmp_path / "runs" / "adapted")

    cfg = load_config(run / "config.toml")
    assert cfg.adapt.weight == 0.5 and cfg.adapt.source
    figures = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["adapt"]
    assert figures["target_slices"] > 0 and 0.0 <= figures["target_acc"] <= 1.0

    rtab, text = _report(qtbot, run, tmp_path / "rep")
    assert not rtab.earlier_row.isVisibleTo(rtab)  # no parent: no earlier data field
    assert float(_row(text, "Target accuracy")) == round(figures["target_acc"], 3)
    assert float(_row(text, "Source test accuracy")) == round(figures["source_test_acc"], 3)
    assert int(_row(text, "Target slices adapted on")) == figures["target_slices"]
    assert "Forgetting" not in text
