"""The training setup form, bound to a :class:`~vitdesk.config.RunConfig`.

The config object is the truth: every widget writes its field into ``form.cfg`` as
it changes, :meth:`TrainingForm.set_config` writes a config back into the widgets,
and :meth:`TrainingForm.run_config` gives the resolved, validated config of a run
(data source, window and split from the Dataset tab, run folder, the
random-backbone rule applied).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from vitdesk.config import (
    AMP_MODES,
    BALANCE,
    POOLS,
    RECIPES,
    RunConfig,
    StageConfig,
    default_stages,
    patch_size_of,
)
from vitdesk.engine.plan import Plan, apply_rules, check_run, inherit_parent
from vitdesk.errors import ConfigError
from vitdesk.gui.dialogs import gui_words
from vitdesk.gui.tabs.training_plan import (
    MODELS,
    default_run_folder,
    find_backbones,
    native_img_size,
    plan_text,
)
from vitdesk.gui.tabs.training_sites import SitesBox
from vitdesk.gui.tabs.training_teacher import TeacherBox
from vitdesk.gui.tabs.training_widgets import (
    StageTable,
    combo_box,
    dspin_box,
    select_data,
    spin_box,
)

ATTENTION_CHOICES = ("auto", "sdpa", "eager")
MEMORY_KEY = "training_form"  # workspace setting: the form's last values there


class TrainingForm(QWidget):
    """Model, weights, recipe, options, device, data source and run folder of a run.

    Args:
        workspace: returns the open workspace folder (or None).
        data_prefs: returns the Dataset tab's training-input choices
            ``{"window": WindowSpec dict, "fractions": [..], "seed": n}`` (or None).
    """

    changed = Signal()

    def __init__(self, workspace: Callable[[], str | None],
                 data_prefs: Callable[[], dict | None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.data_prefs = data_prefs or (lambda: None)
        self.cfg = RunConfig()
        self.cfg.recipe.stages = self.cfg.stage_plan()
        self.cfg.device = "cpu"
        self.known_models: set[str] | None = None  # filled by the tab's background probe
        self._loading = False
        self.problem = ""
        self.warning = ""
        # Set by the main window: the open Workspace (the form's last values are kept in
        # it), the preferred device and the run folder's parent without a workspace.
        self.store: Callable[[], Any] | None = None
        self.preferred_device: str | None = None
        self.output_root: str | None = None
        self._remember_timer = QTimer(self)
        self._remember_timer.setSingleShot(True)
        self._remember_timer.setInterval(400)  # one write after a burst of edits
        self._remember_timer.timeout.connect(self.remember)

        # ---- model
        self.model_combo = QComboBox(self)
        self.model_combo.setEditable(True)
        self.model_combo.addItems(MODELS)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.img_spin = spin_box(self, 8, 1024, self.cfg.model.img_size, 16)
        self.weights_combo = QComboBox(self)
        self.weights_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.weights_combo.setMinimumContentsLength(8)
        self.weights_file_button = QToolButton(self)
        self.weights_file_button.setText("File…")
        self.weights_file_button.setToolTip("A .safetensors / .pth / timm checkpoint file")
        self.weights_dir_button = QToolButton(self)
        self.weights_dir_button.setText("Dir…")
        self.weights_dir_button.setToolTip("An MAE pretraining folder or a vitdesk run folder")
        self.device_combo = combo_box(self, [("CPU", "cpu")])

        model_box = QGroupBox("Model", self)
        mf = QFormLayout(model_box)
        mf.addRow("Network", self.model_combo)
        mf.addRow("Image size", self.img_spin)
        wrow = QHBoxLayout()
        wrow.addWidget(self.weights_combo, 1)
        wrow.addWidget(self.weights_file_button)
        wrow.addWidget(self.weights_dir_button)
        mf.addRow("Weights", wrow)
        mf.addRow("Device", self.device_combo)

        # ---- recipe
        self.recipe_combo = combo_box(self, [(k, k) for k in RECIPES])
        self.stage_table = StageTable(self)
        self.add_stage_button = QToolButton(self)
        self.add_stage_button.setText("+ stage")
        self.remove_stage_button = QToolButton(self)
        self.remove_stage_button.setText("− stage")
        self.force_staged_box = QCheckBox("Keep staged without weights", self)
        self.force_staged_box.setToolTip("Train the staged plan even from random weights")
        self.warning_label = QLabel(self)
        self.warning_label.setObjectName("banner")
        self.warning_label.setWordWrap(True)
        self.warning_label.hide()
        self.plan_label = QLabel(self)
        self.plan_label.setObjectName("overlay")
        self.plan_label.setWordWrap(True)
        recipe_box = QGroupBox("Recipe", self)
        rl = QVBoxLayout(recipe_box)
        top = QHBoxLayout()
        top.addWidget(QLabel("Preset", self))
        top.addWidget(self.recipe_combo)
        top.addStretch(1)
        top.addWidget(self.add_stage_button)
        top.addWidget(self.remove_stage_button)
        rl.addLayout(top)
        rl.addWidget(self.stage_table)
        rl.addWidget(self.force_staged_box)
        rl.addWidget(self.warning_label)
        rl.addWidget(self.plan_label)

        # ---- advanced
        self.batch_spin = spin_box(self, 1, 4096, self.cfg.data.batch_size)
        self.accum_spin = spin_box(self, 1, 512, self.cfg.optim.accumulation)
        self.amp_combo = combo_box(self, [(k, k) for k in AMP_MODES])
        self.grad_ckpt_box = QCheckBox("Gradient checkpointing", self)
        self.drop_path_spin = dspin_box(self, 0.0, 0.9, self.cfg.model.drop_path, 0.05)
        self.mixup_spin = dspin_box(self, 0.0, 10.0, self.cfg.data.mixup, 0.1)
        self.cutmix_spin = dspin_box(self, 0.0, 10.0, self.cfg.data.cutmix, 0.1)
        self.smoothing_spin = dspin_box(self, 0.0, 0.5, self.cfg.data.label_smoothing, 0.05)
        self.patience_spin = spin_box(self, 0, 1000, self.cfg.patience)
        self.patience_spin.setSpecialValueText("off")
        self.attention_combo = combo_box(self, [(k, k) for k in ATTENTION_CHOICES])
        self.balance_combo = combo_box(self, [(k, k) for k in BALANCE])
        self.patient_combo = combo_box(self, [(k, k) for k in ("check", "csv", "dicom")])
        self.patient_combo.setToolTip("A labels.csv patient_id column against the files' "
                                      "DICOM PatientID: check that they agree, or trust "
                                      "the csv column or the dicom tag")
        self.pool_combo = combo_box(self, [(k, k) for k in POOLS])
        self.pool_combo.setToolTip("What the classifier reads: the class token or the mean "
                                   "patch token; auto = mean for pretrained (MAE, formula) "
                                   "backbones and random "
                                   "init, class token for hub/file weights")
        self.advanced_button = QToolButton(self)
        self.advanced_button.setText("Advanced options")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced = QWidget(self)
        g = QFormLayout(self.advanced)
        g.setContentsMargins(8, 0, 4, 0)
        for label, w in (("Batch size", self.batch_spin), ("Accumulation", self.accum_spin),
                         ("Mixed precision", self.amp_combo),
                         ("Attention", self.attention_combo),
                         ("DropPath", self.drop_path_spin),
                         ("Label smoothing", self.smoothing_spin),
                         ("Mixup α", self.mixup_spin), ("CutMix α", self.cutmix_spin),
                         ("Early stopping", self.patience_spin),
                         ("Class balance", self.balance_combo),
                         ("Patient IDs", self.patient_combo),
                         ("Pooling", self.pool_combo)):
            g.addRow(label, w)
        g.addRow(self.grad_ckpt_box)
        self.patience_spin.setSuffix(" epochs")
        self.advanced.setVisible(False)
        self.advanced_button.toggled.connect(self._toggle_advanced)

        self.teacher_box = TeacherBox(self.workspace, self._set,
                                      lambda: self.cfg.model.name, parent=self)
        self.sites_box = SitesBox(self.workspace, self._set, parent=self)

        # ---- data and output
        self.ws_radio = QRadioButton("Open workspace (labels from the Dataset tab)", self)
        self.src_radio = QRadioButton("Folder or CSV", self)
        self.src_edit = QLineEdit(self)
        self.src_edit.setPlaceholderText("DICOM folder with labels.csv, class folders or a CSV")
        self.src_dir_button = QToolButton(self)
        self.src_dir_button.setText("Folder…")
        self.src_csv_button = QToolButton(self)
        self.src_csv_button.setText("CSV…")
        self.window_label = QLabel(self)
        self.window_label.setObjectName("overlay")
        self.window_label.setWordWrap(True)
        self.out_edit = QLineEdit(self)
        self.out_edit.setToolTip("The run folder (config, history, checkpoints); empty = "
                                 "a new dated folder under the workspace's runs/")
        self.out_button = QToolButton(self)
        self.out_button.setText("…")
        data_box = QGroupBox("Data and output", self)
        dl = QVBoxLayout(data_box)
        dl.addWidget(self.ws_radio)
        dl.addWidget(self.src_radio)
        srow = QHBoxLayout()
        srow.setContentsMargins(20, 0, 0, 0)
        srow.addWidget(self.src_edit, 1)
        srow.addWidget(self.src_dir_button)
        srow.addWidget(self.src_csv_button)
        dl.addLayout(srow)
        dl.addWidget(self.window_label)
        orow = QHBoxLayout()
        orow.addWidget(QLabel("Run", self))
        orow.addWidget(self.out_edit, 1)
        orow.addWidget(self.out_button)
        dl.addLayout(orow)

        self.problem_label = QLabel(self)
        self.problem_label.setWordWrap(True)
        self.problem_label.setObjectName("problem")
        self.problem_label.hide()

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(data_box)  # first: what to train on, then how
        lay.addWidget(model_box)
        lay.addWidget(recipe_box)
        lay.addWidget(self.advanced_button)
        lay.addWidget(self.advanced)
        lay.addWidget(self.teacher_box)
        lay.addWidget(self.sites_box)
        lay.addWidget(self.problem_label)
        lay.addStretch(1)

        # ---- bindings: widget -> cfg field (dotted paths: set_config replaces self.cfg)
        self.model_combo.currentTextChanged.connect(self._on_model)
        self.img_spin.valueChanged.connect(lambda v: self._set("model.img_size", v))
        self.weights_combo.currentIndexChanged.connect(self._on_weights)
        self.weights_file_button.clicked.connect(self._browse_weights_file)
        self.weights_dir_button.clicked.connect(self._browse_weights_dir)
        self.device_combo.currentIndexChanged.connect(
            lambda _i: self._set("device", self.device_combo.currentData()))
        self.recipe_combo.currentIndexChanged.connect(self._on_recipe)
        self.stage_table.changed.connect(self._on_stages)
        self.add_stage_button.clicked.connect(
            lambda: self.stage_table.add_stage(StageConfig("extra", 1, 1e-4, "all", 1.0)))
        self.remove_stage_button.clicked.connect(self.stage_table.remove_last)
        self.force_staged_box.toggled.connect(lambda v: self._set("recipe.force_staged", v))
        for spin, path in ((self.batch_spin, "data.batch_size"),
                           (self.accum_spin, "optim.accumulation"),
                           (self.drop_path_spin, "model.drop_path"),
                           (self.mixup_spin, "data.mixup"),
                           (self.cutmix_spin, "data.cutmix"),
                           (self.smoothing_spin, "data.label_smoothing"),
                           (self.patience_spin, "patience")):
            spin.valueChanged.connect(lambda v, path=path: self._set(path, v))
        for combo, path in ((self.amp_combo, "amp"), (self.attention_combo, "model.attention"),
                            (self.balance_combo, "data.balance"),
                            (self.patient_combo, "data.patient_id"),
                            (self.pool_combo, "model.pool")):
            combo.currentIndexChanged.connect(
                lambda _i, c=combo, path=path: self._set(path, c.currentData()))
        self.grad_ckpt_box.toggled.connect(lambda v: self._set("model.grad_checkpointing", v))
        self.ws_radio.toggled.connect(lambda _v: self.refresh())
        self.src_edit.textChanged.connect(lambda _t: self.refresh())
        self.src_dir_button.clicked.connect(self._browse_src_dir)
        self.src_csv_button.clicked.connect(self._browse_src_csv)
        self.out_edit.textChanged.connect(lambda _t: self.refresh())
        self.out_button.clicked.connect(self._browse_out)
        self.changed.connect(self.teacher_box.update_hint)  # "auto" follows the model

        self.refresh_weights()
        self.set_config(self.cfg)
        self.refresh_workspace()
        self.changed.connect(self._remember_timer.start)

    # ---- cfg <- widgets ----------------------------------------------------------------
    def _set(self, path: str, value: Any) -> None:
        """Write one field of ``self.cfg`` (``"model.img_size"``) and re-derive the rest."""
        if self._loading or value is None:
            return
        if isinstance(value, float):
            value = round(value, 6)  # spin boxes hand back binary noise (0.1500000001)
        self.cfg.set(path, value)
        self.refresh()

    def _on_model(self, name: str) -> None:
        if self._loading:
            return
        name = name.strip()
        self.cfg.model.name = name
        patch = patch_size_of(name)
        if patch:
            self.img_spin.setSingleStep(patch)
            if self.img_spin.value() % patch:
                native = native_img_size(name)
                if native:
                    self.img_spin.setValue(native)  # writes cfg through its own binding
        self.refresh()

    def _on_weights(self, _i: int) -> None:
        data = self.weights_combo.currentData()
        if data is not None:
            self._set("weights.pretrained", data)

    def _on_recipe(self, _i: int) -> None:
        if self._loading:
            return
        kind = self.recipe_combo.currentData()
        self.cfg.recipe.kind = kind
        self.cfg.recipe.stages = default_stages(kind, self.cfg.recipe.top_blocks)
        self.stage_table.set_stages(self.cfg.recipe.stages)
        self.refresh()

    def _on_stages(self) -> None:
        if self._loading:
            return
        self.cfg.recipe.stages = self.stage_table.stages()
        self.refresh()

    def _toggle_advanced(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if on
                                          else Qt.ArrowType.RightArrow)

    # ---- widgets <- cfg ----------------------------------------------------------------
    def set_config(self, cfg: RunConfig) -> None:
        """Show ``cfg`` in the widgets (a copy becomes ``self.cfg``)."""
        cfg = RunConfig.from_dict(cfg.to_dict())
        cfg.recipe.stages = cfg.stage_plan()
        self._loading = True
        try:
            self.cfg = cfg
            m, d = cfg.model, cfg.data
            self.model_combo.setCurrentText(m.name)
            self.img_spin.setSingleStep(patch_size_of(m.name) or 16)
            self.img_spin.setValue(m.img_size)
            self._select_weights(cfg.weights.pretrained)
            if self.device_combo.findData(cfg.device) < 0:
                cfg.device = self.device_combo.currentData()
            select_data(self.device_combo, cfg.device)
            select_data(self.recipe_combo, cfg.recipe.kind)
            self.stage_table.set_stages(cfg.recipe.stages)
            self.force_staged_box.setChecked(cfg.recipe.force_staged)
            self.batch_spin.setValue(d.batch_size)
            self.accum_spin.setValue(cfg.optim.accumulation)
            select_data(self.amp_combo, cfg.amp)
            self.grad_ckpt_box.setChecked(m.grad_checkpointing)
            self.drop_path_spin.setValue(m.drop_path)
            self.mixup_spin.setValue(d.mixup)
            self.cutmix_spin.setValue(d.cutmix)
            self.smoothing_spin.setValue(d.label_smoothing)
            self.patience_spin.setValue(cfg.patience)
            select_data(self.attention_combo, m.attention if m.attention in ATTENTION_CHOICES
                    else "auto")
            select_data(self.balance_combo, d.balance)
            select_data(self.patient_combo, d.patient_id)
            select_data(self.pool_combo, m.pool)
            ws = self.workspace()
            if d.source and ws and Path(d.source) == Path(ws):
                self.ws_radio.setChecked(True)
            elif d.source:
                self.src_radio.setChecked(True)
                self.src_edit.setText(d.source)
            self.teacher_box.show_config(cfg.teacher)
            self.sites_box.show_config(cfg)
        finally:
            self._loading = False
        self.refresh()

    def _select_weights(self, value: str) -> None:
        i = self.weights_combo.findData(value)
        if i < 0:
            self.weights_combo.addItem(value, value)
            i = self.weights_combo.count() - 1
        self.weights_combo.setCurrentIndex(i)

    def refresh_weights(self) -> None:
        """Rebuild the weights list: hub cache, none, workspace encoders, chosen paths."""
        current = self.cfg.weights.pretrained
        self._loading = True
        try:
            self.weights_combo.clear()
            self.weights_combo.addItem("hub cache (timm, offline)", "hub")
            self.weights_combo.addItem("none (random init)", "none")
            for b in find_backbones(self.workspace()):
                self.weights_combo.addItem(b.label(), b.folder)
                window = b.window or "none (generated images)"
                self.weights_combo.setItemData(self.weights_combo.count() - 1,
                                               f"{b.folder}\nwindow {window}",
                                               Qt.ItemDataRole.ToolTipRole)
            self._select_weights(current)
        finally:
            self._loading = False

    def refresh_workspace(self) -> None:
        """The workspace opened or closed: data source default, run folder hint, weights."""
        ws = self.workspace()
        self.ws_radio.setEnabled(bool(ws))
        if ws:
            self.ws_radio.setChecked(True)
        elif self.ws_radio.isChecked() or not self.src_radio.isChecked():
            self.src_radio.setChecked(True)
        self.out_edit.setPlaceholderText(
            f"automatic: {default_run_folder(ws or self.output_root).parent}/<date-time>")
        self.refresh_weights()
        self.teacher_box.refresh_workspace()
        self.sites_box.refresh_runs()
        self.restore()
        self.refresh()

    # ---- values kept per workspace -----------------------------------------------------
    def _workspace_obj(self) -> Any:
        return self.store() if self.store is not None else None

    def remember(self) -> bool:
        """Keep the form's values in the open workspace (not the run folder: each run
        gets a new one). False when no workspace is open."""
        self._remember_timer.stop()
        ws = self._workspace_obj()
        if ws is None or self._loading:
            return False
        data = self.cfg.to_dict()
        data["out"] = ""
        data.setdefault("data", {})["source"] = self.data_source()
        try:
            ws.set_setting(MEMORY_KEY, data)
        except Exception:  # noqa: BLE001 - a closed workspace: nothing to keep
            return False
        return True

    def restore(self) -> bool:
        """Show the values last used in the open workspace; False when there are none."""
        ws = self._workspace_obj()
        if ws is None:
            return False
        try:
            saved = ws.get_setting(MEMORY_KEY)
            if not saved:
                return False
            cfg = RunConfig.from_dict(saved)
        except Exception:  # noqa: BLE001 - values of an older version: keep the defaults
            return False
        self.set_config(cfg)
        return True

    def prefer_device(self, device: str) -> None:
        """The Preferences' device: chosen now if offered, and whenever it appears."""
        self.preferred_device = device
        if self.device_combo.findData(device) >= 0:
            self.cfg.device = device
            select_data(self.device_combo, device)
            self.refresh()

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        """Offer these (label, value) devices; picks CUDA when it appears."""
        had_cuda = self.device_combo.findData("cuda") >= 0
        self._loading = True
        try:
            self.device_combo.clear()
            for text, value in devices:
                self.device_combo.addItem(text, value)
        finally:
            self._loading = False
        if not had_cuda and self.device_combo.findData("cuda") >= 0:
            self.cfg.device = "cuda"
        if self.preferred_device and self.device_combo.findData(self.preferred_device) >= 0:
            self.cfg.device = self.preferred_device
        if self.device_combo.findData(self.cfg.device) < 0:
            self.cfg.device = "cpu"
        select_data(self.device_combo, self.cfg.device)
        self.refresh()

    # ---- browsing ----------------------------------------------------------------------
    def _browse_weights_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Starting weights", "",
            "Weights (*.safetensors *.pth *.pt *.bin *.ckpt);;All files (*)")
        if path:
            self.set_weights(path)

    def _browse_weights_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "MAE pretraining or run folder")
        if folder:
            self.set_weights(folder)

    def set_weights(self, value: str) -> None:
        """Choose the weights source: a path, ``hub`` or ``none``."""
        self._select_weights(str(value))

    def _browse_src_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training data folder")
        if folder:
            self.src_radio.setChecked(True)
            self.src_edit.setText(folder)

    def _browse_src_csv(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Manifest CSV", "", "CSV (*.csv)")
        if path:
            self.src_radio.setChecked(True)
            self.src_edit.setText(path)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Parent folder of the run")
        if folder:
            self.out_edit.setText(str(default_run_folder(folder)))

    # ---- the run's config --------------------------------------------------------------
    def data_source(self) -> str:
        ws = self.workspace()
        if self.ws_radio.isChecked() and ws:
            return str(ws)
        return self.src_edit.text().strip()

    def run_config(self, out: str | None = None, validate: bool = True) -> RunConfig:
        """The config a run starts with: resolved, rule applied, validated.

        Raises:
            ConfigError: a field is wrong (the message names it).
        """
        cfg = RunConfig.from_dict(self.cfg.to_dict())
        cfg.data.source = self.data_source()
        prefs = self.data_prefs()
        if prefs:
            from vitdesk.imaging.windowing import WindowSpec

            spec = WindowSpec.from_dict(prefs["window"])
            cfg.data.window, cfg.data.clahe = spec.label(), bool(spec.clahe)
            if prefs.get("fractions"):
                cfg.data.fractions = [float(f) for f in prefs["fractions"]]
            cfg.seed = int(prefs.get("seed", cfg.seed))
        cfg.out = out or self.out_edit.text().strip() or str(default_run_folder(
            self.workspace() or self.output_root))
        if cfg.continual.continue_from:
            # the parent's model, size and window, as `vitdesk train --continue` without
            # model flags: the form's model fields are not a request here
            try:
                cfg = inherit_parent(cfg, cfg.continual.continue_from, frozenset())
            except ConfigError:
                if validate:
                    raise
        # the plan's rules and notices, the same as `vitdesk train` (vitdesk.engine.plan)
        try:
            plan = apply_rules(cfg)
        except ConfigError:
            if validate:
                raise
            plan = Plan(cfg.resolved(), [])
        self.warning = "\n".join(plan.notices)
        cfg = plan.cfg
        if validate:
            check_run(cfg)
            if not cfg.data.source:
                raise ConfigError("no training data: open a workspace or choose a folder/CSV")
            self._check_model(cfg.model.name)
        return cfg

    def _check_model(self, name: str) -> None:
        if self.known_models is not None and name not in self.known_models:
            close = difflib.get_close_matches(name, sorted(self.known_models), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"model.name='{name}' is not a known ViT, DeiT or CNN model{hint}")

    def refresh(self) -> None:
        """Re-derive the plan text, the window line, warnings and problems."""
        if self._loading:
            return
        self.problem = ""
        try:
            cfg = self.run_config(out="-")
        except ConfigError as exc:
            self.problem = str(exc)
            cfg = self.run_config(out="-", validate=False)
        except Exception as exc:  # noqa: BLE001 - a form must never crash on input
            self.problem = f"{type(exc).__name__}: {exc}"
            cfg = self.cfg
        self.plan_label.setText(plan_text(cfg))
        self.window_label.setText(f"window {cfg.data.window}"
                                  + (" + CLAHE" if cfg.data.clahe else "")
                                  + f" · split {'/'.join(f'{f:g}' for f in cfg.data.fractions)}"
                                  + f" · seed {cfg.seed} (set in the Dataset tab)")
        self.warning_label.setText(gui_words(self.warning))
        self.warning_label.setVisible(bool(self.warning))
        self.problem_label.setText(gui_words(self.problem))  # shown in the GUI's words
        self.problem_label.setVisible(bool(self.problem))
        self.force_staged_box.setVisible(self.cfg.recipe.kind == "staged")
        continuing = bool(self.cfg.continual.continue_from)
        for w in (self.model_combo, self.img_spin, self.weights_combo,
                  self.weights_file_button, self.weights_dir_button):
            w.setEnabled(not continuing)  # the parent's (the plan line says which)
        self.changed.emit()
