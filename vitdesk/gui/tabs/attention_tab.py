"""Attention tab: where the model looks on the slice in the viewer.

For the current slice the tab shows the run's class probabilities and draws an
attention map *on the viewer*: an extra pyqtgraph ImageItem above the slice, with
its own colormap and opacity, mapped back through the preprocessing letterbox
(:class:`vitdesk.data.dataset.Letterbox`) so it lines up with the pixels shown.
Maps: one layer/head, the head mean of a layer, attention rollout (head fusion
mean/max/min) or Grad-CAM. A CNN run has no attention: the tab then offers Grad-CAM
only (the other choices are disabled, with a tooltip saying why). Changing slice
recomputes in a worker after a short pause (debounced); changing the map, colormap or
opacity only redraws.

The prediction is shown with its trust cues: calibrated probabilities (the run's
temperature), the slice's conformal set ("refer" when it is not one class) and the
shift check against the run's held-out threshold; a slice outside what the model was
trained on gets grey, disabled bars and says so instead of a confident percentage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from vitdesk.gui import geometry
from vitdesk.gui.analysis_jobs import SliceAttention, attention_job
from vitdesk.gui.dialogs import gui_words, show_error
from vitdesk.gui.reading_aids import overlay_lut
from vitdesk.gui.run_state import CurrentRun, RunPicker
from vitdesk.gui.session import Session
from vitdesk.gui.slice_view import SliceView
from vitdesk.gui.tabs.analysis_common import (
    HINT_STYLE,
    OUTSIDE_COLOUR,
    WARN_COLOUR,
    hint,
    scroll_layout,
    trust_html,
)
from vitdesk.gui.worker import Task

MODES = ("Rollout", "Head mean", "Layer / head", "Grad-CAM")
CAM_MODE = "Grad-CAM"
CNN_TIP = "attention maps need a ViT; Grad-CAM is shown"
COLORMAPS = ("inferno", "turbo", "viridis", "plasma", "CET-L8")
DEBOUNCE_MS = 250


class AttentionTab(QWidget):
    """Attention maps of the current run over the viewer's slice."""

    def __init__(self, session: Session, current: CurrentRun, view: SliceView,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.current, self.slice_view = session, current, view
        self.result: SliceAttention | None = None
        self.task: Task | None = None
        self._pending = False
        self.cnn = False  # the current run is a CNN: Grad-CAM only

        self.picker = RunPicker(current, self)

        # --- prediction
        self.pred_label = QLabel("—", self)
        self.pred_label.setStyleSheet("font-weight: bold;")
        self.prob_bars: list[QProgressBar] = []
        self.prob_grid = QGridLayout()
        pred_box = QGroupBox("Prediction for this slice", self)
        pl = QVBoxLayout(pred_box)
        pl.addWidget(self.pred_label)
        # ground truth beside the prediction: the workspace's label of this slice
        self.truth_label = QLabel("", self)
        pl.addWidget(self.truth_label)
        pl.addLayout(self.prob_grid)
        self.trust_label = QLabel("", self)
        self.trust_label.setWordWrap(True)
        self.trust_label.setTextFormat(pg.QtCore.Qt.TextFormat.RichText)
        pl.addWidget(self.trust_label)

        # --- map choice
        self.mode_combo = QComboBox(self)
        self.mode_combo.addItems(MODES)
        self.mode_tip = ("Rollout: attention flow through all layers (Abnar & "
                         "Zuidema). Head mean / Layer-head: the class token's "
                         "attention in one layer. Grad-CAM: gradient-weighted "
                         "tokens (ViT) or feature maps (CNN) for the predicted class.")
        self.mode_combo.setToolTip(self.mode_tip)
        self.layer_spin = QSpinBox(self)
        self.layer_spin.setRange(1, 1)
        self.head_spin = QSpinBox(self)
        self.head_spin.setRange(1, 1)
        self.fusion_combo = QComboBox(self)
        self.fusion_combo.addItems(["mean", "max", "min"])
        self.fusion_tip = "How the heads of each layer are fused before rollout"
        self.fusion_combo.setToolTip(self.fusion_tip)
        self.cmap_combo = QComboBox(self)
        self.cmap_combo.addItems(COLORMAPS)
        self.opacity_slider = QSlider(self)
        self.opacity_slider.setOrientation(pg.QtCore.Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(45)
        self.opacity_value = QLabel("45%", self)
        self.opacity_value.setMinimumWidth(36)
        self.show_check = QCheckBox("Show overlay on the viewer", self)
        self.show_check.setChecked(True)
        op_row = QHBoxLayout()
        op_row.addWidget(self.opacity_slider, 1)
        op_row.addWidget(self.opacity_value)
        map_box = QGroupBox("Attention map", self)
        ml = QFormLayout(map_box)
        ml.addRow("Map", self.mode_combo)
        ml.addRow("Head fusion", self.fusion_combo)
        ml.addRow("Layer", self.layer_spin)
        ml.addRow("Head", self.head_spin)
        ml.addRow("Colormap", self.cmap_combo)
        ml.addRow("Opacity", op_row)
        ml.addRow(self.show_check)

        self.export_button = QPushButton("Export overlay PNG…", self)
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._export_dialog)
        self.status = hint("", self)

        lay = scroll_layout(self)
        lay.addWidget(self.picker)
        lay.addWidget(pred_box)
        lay.addWidget(map_box)
        lay.addWidget(self.export_button)
        lay.addWidget(self.status)
        lay.addWidget(hint("Maps are recomputed for each slice shown; they are explanations of "
                           "the model, not findings.", self))
        lay.addStretch(1)

        # --- the overlay, layered above the slice image on the viewer
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(10)
        self.overlay.setOpacity(self.opacity_slider.value() / 100)
        self.overlay.setVisible(False)
        view.view.addItem(self.overlay)
        self.lut = overlay_lut(self.cmap_combo.currentText())
        self._bar_lut: np.ndarray | None = None  # the lut of the colour bar shown, if any
        self._apply_cmap()

        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)
        self.debounce.timeout.connect(self.recompute)

        for sig in (session.viewer.slice_changed, session.viewer.volume_changed,
                    session.viewer.axis_changed):
            sig.connect(self._schedule)
        current.changed.connect(self._on_run)
        self.mode_combo.currentIndexChanged.connect(self._on_mode)
        for w in (self.layer_spin, self.head_spin):
            w.valueChanged.connect(lambda _v: self.redraw())
        self.fusion_combo.currentIndexChanged.connect(lambda _i: self.redraw())
        self.cmap_combo.currentIndexChanged.connect(lambda _i: self._apply_cmap())
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        self.show_check.toggled.connect(lambda _on: self._update_visibility())
        self._on_mode()
        self._on_run(current.run)

    # ----------------------------------------------------------------- state -> work
    def _on_run(self, run: Any) -> None:
        from vitdesk.engine.models import is_cnn  # here: the module pulls in timm

        self.result = None
        self.truth_label.setText("")
        self._set_cnn(run is not None and is_cnn(run.model))
        for bar in self.prob_bars:
            bar.deleteLater()
        self.prob_bars = []
        while self.prob_grid.count():
            item = self.prob_grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        if run is None:
            self.status.setText("Pick a run to see its attention on the slice.")
            self._update_visibility()
            return
        for i, name in enumerate(run.classes):
            bar = QProgressBar(self)
            bar.setRange(0, 1000)
            bar.setFormat("%p%")
            bar.setTextVisible(True)
            self.prob_grid.addWidget(QLabel(name, self), i, 0)
            self.prob_grid.addWidget(bar, i, 1)
            self.prob_bars.append(bar)
        blocks = [] if self.cnn else getattr(run.model, "blocks", [])
        n_layers = max(1, len(blocks))
        heads = getattr(getattr(blocks[0], "attn", None), "num_heads", 1) if len(blocks) else 1
        self.layer_spin.setRange(1, n_layers)
        self.layer_spin.setValue(n_layers)
        self.head_spin.setRange(1, max(1, int(heads)))
        self._schedule()

    def _set_cnn(self, cnn: bool) -> None:
        """Offer Grad-CAM only for a CNN run (no attention to show); all maps for a ViT."""
        self.cnn = cnn
        model = self.mode_combo.model()
        for i, mode in enumerate(MODES):
            item = model.item(i)
            if mode != CAM_MODE:
                item.setEnabled(not cnn)  # greyed out in the list, cannot be picked
                item.setToolTip(CNN_TIP if cnn else "")
        self.mode_combo.setToolTip(CNN_TIP if cnn else self.mode_tip)
        self.fusion_combo.setToolTip(CNN_TIP if cnn else self.fusion_tip)
        for w in (self.layer_spin, self.head_spin):
            w.setToolTip(CNN_TIP if cnn else "")
        if cnn:
            self.mode_combo.setCurrentText(CAM_MODE)  # fires _on_mode, which disables the rest
        else:
            self._on_mode()

    def _schedule(self, *_args: Any) -> None:
        # the map of another slice is hidden at once (it would not belong to the image
        # shown, and cine frames then draw the slice alone) until this slice's map is in
        self._update_visibility()
        self.debounce.start()

    def _key(self) -> tuple | None:
        vol, run = self.session.viewer.volume, self.current.run
        if vol is None or run is None:
            return None
        return (id(vol), self.session.viewer.axis, self.session.viewer.index, str(run.run_dir))

    def recompute(self) -> Task | None:
        """Compute the maps of the slice in the viewer (in a worker) unless cached."""
        key = self._key()
        if key is None:
            self.result = None
            self._update_visibility()
            return None
        if not self.isVisible():
            return None  # nobody looks: showEvent recomputes when the tab is shown
        if self.result is not None and self.result.key == key:
            self._show_truth(self.result.classes[int(self.result.probs.argmax())])
            self.redraw()
            return None
        if self.task is not None and self.task.is_running():
            self._pending = True  # one more pass when the current one ends
            return None
        vol = self.session.viewer.volume
        hu = np.ascontiguousarray(geometry.plane(vol, self.session.viewer.axis,
                                                 self.session.viewer.index), dtype=np.float32)
        task = Task(attention_job, self.current.run, self.current.lock, hu, "dicom", key,
                    name="attention")
        task.finished.connect(self._on_result)
        task.errored.connect(self._on_error)
        task.done.connect(self._on_done)
        self.task = task
        self.status.setText("Computing attention…")
        self.session.task_started.emit(task, "Attention maps")
        return task.start()

    def _on_done(self) -> None:
        if self._pending:
            self._pending = False
            self.recompute()

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"Attention failed: {gui_words(str(exc))}")
        show_error(self, exc)

    def _on_result(self, res: SliceAttention) -> None:
        if res.key != self._key():  # the slice changed meanwhile; _pending recomputes
            self._pending = True
            return
        self.result = res
        k = int(res.probs.argmax())
        trust = res.trust
        outside = trust is not None and bool(trust.outside[0])
        refer = trust is not None and trust.refer is not None and bool(trust.refer[0])
        if outside:
            # no confident-looking number for a slice unlike anything trained on
            self.pred_label.setText(f"Outside what the model was trained on "
                                    f"(it would say {res.classes[k]})")
        elif refer:
            self.pred_label.setText(f"Refer: set {{{trust.sets[0].replace('|', ', ')}}} "
                                    f"({res.classes[k]} {res.probs[k]:.1%})")
        else:
            self.pred_label.setText(f"Predicted: {res.classes[k]} ({res.probs[k]:.1%})")
        for bar, p in zip(self.prob_bars, res.probs, strict=False):
            bar.setValue(int(round(float(p) * 1000)))
            bar.setEnabled(not outside)
            bar.setStyleSheet(f"QProgressBar::chunk {{ background: {OUTSIDE_COLOUR}; }}"
                              if outside else "")
        self.trust_label.setText(trust_html(trust) if trust is not None else "")
        self._show_truth(res.classes[k])
        self.export_button.setEnabled(True)
        self.status.setText(f"Slice {self.session.viewer.index + 1} "
                            f"({self.session.viewer.axis}).")
        self.redraw()

    def slice_label(self) -> str | None:
        """The label of the slice in the viewer from the open workspace (its own label,
        else its series' label), or None when not known."""
        ws, key = self.session.workspace, self.session.current_key
        if ws is None or key is None or self.session.viewer.axis != "axial":
            return None
        try:
            return ws.labels_for_series(key).get(self.session.viewer.index)
        except Exception:  # noqa: BLE001 - a series the workspace does not hold: not known
            return None

    def _show_truth(self, predicted: str) -> None:
        label = self.slice_label()
        if label is None:
            self.truth_label.setText("Label: not known (label it in the Dataset tab)")
            self.truth_label.setStyleSheet(HINT_STYLE)
        elif label == predicted:
            self.truth_label.setText(f"Label: {label} (agrees)")
            self.truth_label.setStyleSheet("")
        else:
            self.truth_label.setText(f"Label: {label} ✗ disagrees with the prediction")
            self.truth_label.setStyleSheet(f"color: {WARN_COLOUR};")

    # ----------------------------------------------------------------- drawing
    def current_map(self) -> np.ndarray | None:
        """The chosen map of the current result at the slice's shape, scaled to [0, 1]."""
        from vitdesk.analysis.attention import normalize01

        r = self.result
        if r is None:
            return None
        mode = self.mode_combo.currentText()
        layer = self.layer_spin.value() - 1
        if not r.has_attention:
            mode = CAM_MODE  # a CNN result holds Grad-CAM only
        if mode == "Rollout":
            m = r.rollout[self.fusion_combo.currentText()]
        elif mode == "Head mean":
            m = r.head_mean[layer]
        elif mode == "Layer / head":
            m = r.per_head[layer, self.head_spin.value() - 1]
        else:
            m = r.grad_cam
        return normalize01(m)

    def redraw(self) -> None:
        heat = self.current_map()
        vol = self.session.viewer.volume
        if heat is None or vol is None:
            self._update_visibility()
            return
        h, w = heat.shape
        pw, ph = geometry.pixel_size(vol, self.session.viewer.axis)
        self.overlay.setImage(heat, autoLevels=False, levels=(0.0, 1.0))
        self.overlay.setRect(QRectF(0, 0, w * pw, h * ph))  # same mm rect as the slice
        self._update_visibility()

    def _apply_cmap(self) -> None:
        # RGBA with a see-through low end: cold regions leave the slice untouched
        self.lut = overlay_lut(self.cmap_combo.currentText())
        self.overlay.setLookupTable(self.lut)
        self._update_visibility()

    def _on_opacity(self, value: int) -> None:
        self.opacity_value.setText(f"{value}%")
        self.overlay.setOpacity(value / 100.0)

    def _on_mode(self, *_args: Any) -> None:
        mode = self.mode_combo.currentText()
        vit = not self.cnn
        self.fusion_combo.setEnabled(vit and mode == "Rollout")
        self.layer_spin.setEnabled(vit and mode in ("Head mean", "Layer / head"))
        self.head_spin.setEnabled(vit and mode == "Layer / head")
        self.redraw()

    def _update_visibility(self) -> None:
        shown = (self.result is not None and self.result.key == self._key()
                 and self.show_check.isChecked() and self.isVisible())
        self.overlay.setVisible(shown)
        # the colour bar belongs to the overlay: shown with it, hidden without it
        self._set_colorbar(self.lut if shown else None)

    def _set_colorbar(self, lut: np.ndarray | None) -> None:
        # only on a change: every cine frame passes here, and a new bar repaints the view
        if lut is self._bar_lut:
            return
        self._bar_lut = lut
        self.slice_view.set_overlay_colorbar(lut, 0.0, 1.0, "attention")

    def showEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        super().showEvent(ev)
        self._update_visibility()
        self._schedule()

    def hideEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        # The overlay belongs to this tab: other tabs show a clean slice.
        super().hideEvent(ev)
        self.overlay.setVisible(False)
        self._set_colorbar(None)

    # ----------------------------------------------------------------- export
    def export_png(self, path: str | Path, blended: bool = True) -> Path:
        """Write the map at the slice's own resolution (its rows x columns in the source,
        never the model's input size nor the screen's): blended with the slice (current
        display window, the viewer's colormap and opacity) or, with ``blended`` False, the
        map alone as 8-bit grey (0..255 = the map's 0..1)."""
        import cv2

        from vitdesk.imaging.windowing import apply_window

        heat = self.current_map()
        vol = self.session.viewer.volume
        if heat is None or vol is None:
            raise RuntimeError("no attention map to export yet")
        plane = geometry.plane(vol, self.session.viewer.axis, self.session.viewer.index)
        heat = source_resolution(heat, plane.shape)
        if blended:
            img = apply_window(plane, self.session.window.width, self.session.window.level)
            # the viewer's colormap and see-through low end, so the file looks like the screen
            out = _blend(img, heat, self.opacity_slider.value() / 100.0, self.lut)[..., ::-1]
        else:
            out = np.clip(np.rint(heat * 255), 0, 255).astype(np.uint8)
        path = Path(path)
        if not cv2.imwrite(str(path), np.ascontiguousarray(out)):
            raise OSError(f"{path}: could not write the PNG; check the folder")
        return path

    def _export_dialog(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export attention overlay", "attention.png",
            f"{EXPORT_BLENDED} (*.png);;{EXPORT_MAP} (*.png)")
        if path:
            try:
                self.export_png(path, blended=not chosen.startswith(EXPORT_MAP))
                self.session.message.emit(f"Overlay written to {path}")
            except Exception as exc:  # noqa: BLE001 - shown to the user
                show_error(self, exc)


EXPORT_BLENDED = "Map blended with the slice"
EXPORT_MAP = "Map alone, 8-bit grey"


def source_resolution(heat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``heat`` resampled (bilinear) to the slice's rows x columns, if it differs."""
    import cv2

    rows, cols = int(shape[0]), int(shape[1])
    if heat.shape == (rows, cols):
        return heat
    return cv2.resize(heat.astype(np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR)


def _blend(img: np.ndarray, heat: np.ndarray, alpha: float, lut: np.ndarray) -> np.ndarray:
    """Grey [0, 1] image blended with an RGBA lookup table (its alpha times ``alpha``)."""
    rgba = lut[np.clip(np.rint(heat * (len(lut) - 1)), 0, len(lut) - 1).astype(int)]
    colour = rgba[..., :3].astype(np.float32) / 255
    a = alpha * rgba[..., 3:4].astype(np.float32) / 255
    grey = np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2)
    return np.clip(np.rint(((1 - a) * grey + a * colour) * 255), 0, 255).astype(np.uint8)
