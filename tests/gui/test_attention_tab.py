"""Attention tab: overlay on the viewer aligned with the slice, controls, export."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtWidgets import QHBoxLayout, QWidget

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from tests.gui.helpers import make_volume, stated_rate
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session
from vitdesk.gui.slice_view import SliceView
from vitdesk.gui.tabs.attention_tab import AttentionTab


@pytest.fixture
def setup(qtbot, tiny_run):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    host = QWidget()
    view = SliceView(session.viewer, session.window, host)
    current = CurrentRun(session, host, device="cpu")
    tab = AttentionTab(session, current, view, host)
    lay = QHBoxLayout(host)
    lay.addWidget(view)
    lay.addWidget(tab)
    qtbot.addWidget(host)
    host.show()
    session.viewer.set_volume(make_volume())  # 64 x 80 slices: not square
    current.set_run(load_run(tiny_run, "cpu"))
    yield session, view, current, tab
    session.shutdown()


def _wait_result(qtbot, tab, index):
    qtbot.waitUntil(lambda: tab.result is not None and tab.result.key[2] == index
                    and not (tab.task and tab.task.is_running()), timeout=15000)


def test_overlay_aligns_with_slice_and_follows_controls(qtbot, setup, tmp_path):
    session, view, current, tab = setup
    _wait_result(qtbot, tab, session.viewer.index)
    # the overlay is an item of the viewer, above the slice, with the slice's shape and rect
    assert tab.overlay.getViewBox() is view.view
    assert tab.overlay.zValue() > view.image.zValue()
    assert tab.overlay.image.shape == view.image.image.shape == (64, 80)
    assert tab.overlay.mapRectToParent(tab.overlay.boundingRect()) == \
        view.image.mapRectToParent(view.image.boundingRect())
    assert tab.overlay.isVisible()
    heat = tab.overlay.image
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    # probabilities: one bar per class, summing to ~100 %
    probs = tab.result.probs
    assert probs.shape == (2,) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert sum(b.value() for b in tab.prob_bars) == pytest.approx(1000, abs=2)

    tab.opacity_slider.setValue(70)
    assert tab.overlay.opacity() == pytest.approx(0.70)
    # each map choice shows a different map (same shape)
    shown = {}
    for mode in ("Rollout", "Head mean", "Layer / head", "Grad-CAM"):
        tab.mode_combo.setCurrentText(mode)
        shown[mode] = tab.overlay.image.copy()
        assert shown[mode].shape == (64, 80)
    assert not np.allclose(shown["Rollout"], shown["Head mean"])
    tab.mode_combo.setCurrentText("Layer / head")
    tab.head_spin.setValue(2)
    assert not np.allclose(tab.overlay.image, shown["Layer / head"])
    tab.show_check.setChecked(False)
    assert not tab.overlay.isVisible()
    tab.show_check.setChecked(True)

    # a new slice is recomputed (debounced, in a worker)
    session.viewer.set_index(3)
    _wait_result(qtbot, tab, 3)
    assert tab.result.key[2] == 3

    out = tab.export_png(tmp_path / "att.png")
    png = cv2.imread(str(out))
    assert png.shape == (64, 80, 3)
    assert png.std() > 1  # not a blank image


@pytest.fixture(scope="session")
def tiny_cnn_run(sample_dir, tmp_path_factory):  # noqa: F811
    """A cnn_test_tiny run (a one-block-per-stage timm ResNet, img 32, one epoch)."""
    import torch

    from vitdesk.config import RunConfig, StageConfig
    from vitdesk.engine.run import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machines: one thread is much faster here
    try:
        cfg = RunConfig()
        cfg.model.name, cfg.model.img_size = "cnn_test_tiny", 32
        cfg.weights.pretrained = "none"
        cfg.data.source, cfg.data.window = str(sample_dir), "soft_tissue"
        cfg.data.batch_size, cfg.data.fractions = 8, [0.5, 0.17, 0.33]
        cfg.recipe.kind = "full"
        cfg.recipe.stages = [StageConfig("full", 1, 1e-3, "all", 1.0)]
        cfg.device = "cpu"
        cfg.out = str(tmp_path_factory.mktemp("cnnruns") / "runs" / "cnn")
        return train(cfg)
    finally:
        torch.set_num_threads(before)


def test_cnn_run_shows_grad_cam_only(qtbot, setup, tiny_cnn_run, tiny_run):  # noqa: F811
    from vitdesk.analysis.attention import normalize01
    from vitdesk.engine.run import load_run
    from vitdesk.gui.tabs.attention_tab import CNN_TIP

    session, view, current, tab = setup
    _wait_result(qtbot, tab, session.viewer.index)
    tab.mode_combo.setCurrentText("Rollout")  # a ViT choice the CNN cannot honour
    assert tab.fusion_combo.isEnabled()

    current.set_run(load_run(tiny_cnn_run, "cpu"))
    _wait_result(qtbot, tab, session.viewer.index)
    assert tab.result.key[3] == str(tiny_cnn_run)
    res = tab.result
    assert not res.has_attention and res.rollout == {} and res.per_head.shape[:2] == (0, 0)
    # a barely trained CNN can hold only negative evidence for its predicted class on
    # this ramp (Grad-CAM's ReLU then gives an all-zero map); which class it predicts
    # depends on the RNG state its training started from, i.e. on earlier tests
    assert res.grad_cam.shape == (64, 80) and np.isfinite(res.grad_cam).all()
    assert res.grad_cam.min() >= 0
    degenerate = res.grad_cam.max() == 0
    # Grad-CAM chosen; the attention choices are greyed out and say why
    assert tab.mode_combo.currentText() == "Grad-CAM"
    items = tab.mode_combo.model()
    for i, mode in enumerate(("Rollout", "Head mean", "Layer / head")):
        assert tab.mode_combo.itemText(i) == mode
        assert not items.item(i).isEnabled() and items.item(i).toolTip() == CNN_TIP
    assert items.item(3).isEnabled()
    assert not (tab.fusion_combo.isEnabled() or tab.layer_spin.isEnabled()
                or tab.head_spin.isEnabled())
    assert tab.mode_combo.toolTip() == CNN_TIP == "attention maps need a ViT; Grad-CAM is shown"
    assert tab.layer_spin.toolTip() == CNN_TIP
    # the overlay on the viewer is the CAM, on the slice grid
    assert tab.overlay.isVisible()
    np.testing.assert_allclose(tab.overlay.image, normalize01(res.grad_cam))
    assert tab.overlay.image.max() == pytest.approx(0.0 if degenerate else 1.0)
    assert tab.overlay.mapRectToParent(tab.overlay.boundingRect()) == \
        view.image.mapRectToParent(view.image.boundingRect())

    # back to a ViT: every choice is offered again
    current.set_run(load_run(tiny_run, "cpu"))
    _wait_result(qtbot, tab, session.viewer.index)
    assert tab.result.has_attention and tab.result.key[3] == str(tiny_run)
    assert all(items.item(i).isEnabled() for i in range(4))
    assert tab.mode_combo.toolTip() != CNN_TIP
    tab.mode_combo.setCurrentText("Rollout")
    assert tab.fusion_combo.isEnabled()
    np.testing.assert_allclose(tab.overlay.image, normalize01(tab.result.rollout["mean"]))


def test_prediction_shows_its_trust_cues_and_greys_an_outside_slice(
        qtbot, setup, sample_dir):  # noqa: F811
    from vitdesk.imaging.io import load_path

    session, view, current, tab = setup
    vol = load_path(sample_dir / "case_001").volumes[0]
    session.viewer.set_volume(vol)
    session.viewer.set_axis("axial")
    session.viewer.set_index(2)
    _wait_result(qtbot, tab, 2)
    trust = tab.result.trust
    assert trust is not None and trust.shift is not None and trust.sets is not None
    text = tab.trust_label.text()
    assert "Shift:" in text and stated_rate(text) and "Conformal:" in text
    assert f"temperature {trust.temperature:.2f}" in text
    # calibrated: the bars show the temperature-scaled probabilities
    np.testing.assert_allclose(tab.result.probs, trust.probs[0], atol=1e-6)
    if not trust.outside[0]:
        assert all(b.isEnabled() for b in tab.prob_bars)
        assert not tab.pred_label.text().startswith("Outside")
    # a slice nothing like the training data: no confident bar, and it says why
    from dataclasses import replace

    from tests.trustdata import checkerboard

    board = np.broadcast_to(checkerboard(vol.hu.shape[1:]), vol.hu.shape).copy()
    session.viewer.set_volume(replace(vol, hu=board))
    session.viewer.set_index(2)
    qtbot.waitUntil(lambda: tab.result is not None and tab.result.trust is not None
                    and tab.result.trust.outside[0]
                    and not (tab.task and tab.task.is_running()), timeout=20000)
    assert tab.pred_label.text().startswith("Outside what the model was trained on")
    assert not any(b.isEnabled() for b in tab.prob_bars)
    assert "OUT OF DISTRIBUTION" in tab.trust_label.text()


def test_overlay_low_end_is_transparent_and_colour_bar_follows_it(qtbot, setup):
    from vitdesk.gui.reading_aids import overlay_lut

    session, view, current, tab = setup
    _wait_result(qtbot, tab, session.viewer.index)
    assert tab.overlay.isVisible()
    lut = tab.overlay.lut
    # RGBA: value 0 is fully see-through (the slice shows), the top end fully opaque
    assert lut.shape == (256, 4) and lut[0, 3] == 0 and lut[-1, 3] == 255
    np.testing.assert_array_equal(lut, overlay_lut("inferno"))
    # what the viewer paints: a cold pixel adds nothing, a hot one its colour
    rgba = tab.overlay.lut[np.rint(tab.overlay.image * 255).astype(int)]
    cold = tab.overlay.image < 0.05
    assert cold.any() and (rgba[cold, 3] == 0).all()
    # the colour bar is shown with the overlay, with its range and name
    bar = view.overlay.colorbar
    assert bar is not None and bar[1:] == (0.0, 1.0, "attention")
    np.testing.assert_array_equal(bar[0], lut)
    # a new colormap: overlay and bar change together
    tab.cmap_combo.setCurrentText("viridis")
    np.testing.assert_array_equal(tab.overlay.lut, overlay_lut("viridis"))
    np.testing.assert_array_equal(view.overlay.colorbar[0], overlay_lut("viridis"))
    # hidden with the overlay: unchecked, or another tab shown
    tab.show_check.setChecked(False)
    assert not tab.overlay.isVisible() and view.overlay.colorbar is None
    tab.show_check.setChecked(True)
    assert tab.overlay.isVisible() and view.overlay.colorbar is not None
    tab.hide()
    assert not tab.overlay.isVisible() and view.overlay.colorbar is None
    tab.show()
    assert view.overlay.colorbar is not None
    view.grab()  # the bar paints
    # another slice: the old slice's map is hidden at once, the new one shown when ready
    session.viewer.set_index(session.viewer.index + 1)
    assert not tab.overlay.isVisible() and view.overlay.colorbar is None
    _wait_result(qtbot, tab, session.viewer.index)
    assert tab.overlay.isVisible() and view.overlay.colorbar is not None


def test_export_is_at_the_source_slice_resolution(qtbot, setup, sample_dir, tmp_path):  # noqa: F811
    import pydicom

    from vitdesk.gui.tabs.attention_tab import source_resolution
    from vitdesk.imaging.io import load_path

    session, view, current, tab = setup
    vol = load_path(sample_dir / "case_002").volumes[0]
    ds = pydicom.dcmread(vol.source_files[1])
    rows, cols = int(ds.Rows), int(ds.Columns)
    assert (rows, cols) != (current.run.img_size,) * 2  # 48 px vs the model's 32
    session.viewer.set_volume(vol)
    session.viewer.set_axis("axial")
    session.viewer.set_index(1)
    _wait_result(qtbot, tab, 1)
    view.resize(700, 500)  # the screen shows it larger: the export must not follow the screen
    blended = cv2.imread(str(tab.export_png(tmp_path / "blend.png")), cv2.IMREAD_UNCHANGED)
    assert blended.shape == (rows, cols, 3)
    alone = cv2.imread(str(tab.export_png(tmp_path / "map.png", blended=False)),
                       cv2.IMREAD_UNCHANGED)
    assert alone.shape == (rows, cols) and alone.dtype == np.uint8
    heat = tab.current_map()
    np.testing.assert_array_equal(alone, np.rint(heat * 255).astype(np.uint8))
    assert alone.max() == 255
    # a cold pixel is the windowed slice unchanged (transparent low end); a hot one is not
    from vitdesk.imaging.windowing import apply_window

    grey = np.rint(np.clip(apply_window(vol.hu[1], session.window.width,
                                        session.window.level), 0, 1) * 255)
    cold = heat < 0.05
    if cold.any():
        assert np.abs(blended[cold].astype(int) - grey[cold][:, None]).max() <= 1
    hot = heat > 0.95
    assert np.abs(blended[hot].astype(int) - grey[hot][:, None]).max() > 5
    # a map of another size is resampled to the slice's rows x columns
    small = np.zeros((32, 32), np.float32)
    small[:, 16:] = 1.0
    big = source_resolution(small, (rows, cols + 12))
    assert big.shape == (rows, cols + 12)
    assert big[:, :10].max() == 0 and big[:, -10:].min() == 1


def _labelled_workspace(qtbot, session, sample_dir, folder, classes):  # noqa: F811
    """A workspace holding the sample's series; returns (workspace, first series key)."""
    session.open_workspace(folder, create=True)
    with qtbot.waitSignal(session.import_finished, timeout=30000):
        session.import_path(sample_dir)
    ws = session.workspace
    for c in classes:
        ws.add_class(c)
    return ws, sorted(session.library.entries)[0]


def test_prediction_shows_the_slice_label_beside_it(qtbot, setup, sample_dir, tmp_path):  # noqa: F811
    session, view, current, tab = setup
    classes = list(current.run.classes)
    ws, key = _labelled_workspace(qtbot, session, sample_dir, tmp_path / "ws", classes)
    session.open_series(key)
    qtbot.waitUntil(lambda: session.current_key == key, timeout=15000)
    session.viewer.set_axis("axial")
    session.viewer.set_index(2)
    _wait_result(qtbot, tab, 2)
    pred = classes[int(tab.result.probs.argmax())]
    other = next(c for c in classes if c != pred)
    # not labelled yet
    assert tab.truth_label.text() == "Label: not known (label it in the Dataset tab)"
    ws.set_slice_label(key, 2, pred)
    session.viewer.set_index(3)
    _wait_result(qtbot, tab, 3)
    session.viewer.set_index(2)
    _wait_result(qtbot, tab, 2)
    assert tab.truth_label.text() == f"Label: {pred} (agrees)"
    # a label that disagrees is marked
    ws.set_slice_label(key, 2, other)
    session.viewer.set_index(1)
    _wait_result(qtbot, tab, 1)
    session.viewer.set_index(2)
    _wait_result(qtbot, tab, 2)
    assert tab.truth_label.text() == f"Label: {other} ✗ disagrees with the prediction"
