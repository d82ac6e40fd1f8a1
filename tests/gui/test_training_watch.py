"""Validation accuracy stuck at the majority rate is flagged during training ("the model
predicts one class")."""

from __future__ import annotations

import json
import math

from vitdesk.engine.events import EpochEnded
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.training_plan import RunProgress
from vitdesk.gui.tabs.training_tab import TrainingTab
from vitdesk.gui.tabs.training_watch import OneClassWatch, val_class_shares


def _run(folder, val_labels):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"label": lab, "patient": f"p{i}"} for i, lab in enumerate(val_labels)]
    (folder / "split.json").write_text(json.dumps({"splits": {"train": [], "val": rows}}))
    return folder


def test_majority_share_comes_from_the_split(tmp_path):
    run = _run(tmp_path / "r", ["normal"] * 6 + ["lesion"] * 2)
    shares, n = val_class_shares(run)
    assert n == 8 and shares == {"normal": 0.75, "lesion": 0.25}
    assert val_class_shares(tmp_path / "missing") is None


def test_two_epochs_at_the_majority_rate_are_flagged_once(tmp_path):
    watch = OneClassWatch(_run(tmp_path / "r", ["normal"] * 6 + ["lesion"] * 2))
    assert watch.check(0.75) is None  # one epoch can be chance
    assert watch.check(0.625) is None  # it moved: the streak starts again
    assert watch.check(0.75) is None
    text = watch.check(0.75)
    assert text is not None and "75.0%" in text and "'normal'" in text
    assert "one class" in text
    assert watch.check(0.75) is None  # said once
    other = OneClassWatch(_run(tmp_path / "q", ["a"] * 3 + ["b"]))
    for acc in (0.5, 0.75, 1.0, math.nan, 0.5):
        assert other.check(acc) is None  # learning, or no number: never flagged
    single = OneClassWatch(_run(tmp_path / "s", ["a"] * 4))
    assert single.check(1.0) is None and single.check(1.0) is None


def test_training_tab_shows_the_warning(qtbot, tmp_path):
    tab = TrainingTab(Session())
    qtbot.addWidget(tab)  # not shown: showing starts the engine probe thread
    tab.progress = RunProgress([3], ["full"])
    tab.one_class = OneClassWatch(_run(tmp_path / "r", ["normal"] * 6 + ["lesion"] * 2))
    for epoch in range(2):
        tab._on_event(EpochEnded(0, epoch, 10 * (epoch + 1), 0.7, 0.69, 0.75, 1e-3, 1.0))
    assert not tab.one_class_label.isHidden()
    assert "predicts that one class" in tab.one_class_label.text()
    log = [tab.log.item(i).text() for i in range(tab.log.count())]
    assert sum("predicts that one class" in line for line in log) == 1
    tab.shutdown(5000)
