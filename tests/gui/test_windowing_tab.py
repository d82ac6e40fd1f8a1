"""Windowing tab: two-way binding with WindowState, presets, custom presets, PHI."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from vitdesk.gui.settings import custom_presets, open_settings
from vitdesk.gui.state import ViewerState, WindowState
from vitdesk.gui.tabs.windowing_tab import WindowingTab
from vitdesk.imaging.windowing import PRESETS


@pytest.fixture
def tab(qtbot):
    window, viewer = WindowState(), ViewerState()
    t = WindowingTab(window, viewer, open_settings())
    qtbot.addWidget(t)
    t.show()
    return t


def test_lists_every_preset_with_its_reading_task(tab):
    assert tab.presets.topLevelItemCount() == len(PRESETS) == 9
    first = tab.presets.topLevelItem(0)
    assert first.text(0) == "1  Brain"
    assert first.text(1) == "80 / 40"
    assert "brain" in first.text(2)


def test_clicking_a_preset_sets_window_and_spins(qtbot, tab):
    item = tab.item_for("liver")
    rect = tab.presets.visualItemRect(item)
    qtbot.mouseClick(tab.presets.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert (tab.window.width, tab.window.level) == (150.0, 30.0)
    assert tab.width_spin.value() == 150.0
    assert tab.level_spin.value() == 30.0


def test_spins_write_state_and_state_writes_spins(tab):
    tab.width_spin.setValue(1234)
    assert tab.window.width == 1234.0
    assert tab.window.preset == ""
    tab.level_spin.setValue(-600)
    tab.width_spin.setValue(1500)
    assert tab.window.preset == "lung"  # typing a preset's values selects it
    assert tab.presets.currentItem() is tab.item_for("lung")
    tab.window.set_window(80, 40)  # e.g. a mouse drag in the viewer
    assert (tab.width_spin.value(), tab.level_spin.value()) == (80.0, 40.0)


def test_custom_presets_are_saved_renamed_and_deleted(tab):
    tab.window.set_window(600, 100)
    key = tab.add_custom("Pelvis bone")
    assert key == "custom:Pelvis bone"
    assert custom_presets(open_settings()) == {"Pelvis bone": (600.0, 100.0)}
    assert tab.item_for(key) is not None
    tab.window.apply_preset("brain")
    tab.window.apply_preset(key)
    assert (tab.window.width, tab.window.level) == (600.0, 100.0)
    tab.rename_custom("Pelvis bone", "Pelvis")
    assert custom_presets(open_settings()) == {"Pelvis": (600.0, 100.0)}
    tab.delete_custom("Pelvis")
    assert custom_presets(open_settings()) == {}
    assert tab.presets.topLevelItemCount() == 9


def test_custom_presets_reload_in_a_new_tab(qtbot, tab):
    tab.window.set_window(700, 70)
    tab.add_custom("Mine")
    again = WindowingTab(WindowState(), ViewerState(), open_settings())
    qtbot.addWidget(again)
    assert again.window.custom == {"Mine": (700.0, 70.0)}
    assert again.item_for("custom:Mine") is not None


def test_clahe_and_phi_toggles_are_bound(tab):
    tab.clahe_box.setChecked(True)
    assert tab.window.clahe is True
    tab.window.set_clahe(False)
    assert not tab.clahe_box.isChecked()
    assert tab.viewer.show_phi is False and not tab.phi_box.isChecked()
    tab.phi_box.setChecked(True)
    assert tab.viewer.show_phi is True


def test_reset_goes_back_to_the_files_window(tab):
    tab.window.default = (350.0, 50.0)
    tab.window.apply_preset("bone")
    tab.reset_button.click()
    assert (tab.window.width, tab.window.level) == (350.0, 50.0)
    assert tab.window.preset == "mediastinum"
