"""The Pretrain page's formula-driven source: no images needed, encoder listed under Weights."""

from __future__ import annotations

import numpy as np

from vitdesk.engine.pretrain import read_card
from vitdesk.gui.session import Session
from vitdesk.gui.tabs.training_tab import TrainingTab


def test_formula_pretraining_from_the_gui_lists_the_encoder(qtbot, tmp_path):
    session = Session()
    session.new_workspace(tmp_path / "ws")  # empty: formula pretraining needs no images
    tab = TrainingTab(session)
    qtbot.addWidget(tab)
    try:
        f = tab.form
        f.model_combo.setCurrentText("vit_test_tiny")
        f.img_spin.setValue(32)
        f.attention_combo.setCurrentIndex(f.attention_combo.findData("eager"))
        panel = tab.pretrain
        assert panel.mask_spin.isEnabled() and not panel.classes_spin.isEnabled()
        panel.source_combo.setCurrentIndex(panel.source_combo.findData("fractals"))
        assert not panel.mask_spin.isEnabled() and panel.classes_spin.isEnabled()
        panel.classes_spin.setValue(3)
        panel.epochs_spin.setValue(2)
        panel.batch_spin.setValue(16)
        settings = panel.pretrain_settings()
        assert settings["formula"] == "fractals" and settings["data"] == ""
        assert "-fractals-" in settings["out"] and "mask_ratio" not in settings
        task = panel.start()
        qtbot.waitUntil(lambda: task.has_ended(), timeout=60000)
        assert task.error is None, task.error
        out = task.result
        card = read_card(out)
        assert card["formula"] == {"kind": "fractals", "classes": 3, "per_class": 16}
        assert len(panel.plot.epoch.data) == 2
        assert np.all(np.isfinite(panel.plot.epoch.data.y))
        assert "Encoder ready" in panel.status.text()
        qtbot.waitUntil(lambda: f.cfg.weights.pretrained == str(out), timeout=5000)
        labels = [f.weights_combo.itemText(i) for i in range(f.weights_combo.count())]
        assert any(t.startswith(f"fractals {out.name}: vit_test_tiny 32px, 2 ep") for t in labels)
    finally:
        tab.shutdown(30000)
        session.shutdown()
