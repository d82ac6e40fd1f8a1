"""One accuracy story: Inference, Fairness and Robustness give the same accuracy for the
same run, data and settings, and each number says its level, cut and whether TTA was on
(issue 16). Before, the three tabs showed 0.776 (TTA), 0.74 and 0.672 unexplained."""

from __future__ import annotations

import re

import pytest

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.fairness_tab import FairnessTab
from vitdesk.gui.tabs.inference_tab import InferenceTab
from vitdesk.gui.tabs.robustness_tab import RobustnessTab

SAID = re.compile(r"slice accuracy \[p >= 0\.5, TTA (off|on \(\d+ views\))\] (\d\.\d{3})")


def _said(text: str) -> tuple[str, float]:
    m = SAID.search(text)
    assert m, f"no level/cut/TTA-labelled accuracy in: {text!r}"
    return m.group(1), float(m.group(2))


@pytest.fixture
def tabs(qtbot, tiny_run):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    inf, fair, rob = (InferenceTab(session, current), FairnessTab(session, current),
                      RobustnessTab(session, current))
    for t in (inf, fair, rob):
        qtbot.addWidget(t)
        t.show()
    current.set_run(load_run(tiny_run, "cpu"))
    yield session, current, inf, fair, rob
    session.shutdown()


def test_same_settings_same_accuracy_in_every_tab(qtbot, tabs):
    session, current, inf, fair, rob = tabs
    # the run's test split everywhere, TTA off
    inf.tta_box.setChecked(False)
    inf.source.combo.setCurrentIndex(1)
    assert inf.source.value() == (None, "test") == fair.source.value() == rob.source.value()
    with qtbot.waitSignal(inf.run().done, timeout=30000):
        pass
    fair.boot_spin.setValue(60)
    with qtbot.waitSignal(fair.run().done, timeout=60000):
        pass
    rob.eps_edit.setText("0")
    rob.noise_edit.setText("0")
    rob.shift_edit.setText("")
    rob.contrast_edit.setText("")
    rob.cases_spin.setValue(4)  # a subset: its clean accuracy is labelled as such
    with qtbot.waitSignal(rob.run().done, timeout=60000):
        pass

    a_inf = inf.result.accuracy
    a_fair = fair.outcome.metrics.slice.estimates["accuracy"].value
    a_rob = rob.evaluation.metrics.slice.estimates["accuracy"].value
    assert a_inf == pytest.approx(a_fair, abs=1e-12) == pytest.approx(a_rob, abs=1e-12)
    assert len(inf.result.probs) == fair.outcome.n_slices == rob.evaluation.n_slices
    # and each tab says it the same way: level, cut, TTA, the same three digits
    said = [_said(t.summary.text()) for t in (inf, fair, rob)]
    assert {s[0] for s in said} == {"off"}
    assert {s[1] for s in said} == {round(a_inf, 3)}
    # the robustness curves' own clean accuracy names its subset, not "accuracy"
    assert "class-balanced subset of 4 slices (argmax, TTA off)" in rob.summary.text()


def test_tta_accuracy_is_labelled_and_equals_evaluate_with_the_same_tta(qtbot, tabs):
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.analysis.options import EvalOptions

    session, current, inf, fair, rob = tabs
    inf.tta_box.setChecked(True)
    inf.scales_edit.setText("1.0")
    inf.source.combo.setCurrentIndex(1)
    tta = inf.tta_config()
    with qtbot.waitSignal(inf.run().done, timeout=30000):
        pass
    label, value = _said(inf.summary.text())
    assert label == f"on ({len(tta.views())} views)"
    ev = evaluate_run(current.run, None, EvalOptions(
        tta=tta, robustness=False, shift=False, fairness=False, attention_samples=0,
        n_boot=20))
    assert inf.result.accuracy == pytest.approx(ev.metrics.slice.estimates["accuracy"].value,
                                                abs=1e-12)
    assert value == round(inf.result.accuracy, 3)
